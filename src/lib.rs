//! # kanade
//!
//! Orchestrate fleets of endpoints (PCs, servers, kiosks) over one message
//! backbone: a backend fans commands out to agents; agents run scripts
//! safely (deadlines, revocation, staleness, verified script bodies,
//! retries, kill) and fan results, heartbeats and inventory back in.
//!
//! This is the facade: one dependency, with the parts you name as features
//! and nothing else (library crates do not pull the binaries' argument
//! parsing, log formatting, progress bars or HTTP clients).
//!
//! | feature | module | what it adds |
//! |---|---|---|
//! | (always) | [`core`], [`transport`] | wire types, names, pure policies, the transport contract, the memory and file transports, [`transport::open`] |
//! | `agent` | `kanade::agent` | the embeddable agent ([`kanade-agent`](https://docs.rs/kanade-agent)) |
//! | `backend` | `kanade::backend` | the backend library: manifests, fan-out, SQLite, the HTTP router |
//! | `nats` | `kanade::nats` | the NATS JetStream transport, provisioning; `nats://` URLs in [`transport::open`] |
//! | `sim` | `kanade::sim` | deterministic fleet simulation with fault schedules |
//! | `full` | all of the above | |
//!
//! ```toml
//! [dependencies]
//! kanade = { version = "0.1", features = ["agent", "nats"] }
//! ```
//!
//! # Embedding an agent
//!
//! An agent inside your own tokio program; [`transport::open`] takes the
//! same URLs as the binaries (`memory`, `file:<dir>`, `nats://h:p`).
//!
//! ```
//! # #[cfg(feature = "agent")]
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use kanade::agent::{Agent, AgentSettings};
//! use kanade::core::names::SubjectToken;
//!
//! let transport = kanade::transport::open("memory").await.unwrap();
//! let state_dir = tempfile::tempdir().unwrap();
//! let settings = AgentSettings::new(SubjectToken::pc("pc-1").unwrap(), state_dir.path());
//! let agent = Agent::builder(settings, transport).build().unwrap();
//! // Runs until the shutdown future resolves: here at once.
//! agent.run(async {}).await.unwrap();
//! # });
//! ```
//!
//! # Embedding a backend
//!
//! The backend library with its HTTP router, to mount in your own axum app
//! (see `examples/embed_backend.rs`).
//!
//! ```
//! # #[cfg(feature = "backend")]
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use kanade::backend::{http, Backend, BackendSettings};
//!
//! let transport = kanade::transport::open("memory").await.unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let backend = Backend::open(transport, BackendSettings::new(dir.path().join("kanade.db")))
//!     .await
//!     .unwrap();
//! let job = backend
//!     .apply_job("id: hello\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\n", &Default::default())
//!     .await
//!     .unwrap();
//! assert_eq!(job.id, "hello");
//! let _router = http::router(backend); // axum::Router: nest it under /kanade
//! # });
//! ```
//!
//! # Running a simulation
//!
//! The real backend and real agents on one in-memory bus with scripted
//! faults, on paused time: the same seed gives the same trace.
//!
//! ```
//! # #[cfg(feature = "sim")] {
//! use std::time::Duration;
//! use kanade::sim::{simulate, Fault, FaultSchedule, FleetPlan};
//!
//! let faults = FaultSchedule::new(vec![Fault::Partition {
//!     at: Duration::from_secs(12),
//!     pc: 1,
//!     for_: Duration::from_secs(20),
//! }]);
//! let outcome = simulate(FleetPlan::commands(3, 4, 7, faults)).unwrap();
//! let (violations, _tally) = outcome.check();
//! assert!(violations.is_empty(), "{}", outcome.report(&violations));
//! # }
//! ```

pub use kanade_core as core;

#[cfg(feature = "agent")]
pub use kanade_agent as agent;

#[cfg(feature = "backend")]
pub use kanade_backend as backend;

#[cfg(feature = "nats")]
pub use kanade_transport_nats as nats;

#[cfg(feature = "sim")]
pub use kanade_sim as sim;

pub mod transport;
