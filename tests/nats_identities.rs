//! Least privilege on the broker (DESIGN §10), against a real nats-server
//! whose config includes the block `kanade-backend nats-auth` generates:
//! an agent identity cannot publish commands, write `script_status`,
//! another pc's `agent_groups` key or read another pc's commands; with the
//! same identities a real backend and a real agent run jobs end to end
//! (exec, overflow, groups, replay after an outage, kill) without a single
//! permission violation, and the backend refuses results another identity
//! publishes in the agent's name (the rule the broker cannot express).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

mod common;
use common::{finished, wait_for};
use kanade::agent::{Agent, AgentSettings};
use kanade::backend::manifest::Target;
use kanade::backend::nats_auth::{self, Identities};
use kanade::backend::{AgentIdentities, Backend, BackendSettings};
use kanade::core::names::{
    subjects, SubjectToken, BUCKET_AGENT_GROUPS, BUCKET_SCRIPT_STATUS, STREAM_EXEC,
};
use kanade::core::policy::publisher::PublisherSigner;
use kanade::core::transport::{Headers, KvConfig, Transport};
use kanade::nats::provision::provision;
use kanade::nats::test_server::NatsServer;
use kanade::nats::{Auth, NatsOptions, NatsTransport};

const PC: &str = "pc-001";
const OTHER: &str = "pc-002";

struct Broker {
    server: NatsServer,
    dir: tempfile::TempDir,
    ids: Identities,
    log: PathBuf,
}

