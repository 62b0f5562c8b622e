//! The file transport: conformance, crash safety across processes,
//! cross-process CAS and delivery, torn-write recovery, bad directories.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;

use kanade_core::transport::conformance;
use kanade_core::transport::file::FileTransport;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes() {
    let dirs = std::sync::Mutex::new(Vec::new());
    let report = conformance::run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let transport = FileTransport::open(dir.path()).unwrap();
        dirs.lock().unwrap().push(dir);
        async move { Arc::new(transport) }
    })
    .await;
    println!("{report}");
    report.assert_passed();
    assert_eq!(report.skipped(), 0, "{report}");
}

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use kanade_core::transport::{
    ConsumerConfig, DeliverPolicy, Headers, KvConfig, StreamConfig, Transport, TransportError,
};

const CHILD_ENV: &str = "KANADE_FILE_TEST_CHILD";

/// Starts this test binary again as a child running `role` on `dir`.
fn spawn_child(role: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{role}:{}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Entry point of the child processes the tests below start; it does nothing
/// unless started by them.
#[test]
#[ignore = "child-process entry point, started by the cross-process tests in this file"]
fn child_process_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (role, dir) = spec.split_once(':').unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let transport = FileTransport::open(dir).unwrap();
        let log = transport.messages();
        match role {
            "publish-1000" => {
                for i in 0..1000 {
                    let ack = log
                        .publish(
                            &format!("crash.m{i}"),
                            Headers::new(),
                            Bytes::from(format!("message-{i}")),
                        )
                        .await
                        .unwrap()
                        .unwrap();
                    println!("ACK {} {i}", ack.sequence);
                }
            }
            "cas-500" => {
                let kv = transport
                    .key_value(KvConfig::new("counters"))
                    .await
                    .unwrap();
                let mut done = 0;
                while done < 500 {
                    let current = kv.get("counter").await.unwrap();
                    let (value, revision) = match &current {
                        Some(e) => (
                            std::str::from_utf8(&e.value)
                                .unwrap()
                                .parse::<u64>()
                                .unwrap(),
                            e.revision,
                        ),
                        None => (0, 0),
                    };
                    let next = Bytes::from((value + 1).to_string());
                    let result = match current {
                        Some(_) => kv.update("counter", next, revision).await,
                        None => kv.create("counter", next).await,
                    };
                    match result {
                        Ok(_) => done += 1,
                        Err(
                            TransportError::RevisionMismatch { .. }
                            | TransportError::AlreadyExists { .. },
                        ) => {}
                        Err(e) => panic!("increment failed: {e}"),
                    }
                }
                println!("DONE");
            }
            "publish-slowly" => {
                for i in 0..20 {
                    log.publish(
                        &format!("xp.m{i}"),
                        Headers::new(),
                        Bytes::from(format!("{i}")),
                    )
                    .await
                    .unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                println!("DONE");
            }
            other => panic!("unknown child role {other}"),
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_publishes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    {
        let transport = FileTransport::open(dir.path()).unwrap();
        transport
            .messages()
            .create_stream(StreamConfig::new("CRASH", &["crash.>"]))
            .await
            .unwrap();
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let kill_after = 20 + (seed % 900) as usize;
    println!("killing the publisher after {kill_after} acks (seed {seed})");
    let mut child = spawn_child("publish-1000", dir.path());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        // libtest may print "test child_process_entry ... " on the same line.
        if let Some(rest) = line.find("ACK ").map(|at| &line[at + 4..]) {
            let (seq, i) = rest.split_once(' ').unwrap();
            acked.push((seq.parse::<u64>().unwrap(), i.parse::<usize>().unwrap()));
            if acked.len() == kill_after {
                child.kill().unwrap(); // SIGKILL
            }
        }
    }
    child.wait().unwrap();
    assert!(
        acked.len() >= kill_after,
        "child printed {} acks",
        acked.len()
    );

    let reopened = FileTransport::open(dir.path()).unwrap();
    let log = reopened.messages();
    let info = log.stream_info("CRASH").await.unwrap();
    assert!(
        info.messages >= acked.len() as u64,
        "{info:?} but {} acked",
        acked.len()
    );
    let consumer = log
        .create_consumer("CRASH", ConsumerConfig::new("verify", DeliverPolicy::All))
        .await
        .unwrap();
    let mut stored = std::collections::BTreeMap::new();
    for _ in 0..info.messages {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap()
            .unwrap();
        stored.insert(d.stream_sequence, d.message.payload.clone());
        d.ack().await.unwrap();
    }
    for (seq, i) in &acked {
        assert_eq!(
            stored.get(seq).map(|b| b.as_ref()),
            Some(format!("message-{i}").as_bytes()),
            "acked message {i} (seq {seq}) lost or changed"
        );
    }
    println!(
        "{} acked, {} stored, warnings {:?}",
        acked.len(),
        info.messages,
        reopened.recovery_warnings()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_is_correct_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    FileTransport::open(dir.path()).unwrap();
    let children = [
        spawn_child("cas-500", dir.path()),
        spawn_child("cas-500", dir.path()),
    ];
    for mut child in children {
        let output = child.stdout.take().unwrap();
        // Read to the end: closing the pipe early would kill the child.
        let lines: Vec<String> = BufReader::new(output)
            .lines()
            .map_while(Result::ok)
            .collect();
        let status = child.wait().unwrap();
        assert!(
            status.success() && lines.iter().any(|l| l.contains("DONE")),
            "a CAS child failed ({status}): {lines:?}"
        );
    }
    let transport = FileTransport::open(dir.path()).unwrap();
    let kv = transport
        .key_value(KvConfig::new("counters"))
        .await
        .unwrap();
    let value = kv.get("counter").await.unwrap().unwrap().value;
    assert_eq!(value, "1000", "lost increments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_subscriber_receive_another_process_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let transport = FileTransport::open(dir.path()).unwrap();
    let log = transport.messages();
    log.create_stream(StreamConfig::new("XP", &["xp.>"]))
        .await
        .unwrap();
    let consumer = log
        .create_consumer("XP", ConsumerConfig::new("parent", DeliverPolicy::New))
        .await
        .unwrap();
    let mut subscription = log.subscribe("xp.*").await.unwrap();
    let mut child = spawn_child("publish-slowly", dir.path());
    for i in 0..20 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.message.subject, format!("xp.m{i}"));
        d.ack().await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.subject, format!("xp.m{i}"));
    }
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    {
        let transport = FileTransport::open(dir.path()).unwrap();
        let log = transport.messages();
        log.create_stream(StreamConfig::new("TORN", &["torn.>"]))
            .await
            .unwrap();
        for i in 0..10 {
            log.publish("torn.a", Headers::new(), Bytes::from(format!("m{i}")))
                .await
                .unwrap();
        }
        let kv = transport.key_value(KvConfig::new("tornkv")).await.unwrap();
        kv.put("k", Bytes::from("v1")).await.unwrap();
    }
    // Simulate crashes mid-append: cut the last record of each log short.
    for log in ["streams/TORN/data-0.log", "kv/tornkv/data-0.log"] {
        let path = dir.path().join(log);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
    }
    let transport = FileTransport::open(dir.path()).unwrap();
    let log = transport.messages();
    let info = log.stream_info("TORN").await.unwrap();
    assert_eq!(info.messages, 9, "the torn 10th message is not served");
    let kv = transport.key_value(KvConfig::new("tornkv")).await.unwrap();
    assert_eq!(
        kv.get("k").await.unwrap(),
        None,
        "the torn put is not served"
    );
    let warnings = transport.recovery_warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings.iter().all(|w| w.contains("torn record")),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("data-0.log"), "{warnings:?}");
    // Writing continues cleanly after the repair.
    let ack = log
        .publish("torn.a", Headers::new(), Bytes::from("m10"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.sequence, 10);
    kv.put("k", Bytes::from("v2")).await.unwrap();
    let reopened = FileTransport::open(dir.path()).unwrap();
    assert_eq!(
        reopened
            .messages()
            .stream_info("TORN")
            .await
            .unwrap()
            .messages,
        10
    );
    assert!(reopened.recovery_warnings().is_empty());
}

#[test]
fn foreign_or_newer_directories_are_refused_untouched() {
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    let err = FileTransport::open(foreign.path()).unwrap_err().to_string();
    assert!(err.contains("is not a kanade store"), "{err}");
    assert!(err.contains(&foreign.path().display().to_string()), "{err}");
    let entries: Vec<_> = std::fs::read_dir(foreign.path()).unwrap().collect();
    assert_eq!(
        entries.len(),
        1,
        "nothing may be written into a foreign directory"
    );

    let newer = tempfile::tempdir().unwrap();
    let header = r#"{"format":"kanade-file-transport","version":99}"#;
    std::fs::write(newer.path().join("kanade-store.json"), header).unwrap();
    let err = FileTransport::open(newer.path()).unwrap_err().to_string();
    assert!(err.contains("newer kanade (format version 99)"), "{err}");
    assert!(err.contains(&newer.path().display().to_string()), "{err}");
    assert_eq!(
        std::fs::read_to_string(newer.path().join("kanade-store.json")).unwrap(),
        header
    );
    assert_eq!(std::fs::read_dir(newer.path()).unwrap().count(), 1);

    let file = foreign.path().join("notes.txt");
    let err = FileTransport::open(&file).unwrap_err().to_string();
    assert!(err.contains("is not a directory"), "{err}");

    let fresh = tempfile::tempdir().unwrap();
    let root = fresh.path().join("new-store");
    FileTransport::open(&root).unwrap();
    assert!(root.join("kanade-store.json").exists());
    FileTransport::open(&root).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_live_message() {
    let dir = tempfile::tempdir().unwrap();
    let transport = FileTransport::open(dir.path()).unwrap();
    let log = transport.messages();
    let mut config = StreamConfig::new("COMPACT", &["compact.>"]);
    config.max_msgs_per_subject = Some(1);
    config.duplicate_window = Some(Duration::from_secs(60));
    log.create_stream(config).await.unwrap();
    let payload = Bytes::from(vec![b'x'; 4096]);
    // 600 publishes over 10 subjects: ~2.4 MiB written, 10 messages live.
    for i in 0..600 {
        let headers = Headers::from([("Nats-Msg-Id".to_owned(), format!("id-{i}"))]);
        log.publish(&format!("compact.s{}", i % 10), headers, payload.clone())
            .await
            .unwrap();
    }
    let segments: Vec<_> = std::fs::read_dir(dir.path().join("streams/COMPACT"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data-"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert_ne!(segments[0], "data-0.log", "the log was compacted");
    let size = std::fs::metadata(dir.path().join("streams/COMPACT").join(&segments[0]))
        .unwrap()
        .len();
    assert!(size < 2 * 1024 * 1024, "compacted log is {size} bytes");
    let reopened = FileTransport::open(dir.path()).unwrap();
    let info = reopened.messages().stream_info("COMPACT").await.unwrap();
    assert_eq!((info.messages, info.last_sequence), (10, 600));
    // A dedup id whose message was compacted away is still a duplicate.
    let headers = Headers::from([("Nats-Msg-Id".to_owned(), "id-5".to_owned())]);
    let ack = reopened
        .messages()
        .publish("compact.s5", headers, payload)
        .await
        .unwrap()
        .unwrap();
    assert!(ack.duplicate, "{ack:?}");
    let consumer = reopened
        .messages()
        .create_consumer("COMPACT", ConsumerConfig::new("c", DeliverPolicy::All))
        .await
        .unwrap();
    for expected in 590..600 {
        let d = consumer.next().await.unwrap();
        assert_eq!(d.stream_sequence, expected + 1);
        assert_eq!(d.message.subject, format!("compact.s{}", expected % 10));
    }
}

/// Found starting a backend and two agents on one new store at once: an
/// agent saw the header's temporary file of another process and called the
/// directory foreign. It now waits for the header.
#[test]
fn processes_opening_a_new_store_at_once_agree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bus");
    std::fs::create_dir(&root).unwrap();
    // Another process is halfway through writing the header.
    let temporary = root.join(".tmp-99999-0-kanade-store.json");
    std::fs::write(&temporary, b"{").unwrap();
    let writer = {
        let root = root.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            std::fs::write(
                root.join("kanade-store.json"),
                br#"{"format": "kanade-file-transport", "version": 1}"#,
            )
            .unwrap();
            std::fs::remove_file(root.join(".tmp-99999-0-kanade-store.json")).unwrap();
        })
    };
    let opened = kanade_core::transport::file::FileTransport::open(&root);
    writer.join().unwrap();
    assert!(opened.is_ok(), "{:?}", opened.err());
    // A foreign file is still refused.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    assert!(kanade_core::transport::file::FileTransport::open(&foreign).is_err());
}
