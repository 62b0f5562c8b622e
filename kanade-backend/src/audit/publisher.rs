//! [`AuditPublisher`]: publishes the `audit` table's unpublished rows, in
//! seq order, and marks each once the broker has it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kanade_core::names::{subjects, SubjectToken, TokenKind};
use kanade_core::transport::{Headers, MessageLog, MESSAGE_ID_HEADER};
use kanade_core::wire::AuditEvent;

use crate::db::{Db, DbError};

/// Rows read per database call.
const BATCH: usize = 100;

/// The longest subject token kanade accepts, in bytes.
const MAX_TOKEN_LEN: usize = 128;

/// Whether `c` may appear in a subject token (as `kanade_core::names`).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// `value` as a subject token: characters outside `A-Z a-z 0-9 - _`
/// become `_`, an empty value is `_`, and it is cut to the longest token.
fn safe_token(kind: TokenKind, value: &str) -> SubjectToken {
    let mut text: String = value
        .chars()
        .map(|c| if is_token_char(c) { c } else { '_' })
        .collect();
    text.truncate(MAX_TOKEN_LEN); // all ASCII now: any cut is a char boundary
    if text.is_empty() {
        text.push('_');
    }
    SubjectToken::new(kind, text).unwrap_or_else(|_| {
        // Unreachable: the text is non-empty, short and in the alphabet.
        SubjectToken::new(kind, "_").unwrap_or_else(|_| unreachable!("'_' is a valid token"))
    })
}

/// The subject `entry` is published on: `audit.<actor>.<action>`, each
/// made a safe token (other characters become `_`).
///
/// ```
/// use kanade_backend::audit::subject_for;
/// use kanade_core::wire::AuditEvent;
///
/// let entry = AuditEvent { actor: "alice@example.com".into(), action: "exec".into(), ..Default::default() };
/// assert_eq!(subject_for(&entry), "audit.alice_example_com.exec");
/// ```
pub fn subject_for(entry: &AuditEvent) -> String {
    subjects::audit(
        &safe_token(TokenKind::Actor, &entry.actor),
        &safe_token(TokenKind::Action, &entry.action),
        None,
    )
}

/// Why a pass of the publisher stopped early.
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error("audit outbox: {0}")]
    Db(#[from] DbError),
    #[error("audit outbox: database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("publishing audit entry {seq}: {reason}")]
    Publish { seq: u64, reason: String },
}

