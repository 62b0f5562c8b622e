//! Signed commands end to end over the memory transport: the backend signs
//! what it publishes; an enforcing agent runs a signed command and refuses
//! (exit 123, `refused: <reason>`, request id not consumed) an unsigned
//! one, a tampered body, a signature older than the key's max age, one
//! from a key removed from the ring file, and ignores an unsigned kill; an
//! observing agent runs everything and reports the outcome changes.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kanade::agent::trust::SignatureMode;
use kanade::agent::{Agent, AgentSettings};
use kanade::backend::manifest::Target;
use kanade::backend::{Backend, BackendSettings};
use kanade::core::names::{StreamSpec, SubjectToken};
use kanade::core::policy::signature::{CommandSigner, KeyRing};
use kanade::core::transport::memory::MemoryTransport;
use kanade::core::transport::{Headers, StreamConfig, Subscription, Transport};
use kanade::core::wire::{Command, ExecResult, ObsEvent};

fn command(request: &str, script: &str) -> Command {
    serde_json::from_value(serde_json::json!({
        "id": "job", "version": "1", "request_id": request, "exec_id": format!("exec-{request}"),
        "shell": "sh", "script": script, "timeout_secs": 60,
    }))
    .unwrap()
}

struct Host {
    transport: Arc<dyn Transport>,
    results: Subscription,
    _dir: tempfile::TempDir,
    ring_file: std::path::PathBuf,
}

async fn host(mode: SignatureMode, ring: &[&CommandSigner], max_age: Option<u64>) -> Host {
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    transport
        .messages()
        .create_stream(StreamConfig::from_spec(&StreamSpec::RESULTS))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ring_file = dir.path().join("command-keys.json");
    let entries: Vec<_> = ring.iter().map(|s| s.ring_entry(None, max_age)).collect();
    std::fs::write(&ring_file, serde_json::to_string(&entries).unwrap()).unwrap();
    let mut settings =
        AgentSettings::new(SubjectToken::pc("pc-1").unwrap(), dir.path().join("state"));
    settings.inventory = false;
    settings.trust.mode = mode;
    settings.trust.keys_file = Some(ring_file.clone());
    let agent = Agent::builder(settings, transport.clone()).build().unwrap();
    tokio::spawn(async move { agent.run(std::future::pending()).await.unwrap() });
    let results = transport.messages().subscribe("results.>").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    Host {
        transport,
        results,
        _dir: dir,
        ring_file,
    }
}

impl Host {
    async fn send(&self, command: &Command, headers: Headers) {
        let body = serde_json::to_vec(command).unwrap();
        self.send_raw(Bytes::from(body), headers).await;
    }

    async fn send_raw(&self, body: Bytes, headers: Headers) {
        self.transport
            .messages()
            .publish("commands.pc.pc-1", headers, body)
            .await
            .unwrap();
    }

    async fn result(&mut self) -> ExecResult {
        let message = tokio::time::timeout(Duration::from_secs(20), self.results.next())
            .await
            .expect("a result")
            .unwrap();
        serde_json::from_slice(&message.payload).unwrap()
    }
}

