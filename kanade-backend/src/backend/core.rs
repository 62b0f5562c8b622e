//! The [`Backend`] struct, its settings, clock and id source, and the
//! helpers every other `backend` module uses (database calls, buckets).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kanade_core::names::ALL_STREAMS;
use kanade_core::transport::{KeyValue, KvConfig, MessageLog, StreamConfig, Transport};

use super::error::BackendError;
use crate::db::{Db, DbError};

/// Backend settings. Their `Debug` says whether an alert webhook is set,
/// not where (its URL may hold a secret).
#[derive(Clone)]
pub struct BackendSettings {
    /// SQLite file.
    pub db_path: PathBuf,
    /// An agent is online if it sent a heartbeat this recently.
    pub online_window: Duration,
    /// Extra time past a command's timeout before a silent run is reaped.
    pub reap_grace: Duration,
    /// How often the reaper looks.
    pub reap_interval: Duration,
    /// Run SQLite calls on the calling task instead of tokio's blocking
    /// pool. Only for single-threaded simulations (it makes them
    /// deterministic and avoids a thread hand-off per call); a server keeps
    /// the default, `false`.
    pub inline_database: bool,
    /// How far each commit is pushed to disk: power-loss safe by default;
    /// simulations use [`DbDurability::Simulated`].
    ///
    /// [`DbDurability::Simulated`]: crate::db::DbDurability::Simulated
    pub database_durability: crate::db::DbDurability,
    /// Store heartbeats on a database thread of the backend's own while
    /// the projector goes on ([`Db::with_write_behind`]): every other
    /// database call first waits for the heartbeats queued before it, so
    /// it reads what it would have read without. Heartbeats are not
    /// acknowledged, so nothing is acknowledged early. Made for a
    /// single-threaded simulation ([`inline_database`](Self::inline_database)):
    /// its heartbeat storage moves to the machine's second core and the
    /// database's work keeps its order. Default `false`.
    pub database_write_behind: bool,
    /// Where check alerts are POSTed as JSON (`http://` or `https://`),
    /// besides `alerts.<check>.<pc>` on the bus. Needs the `webhooks`
    /// feature (on by default).
    pub alert_webhook: Option<String>,
    /// Signs every command and kill the backend publishes (DESIGN §6).
    /// `None`: they go out unsigned, as the reference does without a key,
    /// and enforcing agents refuse them (the binary warns, `/healthz`
    /// reports it).
    pub signer: Option<Arc<kanade_core::policy::signature::CommandSigner>>,
    /// Which public NKey each pc publishes with. With it, a result whose
    /// publisher proof is missing or not its `pc_id`'s is refused and
    /// audited (`result.refused`); `None`: results are taken on their word
    /// (`/healthz` says `results_verified: false`).
    pub agent_identities: Option<Arc<super::identities::AgentIdentities>>,
}

impl std::fmt::Debug for BackendSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSettings")
            .field("db_path", &self.db_path)
            .field("online_window", &self.online_window)
            .field("reap_grace", &self.reap_grace)
            .field("reap_interval", &self.reap_interval)
            .field("inline_database", &self.inline_database)
            .field("database_durability", &self.database_durability)
            .field("database_write_behind", &self.database_write_behind)
            .field("signer", &self.signer)
            .field("agent_identities", &self.agent_identities.is_some())
            .field(
                "alert_webhook",
                &self.alert_webhook.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl BackendSettings {
    /// Defaults with the database at `db_path`.
    pub fn new(db_path: impl Into<PathBuf>) -> Self {
        Self {
            db_path: db_path.into(),
            online_window: Duration::from_secs(90),
            reap_grace: Duration::from_secs(120),
            reap_interval: Duration::from_secs(30),
            inline_database: false,
            database_durability: crate::db::DbDurability::PowerLoss,
            database_write_behind: false,
            alert_webhook: None,
            signer: None,
            agent_identities: None,
        }
    }
}

/// The backend; cheap to clone.
#[derive(Clone)]
pub struct Backend {
    pub(super) transport: Arc<dyn Transport>,
    pub(super) log: Arc<dyn MessageLog>,
    pub(super) db: Db,
    pub(super) settings: BackendSettings,
    pub(super) now: NowFn,
    pub(super) new_id: IdFn,
    pub(super) metrics: Arc<crate::metrics::BackendMetrics>,
}

/// Where the backend reads "now" from (the system clock unless a simulation
/// supplies its own).
pub type NowFn = Arc<dyn Fn() -> chrono::DateTime<Utc> + Send + Sync>;

/// Where the backend gets fresh execution and request ids (random UUIDs
/// unless a simulation supplies a deterministic source).
pub type IdFn = Arc<dyn Fn() -> String + Send + Sync>;

fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Runs database work on the blocking pool, or inline on the calling task
/// when `inline` (a single-threaded simulation: deterministic, no thread
/// hand-offs).
/// A webhook must be an `http://` or `https://` URL, and this build must
/// be able to call it.
fn check_webhook(url: &str) -> Result<(), BackendError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(BackendError::Invalid(
            "the alert webhook is not an http:// or https:// URL (it is not repeated here: it may hold a secret)".into(),
        ));
    }
    if cfg!(not(feature = "webhooks")) {
        return Err(BackendError::Invalid(
            "an alert webhook is set but this build has no `webhooks` feature".into(),
        ));
    }
    Ok(())
}