/// Publishes the audit outbox: every row of the `audit` table not yet
/// published, oldest first, on [`subject_for`] as the JSON
/// [`AuditEvent`] with [`MESSAGE_ID_HEADER`] set to the entry's hash (so a
/// re-publish after a crash is dropped by the AUDIT stream), marking each
/// once the stream has stored it.
///
/// [`run`](Self::run) sleeps until [`Db::append_audit`] (or
/// [`Db::notify_audit_appended`]) signals a new entry: with no entries it
/// never touches the broker and arms no timer. A failed publish is retried
/// after a back-off (1 s doubling to 30 s); nothing is lost.
pub struct AuditPublisher {
    log: Arc<dyn MessageLog>,
    db: Db,
    inline_database: bool,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl AuditPublisher {
    /// A publisher of `db`'s outbox onto `log`.
    pub fn new(log: Arc<dyn MessageLog>, db: Db) -> Self {
        Self {
            log,
            db,
            inline_database: false,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// Runs SQLite calls on the calling task instead of the blocking pool
    /// (as [`BackendSettings::inline_database`](crate::BackendSettings::inline_database)).
    pub fn inline_database(mut self, inline: bool) -> Self {
        self.inline_database = inline;
        self
    }

    /// The back-off after a failure: `min`, doubling up to `max`.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    async fn db_call<T: Send + 'static>(
        &self,
        work: impl FnOnce(Db) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, PassError> {
        let db = self.db.clone();
        if self.inline_database {
            return Ok(work(db)?);
        }
        Ok(tokio::task::spawn_blocking(move || work(db)).await??)
    }

    /// Publishes every unpublished entry; returns how many were published.
    async fn pass(&self) -> Result<usize, PassError> {
        let mut published = 0;
        loop {
            let batch = self.db_call(|db| db.audit_unpublished(BATCH)).await?;
            if batch.is_empty() {
                return Ok(published);
            }
            for (seq, entry) in batch {
                match entry {
                    Ok(entry) => self.publish(seq, &entry).await?,
                    // Its columns were edited into something unreadable:
                    // verification names it; publishing it is impossible.
                    Err(reason) => tracing::error!(seq, "audit entry not publishable: {reason}"),
                }
                self.db_call(move |db| db.mark_audit_published(seq)).await?;
                published += 1;
            }
        }
    }

    async fn publish(&self, seq: u64, entry: &AuditEvent) -> Result<(), PassError> {
        let failed = |reason: String| PassError::Publish { seq, reason };
        let payload = serde_json::to_vec(entry).map_err(|e| failed(e.to_string()))?;
        let headers = Headers::from([(MESSAGE_ID_HEADER.to_owned(), entry.hash.clone())]);
        match self
            .log
            .publish(&subject_for(entry), headers, Bytes::from(payload))
            .await
        {
            Ok(Some(_ack)) => Ok(()),
            Ok(None) => Err(failed(
                "no stream captured it (is AUDIT provisioned?)".into(),
            )),
            Err(e) => Err(failed(e.to_string())),
        }
    }

    /// Publishes what is pending, then again whenever an entry is appended;
    /// never returns (abort the task to stop it).
    pub async fn run(self) {
        let appended = self.db.audit_signal();
        let mut backoff = self.min_backoff;
        loop {
            match self.pass().await {
                Ok(_) => {
                    backoff = self.min_backoff;
                    appended.notified().await;
                }
                Err(e) => {
                    tracing::warn!("{e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{TimeZone, Utc};
    use kanade_core::names::StreamSpec;
    use kanade_core::transport::fault::{FaultPlan, FaultyTransport, PublishFault};
    use kanade_core::transport::memory::MemoryTransport;
    use kanade_core::transport::{StreamConfig, Transport};
    use kanade_core::wire::AuditSource;

    use super::*;
    use crate::audit::AuditDraft;

    struct Fixture {
        dir: tempfile::TempDir,
        db: Db,
        log: Arc<dyn MessageLog>,
    }

    async fn fixture(transport: Arc<dyn Transport>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("audit.db")).unwrap();
        let log = transport.messages();
        log.create_stream(StreamConfig::from_spec(&StreamSpec::AUDIT))
            .await
            .unwrap();
        Fixture { dir, db, log }
    }

    fn draft(actor: &str, n: u32) -> AuditDraft {
        let mut draft = AuditDraft::new(
            Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, n).unwrap(),
            actor,
            AuditSource {
                ip: None,
                kind: "api".into(),
            },
            "exec",
            "ok",
        );
        draft.target = Some(format!("job-{n}"));
        draft
    }

    async fn stored(log: &Arc<dyn MessageLog>) -> u64 {
        log.stream_info(kanade_core::names::STREAM_AUDIT)
            .await
            .unwrap()
            .messages
    }

    async fn drained(db: &Db) {
        for _ in 0..1000 {
            if db.audit_unpublished(1).unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the outbox never drained");
    }

    #[test]
    fn subjects_are_safe_tokens() {
        let entry = |actor: &str, action: &str| AuditEvent {
            actor: actor.into(),
            action: action.into(),
            ..Default::default()
        };
        assert_eq!(subject_for(&entry("alice", "exec")), "audit.alice.exec");
        assert_eq!(
            subject_for(&entry("a.b*c>d e", "tok en")),
            "audit.a_b_c_d_e.tok_en"
        );
        assert_eq!(subject_for(&entry("", "ñ")), "audit._._");
        let long = "x".repeat(300);
        assert_eq!(
            subject_for(&entry(&long, "exec")).len(),
            "audit..exec".len() + 128
        );
    }

    #[tokio::test(start_paused = true)]
    async fn appended_entries_are_published_in_order_with_their_hash_as_id() {
        let f = fixture(Arc::new(MemoryTransport::new())).await;
        let mut sub = f.log.subscribe("audit.>").await.unwrap();
        let publisher = tokio::spawn(
            AuditPublisher::new(f.log.clone(), f.db.clone())
                .inline_database(true)
                .run(),
        );
        let entries: Vec<_> = ["alice", "bob@corp", "alice"]
            .iter()
            .enumerate()
            .map(|(i, actor)| f.db.append_audit(draft(actor, i as u32)).unwrap())
            .collect();
        for entry in &entries {
            let message = sub.next().await.unwrap();
            assert_eq!(message.subject, subject_for(entry));
            assert_eq!(message.headers.get(MESSAGE_ID_HEADER), Some(&entry.hash));
            let sent: AuditEvent = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(&sent, entry);
        }
        drained(&f.db).await;
        assert_eq!(stored(&f.log).await, 3);
        publisher.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn entries_recorded_before_the_start_are_published_at_start() {
        let f = fixture(Arc::new(MemoryTransport::new())).await;
        f.db.append_audit(draft("alice", 1)).unwrap();
        f.db.append_audit(draft("alice", 2)).unwrap();
        let publisher = tokio::spawn(AuditPublisher::new(f.log.clone(), f.db.clone()).run());
        drained(&f.db).await;
        assert_eq!(stored(&f.log).await, 2);
        publisher.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_publisher_publishes_nothing() {
        let f = fixture(Arc::new(MemoryTransport::new())).await;
        let publisher = tokio::spawn(
            AuditPublisher::new(f.log.clone(), f.db.clone())
                .inline_database(true)
                .run(),
        );
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(stored(&f.log).await, 0);
        assert!(!publisher.is_finished());
        publisher.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_broker_outage_loses_nothing() {
        let faulty = FaultyTransport::new(
            Arc::new(MemoryTransport::new()),
            FaultPlan::Scripted {
                publishes: Vec::new(),
                deliveries: Vec::new(),
            },
        );
        let injector = faulty.injector();
        let f = fixture(Arc::new(faulty)).await;
        let publisher = tokio::spawn(
            AuditPublisher::new(f.log.clone(), f.db.clone())
                .inline_database(true)
                .run(),
        );
        injector.disconnect();
        for n in 0..3 {
            f.db.append_audit(draft("alice", n)).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(f.db.audit_unpublished(10).unwrap().len(), 3);
        injector.reconnect();
        drained(&f.db).await;
        assert_eq!(stored(&f.log).await, 3);
        publisher.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_ack_or_a_crash_before_marking_publishes_once() {
        let faulty = FaultyTransport::new(
            Arc::new(MemoryTransport::new()),
            FaultPlan::Scripted {
                publishes: vec![Some(PublishFault::LoseAck)],
                deliveries: Vec::new(),
            },
        );
        let f = fixture(Arc::new(faulty)).await;
        let publisher = tokio::spawn(
            AuditPublisher::new(f.log.clone(), f.db.clone())
                .inline_database(true)
                .run(),
        );
        f.db.append_audit(draft("alice", 1)).unwrap();
        f.db.append_audit(draft("alice", 2)).unwrap();
        drained(&f.db).await;
        assert_eq!(stored(&f.log).await, 2);
        publisher.abort();

        // A crash between publishing and marking: published again, and
        // dropped by the stream as a duplicate.
        rusqlite::Connection::open(f.dir.path().join("audit.db"))
            .unwrap()
            .execute("UPDATE audit SET published = 0", [])
            .unwrap();
        let publisher = tokio::spawn(
            AuditPublisher::new(f.log.clone(), f.db.clone())
                .inline_database(true)
                .run(),
        );
        drained(&f.db).await;
        assert_eq!(stored(&f.log).await, 2);
        publisher.abort();
    }
}