impl Broker {
    /// Identities for the backend, pc-001 and pc-002, and a server that
    /// includes their authorization block and logs to a file.
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let seeds = dir.path().join("nats");
        let ids = nats_auth::generate(
            &seeds,
            &[
                SubjectToken::pc(PC).unwrap(),
                SubjectToken::pc(OTHER).unwrap(),
            ],
        )
        .unwrap();
        let log = dir.path().join("nats-server.log");
        // `include` resolves relative to the server's config file, which
        // lives in the server's own temp dir: inline the block instead.
        let block = std::fs::read_to_string(&ids.authorization).unwrap();
        let server = NatsServer::start_with_config(&format!(
            "{block}\nlogfile: {:?}\n",
            log.display().to_string()
        ));
        Self {
            server,
            dir,
            ids,
            log,
        }
    }

    fn seed(&self, name: &str) -> String {
        nats_auth::read_seed(&nats_auth::seed_path(&self.dir.path().join("nats"), name)).unwrap()
    }

    async fn connect(&self, name: &str, timeout: Duration) -> NatsTransport {
        let mut options = NatsOptions::new(self.server.url());
        options.auth = Auth::NKey(self.seed(name));
        options.name = Some(format!("test-{name}"));
        options.request_timeout = timeout;
        if name != nats_auth::BACKEND_IDENTITY {
            // What kanade-agent does with --nats-nkey: its own replies only.
            options.inbox_prefix = Some(subjects::agent_inbox_prefix(
                &SubjectToken::pc(name).unwrap(),
            ));
        }
        NatsTransport::connect(options).await.unwrap()
    }

    fn violations(&self) -> Vec<String> {
        common::nats_violations(&self.log)
    }

    /// Waits until the server logged a violation mentioning `needle`.
    async fn wait_violation(&self, needle: &str) {
        for _ in 0..100 {
            if self.violations().iter().any(|l| l.contains(needle)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no permission violation for {needle} in the server log: {:?}",
            self.violations()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_identity_is_held_to_its_own_subjects() {
    let broker = Broker::start();
    assert_eq!(broker.ids.agents.len(), 2);
    // Without credentials the server refuses the connection outright.
    assert!(
        NatsTransport::connect(NatsOptions::new(broker.server.url()))
            .await
            .is_err(),
        "an anonymous client is refused"
    );
    let backend = broker.connect("backend", Duration::from_secs(5)).await;
    provision(&backend).await.unwrap();
    let agent = broker.connect(PC, Duration::from_secs(2)).await;
    let backend_log = backend.messages();

    // (1) Publishing a command is refused: nobody receives it, EXEC stays empty.
    let mut commands = backend_log
        .subscribe(subjects::COMMANDS_FILTER)
        .await
        .unwrap();
    agent
        .client()
        .publish(subjects::COMMANDS_ALL, Bytes::from_static(b"{}"))
        .await
        .unwrap();
    agent.client().flush().await.unwrap();
    let through_transport = agent
        .messages()
        .publish(
            &subjects::commands_pc(&SubjectToken::pc(OTHER).unwrap()),
            Headers::new(),
            Bytes::from_static(b"{}"),
        )
        .await;
    assert!(
        through_transport.is_err(),
        "the transport reports the refused publish (no ack): {through_transport:?}"
    );
    broker.wait_violation("\"commands.all\"").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), commands.next())
            .await
            .is_err(),
        "no command reached the backend"
    );
    assert_eq!(
        backend_log.stream_info(STREAM_EXEC).await.unwrap().messages,
        0
    );

    // (2) script_status is read-only for an agent; so is another pc's groups key.
    let status = |t: &NatsTransport| {
        let t = t.clone();
        async move {
            let mut config = KvConfig::new(BUCKET_SCRIPT_STATUS);
            config.history = 1;
            t.key_value(config).await.unwrap()
        }
    };
    status(&backend)
        .await
        .put("job", Bytes::from_static(b"REVOKED"))
        .await
        .unwrap();
    let agent_status = status(&agent).await;
    assert_eq!(
        agent_status.get("job").await.unwrap().unwrap().value,
        "REVOKED",
        "an agent reads script_status"
    );
    let put = agent_status.put("job", Bytes::from_static(b"ACTIVE")).await;
    assert!(put.is_err(), "an agent cannot write script_status: {put:?}");
    broker.wait_violation("$KV.script_status.job").await;
    assert_eq!(
        status(&backend)
            .await
            .get("job")
            .await
            .unwrap()
            .unwrap()
            .value,
        "REVOKED"
    );
    let groups = agent
        .key_value(KvConfig::new(BUCKET_AGENT_GROUPS))
        .await
        .unwrap();
    groups
        .create(PC, Bytes::from_static(b"{\"groups\":[\"canary\"]}"))
        .await
        .expect("an agent creates its own agent_groups key");
    assert!(
        groups
            .create(OTHER, Bytes::from_static(b"{\"groups\":[]}"))
            .await
            .is_err(),
        "an agent cannot write another pc's agent_groups key"
    );
    broker
        .wait_violation(&format!("$KV.{BUCKET_AGENT_GROUPS}.{OTHER}"))
        .await;

    // (3) Another pc's command subject cannot be read.
    let agent_log = agent.messages();
    let mut theirs = agent_log
        .subscribe(&subjects::commands_pc(&SubjectToken::pc(OTHER).unwrap()))
        .await
        .unwrap();
    let mut own = agent_log
        .subscribe(&subjects::commands_pc(&SubjectToken::pc(PC).unwrap()))
        .await
        .unwrap();
    broker
        .wait_violation(&format!("\"commands.pc.{OTHER}\""))
        .await;
    // Published again until its own copy arrives (a loaded machine may
    // drop the connection for a moment); the other pc's never does.
    let mut received = None;
    for _ in 0..20 {
        for pc in [OTHER, PC] {
            backend
                .client()
                .publish(
                    subjects::commands_pc(&SubjectToken::pc(pc).unwrap()),
                    Bytes::from(pc),
                )
                .await
                .unwrap();
        }
        backend.client().flush().await.unwrap();
        if let Ok(message) = tokio::time::timeout(Duration::from_millis(500), own.next()).await {
            received = message;
            break;
        }
    }
    let received = received.expect("its own subject delivers within 10 s");
    assert_eq!(received.payload, PC, "its own subject works");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), theirs.next())
            .await
            .map_or(true, |m| m.is_none()),
        "another pc's commands never arrive"
    );

    // Nor can it listen to the replies other clients receive: only its
    // own inbox prefix is allowed (and JetStream calls work through it, as
    // every call above shows).
    let _snoop = agent.client().subscribe("_INBOX.>").await.unwrap();
    broker.wait_violation("\"_INBOX.>\"").await;

    // Nor can it impersonate another pc's heartbeat.
    let mut heartbeats = backend_log
        .subscribe(subjects::HEARTBEAT_FILTER)
        .await
        .unwrap();
    agent
        .client()
        .publish(
            subjects::heartbeat(&SubjectToken::pc(OTHER).unwrap()),
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    agent.client().flush().await.unwrap();
    broker
        .wait_violation(&format!("\"heartbeat.{OTHER}\""))
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), heartbeats.next())
            .await
            .is_err(),
        "no forged heartbeat arrives"
    );
}