fn signed(signer: &CommandSigner, command: &Command, at_ms: i64) -> Headers {
    signer
        .sign(&serde_json::to_vec(command).unwrap(), at_ms)
        .into_iter()
        .collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforcing_agent_runs_only_what_verifies() {
    let key = CommandSigner::from_seed("k1", [7; 32]);
    let mut host = host(SignatureMode::Enforce, &[&key], Some(60)).await;

    let good = command("good", "echo signed");
    host.send(&good, signed(&key, &good, now_ms())).await;
    let result = host.result().await;
    assert_eq!(
        (result.exit_code, result.stdout.as_str()),
        (0, "signed\n"),
        "{result:?}"
    );

    for (what, request, headers, reason) in [
        (
            "unsigned",
            "r-unsigned",
            Headers::new(),
            "refused: the command is not signed",
        ),
        (
            "stale",
            "r-stale",
            signed(
                &key,
                &command("r-stale", "echo should-not-run"),
                now_ms() - 120_000,
            ),
            "refused: signature is",
        ),
        (
            "from the future",
            "r-ahead",
            signed(
                &key,
                &command("r-ahead", "echo should-not-run"),
                now_ms() + 600_000,
            ),
            "refused: signature is dated",
        ),
    ] {
        host.send(&command(request, "echo should-not-run"), headers)
            .await;
        let result = host.result().await;
        assert_eq!(
            (result.exit_code, result.skipped),
            (123, false),
            "{what}: {result:?}"
        );
        assert!(
            result.stderr.starts_with(reason),
            "{what}: {}",
            result.stderr
        );
        assert_eq!(result.request_id, request);
    }

    // A tampered body under a valid signature.
    let original = command("r-tampered", "echo fine");
    let headers = signed(&key, &original, now_ms());
    let mut evil = original.clone();
    evil.script = "echo owned".into();
    host.send(&evil, headers).await;
    let result = host.result().await;
    assert_eq!(result.exit_code, 123, "{result:?}");
    assert!(
        result.stderr.starts_with("refused: invalid signature"),
        "{}",
        result.stderr
    );

    // The refused request id, signed properly afterwards, still runs.
    let retry = command("r-unsigned", "echo second-try");
    host.send(&retry, signed(&key, &retry, now_ms())).await;
    let result = host.result().await;
    assert_eq!(
        (result.exit_code, result.stdout.as_str()),
        (0, "second-try\n"),
        "{result:?}"
    );

    // The key is removed from the ring file: its signatures stop working.
    let other = CommandSigner::from_seed("k2", [8; 32]);
    std::fs::write(
        &host.ring_file,
        serde_json::to_string(&[other.ring_entry(None, None)]).unwrap(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let late = command("r-removed", "echo x");
    host.send(&late, signed(&key, &late, now_ms())).await;
    let result = host.result().await;
    assert_eq!(result.exit_code, 123, "{result:?}");
    assert!(result.stderr.contains("unknown key"), "{}", result.stderr);
    let fresh = command("r-new-key", "echo new-key");
    host.send(&fresh, signed(&other, &fresh, now_ms())).await;
    assert_eq!(host.result().await.exit_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_must_be_signed_on_an_enforcing_agent_and_the_backend_signs() {
    let key = Arc::new(CommandSigner::from_seed("k1", [9; 32]));
    let mut host = host(SignatureMode::Enforce, &[&key], None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = BackendSettings::new(dir.path().join("backend.db"));
    settings.signer = Some(key.clone());
    let backend = Backend::open(host.transport.clone(), settings)
        .await
        .unwrap();
    assert!(backend.signing());
    let running = backend.clone();
    tokio::spawn(async move { running.run(std::future::pending()).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    backend
        .apply_job(
            "id: long\nversion: 1\nexecute:\n  shell: sh\n  script: sleep 20; echo done\n  timeout: 60s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let mut started = host
        .transport
        .messages()
        .subscribe("events.started.>")
        .await
        .unwrap();
    let exec = backend
        .exec(
            "long",
            &Target {
                pcs: vec!["pc-1".into()],
                ..Target::default()
            },
        )
        .await
        .unwrap();
    // The run has started (its kill switch is armed).
    tokio::time::timeout(Duration::from_secs(20), started.next())
        .await
        .expect("a start event")
        .unwrap();
    // An unsigned kill from anyone on the broker is ignored...
    host.transport
        .messages()
        .publish(
            &format!("kill.{}", exec.exec_id),
            Headers::new(),
            Bytes::from(exec.exec_id.clone()),
        )
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), host.results.next())
            .await
            .is_err(),
        "the unsigned kill was ignored: the run goes on"
    );
    // ...the backend's signed kill stops the run.
    backend.kill(&exec.exec_id).await.unwrap();
    let result = host.result().await;
    assert_eq!(
        result.exit_code, -1,
        "killed by the signed kill: {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observing_agent_runs_everything_and_reports_outcome_changes() {
    let key = CommandSigner::from_seed("k1", [5; 32]);
    let mut host = host(SignatureMode::Observe, &[&key], None).await;
    let mut obs = host.transport.messages().subscribe("obs.>").await.unwrap();
    host.send(&command("o1", "echo a"), Headers::new()).await;
    assert_eq!(host.result().await.exit_code, 0, "unsigned still runs");
    host.send(&command("o2", "echo b"), Headers::new()).await;
    assert_eq!(host.result().await.exit_code, 0);
    let good = command("o3", "echo c");
    host.send(&good, signed(&key, &good, now_ms())).await;
    assert_eq!(host.result().await.exit_code, 0);
    let mut kinds = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(1500), obs.next()).await
    {
        let event: ObsEvent = serde_json::from_slice(&message.payload).unwrap();
        kinds.push(event.kind);
    }
    assert_eq!(
        kinds,
        ["command_signature_absent", "command_signature_ok"],
        "one event per change of outcome"
    );
    let ring = KeyRing::from_json(&std::fs::read_to_string(&host.ring_file).unwrap()).unwrap();
    assert_eq!(ring.fingerprints().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_command_is_checked_again_when_the_agent_restarts_enforcing() {
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    transport
        .messages()
        .create_stream(StreamConfig::from_spec(&StreamSpec::RESULTS))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = CommandSigner::from_seed("k1", [3; 32]);
    let settings = |mode: SignatureMode| {
        let mut settings =
            AgentSettings::new(SubjectToken::pc("pc-1").unwrap(), dir.path().join("state"));
        settings.inventory = false;
        settings.replay = false;
        settings.jitter_seed = Some(7);
        settings.trust.mode = mode;
        settings.trust.ring =
            Some(KeyRing::from_entries(vec![key.ring_entry(None, None)]).unwrap());
        settings
    };
    // Not enforcing: an unsigned command with a day of jitter is admitted
    // and waits (pending) in the ledger.
    let agent = Agent::builder(settings(SignatureMode::Off), transport.clone())
        .build()
        .unwrap();
    let running = agent.clone();
    let task = tokio::spawn(async move { running.run(std::future::pending()).await });
    let mut results = transport.messages().subscribe("results.>").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut waiting = command("waiting", "echo unsigned-ran");
    waiting.jitter_secs = Some(86_400);
    transport
        .messages()
        .publish(
            "commands.pc.pc-1",
            Headers::new(),
            Bytes::from(serde_json::to_vec(&waiting).unwrap()),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    agent.halt();
    task.abort();
    let _ = task.await;

    // Restarted enforcing: the pending unsigned command is refused, not run.
    let agent = Agent::builder(settings(SignatureMode::Enforce), transport.clone())
        .build()
        .unwrap();
    tokio::spawn(async move { agent.run(std::future::pending()).await });
    let message = tokio::time::timeout(Duration::from_secs(20), results.next())
        .await
        .expect("a result after the restart")
        .unwrap();
    let result: ExecResult = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        (result.request_id.as_str(), result.exit_code),
        ("waiting", 123),
        "{result:?}"
    );
    assert!(
        result
            .stderr
            .starts_with("refused: the command is not signed"),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_use_of_a_break_glass_key_is_audited() {
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let dir = tempfile::tempdir().unwrap();
    let key = CommandSigner::from_seed("emergency", [4; 32]).with_break_glass(true);
    let file = CommandSigner::from_file_text(&key.to_file_text()).unwrap();
    assert!(file.break_glass(), "the key file keeps the mark");
    let mut settings = BackendSettings::new(dir.path().join("backend.db"));
    settings.signer = Some(Arc::new(key));
    let backend = Backend::open(transport, settings).await.unwrap();
    backend
        .apply_job(
            "id: fix\nversion: 1\nexecute:\n  shell: sh\n  script: echo fix\n  timeout: 30s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    // A pc named explicitly is a target even before it says hello, so the
    // execution is still open when the kill comes.
    let one = Target {
        pcs: vec!["pc-1".into()],
        ..Target::default()
    };
    let exec = backend.exec("fix", &one).await.unwrap();
    assert_eq!(
        backend.kill(&exec.exec_id).await.unwrap(),
        kanade::backend::KillOutcome::Killed
    );
    let uses: Vec<_> = backend
        .db()
        .audit_events(None, None, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "signature.break_glass")
        .map(|e| e.target.unwrap_or_default())
        .collect();
    assert_eq!(
        uses,
        [
            format!("execution {}", exec.exec_id),
            format!("kill of execution {}", exec.exec_id)
        ]
    );
}