async fn run_db<T: Send + 'static>(
    inline: bool,
    work: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, BackendError> {
    if inline {
        return work().map_err(BackendError::from);
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(BackendError::DbTask)?
        .map_err(BackendError::from)
}

impl Backend {
    /// Opens the database and makes sure kanade's streams exist.
    pub async fn open(
        transport: Arc<dyn Transport>,
        settings: BackendSettings,
    ) -> Result<Self, BackendError> {
        if let Some(url) = &settings.alert_webhook {
            check_webhook(url)?;
        }
        let log = transport.messages();
        for spec in &ALL_STREAMS {
            log.create_stream(StreamConfig::from_spec(spec)).await?;
        }
        let path = settings.db_path.clone();
        let durability = settings.database_durability;
        let write_behind = settings.database_write_behind;
        let db = run_db(settings.inline_database, move || {
            let db = Db::open_with(&path, durability)?;
            if write_behind {
                db.with_write_behind()
            } else {
                Ok(db)
            }
        })
        .await?;
        Ok(Self {
            transport,
            log,
            db,
            settings,
            now: Arc::new(Utc::now),
            new_id: Arc::new(random_id),
            metrics: Arc::new(crate::metrics::BackendMetrics::default()),
        })
    }

    /// The same backend reading time from `now` (online windows, creation
    /// times, the reaper, and the default scheduler clock).
    pub fn with_clock(mut self, now: NowFn) -> Self {
        self.now = now;
        self
    }

    /// The same backend taking execution and request ids from `new_id`.
    pub fn with_ids(mut self, new_id: IdFn) -> Self {
        self.new_id = new_id;
        self
    }

    /// The counters `/metrics` reports (see [`crate::metrics`]).
    pub fn metrics(&self) -> &crate::metrics::BackendMetrics {
        &self.metrics
    }

    /// The backend's current time.
    pub fn now(&self) -> chrono::DateTime<Utc> {
        (self.now)()
    }

    /// The backend's clock, for components that run beside it.
    pub fn clock(&self) -> NowFn {
        self.now.clone()
    }

    /// A fresh id from the backend's id source.
    pub fn new_id(&self) -> String {
        (self.new_id)()
    }

    /// Runs database work as the settings say (see
    /// [`BackendSettings::inline_database`]).
    pub(crate) async fn run_db<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, BackendError> {
        run_db(self.settings.inline_database, work).await
    }

    /// Whether results must prove their publisher
    /// ([`BackendSettings::agent_identities`]).
    pub fn verifies_publishers(&self) -> bool {
        self.settings.agent_identities.is_some()
    }

    /// Whether commands and kills go out signed.
    pub fn signing(&self) -> bool {
        self.settings.signer.is_some()
    }

    /// An audit entry for something the backend itself did or decided
    /// (actor and source kind `backend`), dated now.
    pub(super) fn own_audit_draft(&self, action: &str, outcome: &str) -> crate::audit::AuditDraft {
        let source = kanade_core::wire::AuditSource {
            ip: None,
            kind: "backend".into(),
        };
        crate::audit::AuditDraft::new(self.now(), "backend", source, action, outcome)
    }

    /// The signature headers for `body` published now (empty without a
    /// signing key). A break-glass key's every use is audited (`what`:
    /// the command or kill it signs).
    pub(super) async fn signature_headers(
        &self,
        body: &[u8],
        what: &str,
    ) -> kanade_core::transport::Headers {
        let Some(signer) = &self.settings.signer else {
            return kanade_core::transport::Headers::new();
        };
        let headers = signer
            .sign(body, self.now().timestamp_millis())
            .into_iter()
            .collect();
        if signer.break_glass() {
            let mut entry = self.own_audit_draft("signature.break_glass", crate::audit::OUTCOME_OK);
            entry.target = Some(what.to_owned());
            entry.params = serde_json::json!({"kid": signer.kid()});
            let db = self.db.clone();
            if let Err(e) = self.run_db(move || db.append_audit(entry)).await {
                tracing::error!("break-glass signature not audited: {e}");
            }
            tracing::warn!(kid = signer.kid(), what, "signed with the break-glass key");
        }
        headers
    }

    /// The SQLite store.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The instant before which an agent counts as offline.
    pub fn online_since(&self) -> chrono::DateTime<Utc> {
        self.now() - chrono::Duration::from_std(self.settings.online_window).unwrap_or_default()
    }

    /// The key-value bucket `name` (five revisions of history kept).
    pub(super) async fn bucket(&self, name: &str) -> Result<Arc<dyn KeyValue>, BackendError> {
        let mut config = KvConfig::new(name);
        config.history = 5;
        Ok(self.transport.key_value(config).await?)
    }
}