/// A running agent for `pc` with the agent's own identity, stopped by the
/// returned sender.
async fn start_agent(broker: &Broker, state: &Path) -> common::RunningAgent {
    let transport: Arc<dyn Transport> = Arc::new(broker.connect(PC, Duration::from_secs(5)).await);
    let mut settings = AgentSettings::new(SubjectToken::pc(PC).unwrap(), state);
    settings.groups = vec![SubjectToken::group("canary").unwrap()];
    // What kanade-agent does with --nats-nkey: results carry proof.
    settings.publisher_signer = Some(PublisherSigner::from_seed(&broker.seed(PC)).unwrap());
    common::run_agent(Agent::builder(settings, transport).build().unwrap())
}

fn pcs(pc: &str) -> Target {
    Target {
        pcs: vec![pc.into()],
        ..Target::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_and_an_agent_run_jobs_with_their_own_identities() {
    let broker = Broker::start();
    let backend_transport = broker.connect("backend", Duration::from_secs(5)).await;
    provision(&backend_transport).await.unwrap();
    let mut settings = BackendSettings::new(broker.dir.path().join("backend.db"));
    settings.reap_grace = Duration::ZERO;
    settings.reap_interval = Duration::from_millis(200);
    // What kanade-backend does with --agent-identities.
    settings.agent_identities = Some(Arc::new(
        AgentIdentities::from_file(&broker.ids.agent_identities).unwrap(),
    ));
    let transport: Arc<dyn Transport> = Arc::new(backend_transport.clone());
    let backend = Backend::open(transport, settings).await.unwrap();
    let running = backend.clone();
    tokio::spawn(async move { running.run(std::future::pending()).await.unwrap() });

    let state = broker.dir.path().join("agent-state");
    let (stop, agent_task) = start_agent(&broker, &state).await;
    common::wait_for_agent(&backend, PC).await;

    // Exec by pc and by group (the agent announced its group itself).
    backend
        .apply_job(
            "id: hello\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let exec = backend.exec("hello", &pcs(PC)).await.unwrap();
    assert_eq!(exec.targeted, 1);
    let done = finished(&backend, &exec.exec_id).await;
    assert_eq!((done.succeeded, done.started), (1, 1));
    let rows = backend.db().results(&exec.exec_id).unwrap();
    assert_eq!(
        (rows[0].pc_id.as_str(), rows[0].stdout.as_str()),
        (PC, "hi\n")
    );
    let by_group = backend
        .exec(
            "hello",
            &Target {
                groups: vec!["canary".into()],
                ..Target::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        by_group.targeted, 1,
        "agent_groups holds the announced group"
    );
    assert_eq!(finished(&backend, &by_group.exec_id).await.succeeded, 1);

    // Overflow: 300,000 bytes of stdout through result_output.
    backend
        .apply_job(
            "id: big\nversion: 1\nexecute:\n  shell: sh\n  script: head -c 300000 /dev/zero | tr '\\0' x\n  timeout: 30s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let big = backend.exec("big", &pcs(PC)).await.unwrap();
    finished(&backend, &big.exec_id).await;
    let rows = backend.db().results(&big.exec_id).unwrap();
    assert_eq!(
        rows[0].stdout.len(),
        300_000,
        "overflow stored and dereferenced"
    );

    // Replay: a command published while the agent is down runs when it is back.
    stop.send(()).unwrap();
    agent_task.await.unwrap();
    let replayed = backend.exec("hello", &pcs(PC)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(backend.db().results(&replayed.exec_id).unwrap().is_empty());

    // Meanwhile pc-002 answers in pc-001's name. NATS lets it publish to
    // results.*; the backend refuses (and audits) the result, signed with
    // pc-002's identity or not signed at all.
    let other = broker.connect(OTHER, Duration::from_secs(5)).await;
    let other_signer = PublisherSigner::from_seed(&broker.seed(OTHER)).unwrap();
    for (n, signed) in [(1, true), (2, false)] {
        let forged = serde_json::to_vec(&serde_json::json!({
            "result_id": format!("forged-{n}"),
            "request_id": format!("forged-request-{n}"),
            "exec_id": replayed.exec_id,
            "pc_id": PC,
            "exit_code": 0,
            "stdout": "forged\n",
            "stderr": "",
            "started_at": chrono::Utc::now(),
            "finished_at": chrono::Utc::now(),
        }))
        .unwrap();
        let subject = format!("results.forged-request-{n}");
        let headers = if signed {
            other_signer.sign(&subject, &forged)
        } else {
            Headers::new()
        };
        other
            .messages()
            .publish(&subject, headers, Bytes::from(forged))
            .await
            .expect("the broker accepts results.* from any agent");
    }
    wait_for("both forged results refused and audited", || {
        let db = backend.db().clone();
        async move {
            db.audit_all()
                .unwrap()
                .iter()
                .filter(|e| e.action == "result.refused")
                .count()
                == 2
        }
    })
    .await;
    let refused: Vec<_> = backend
        .db()
        .audit_all()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "result.refused")
        .collect();
    for entry in &refused {
        assert_eq!(entry.target.as_deref(), Some(replayed.exec_id.as_str()));
        assert_eq!(entry.outcome.as_deref(), Some("denied"));
    }
    assert!(backend.db().results(&replayed.exec_id).unwrap().is_empty());
    let (stop, agent_task) = start_agent(&broker, &state).await;
    let done = finished(&backend, &replayed.exec_id).await;
    assert_eq!(done.succeeded, 1, "replayed from EXEC through agent_{PC}");
    let rows = backend.db().results(&replayed.exec_id).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].stdout, "hi\n",
        "the genuine result, not a forged one"
    );

    // Kill.
    backend
        .apply_job(
            "id: long\nversion: 1\nexecute:\n  shell: sh\n  script: sleep 20; echo done\n  timeout: 60s\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let long = backend.exec("long", &pcs(PC)).await.unwrap();
    wait_for("the long job starts", || {
        let db = backend.db().clone();
        let id = long.exec_id.clone();
        async move { db.execution(&id).unwrap().unwrap().started == 1 }
    })
    .await;
    backend.kill(&long.exec_id).await.unwrap();
    wait_for("the killed run's result", || {
        let db = backend.db().clone();
        let id = long.exec_id.clone();
        async move { !db.results(&id).unwrap().is_empty() }
    })
    .await;
    assert_eq!(
        backend
            .db()
            .execution(&long.exec_id)
            .unwrap()
            .unwrap()
            .status,
        "cancelled"
    );
    let rows = backend.db().results(&long.exec_id).unwrap();
    assert_eq!(rows[0].exit_code, -1, "killed: {:?}", rows[0]);

    stop.send(()).unwrap();
    agent_task.await.unwrap();
    assert_eq!(
        broker.violations(),
        Vec::<String>::new(),
        "the agent needed nothing its identity does not allow"
    );
}
