//! The alert publisher: every check alert the projection queued
//! (`db::alerts`) goes out on `alerts.<check>.<pc>` as JSON
//! ([`CheckAlertRecord`]) — a live notification for whoever subscribes
//! (no stream keeps it; the record stays in `check_alerts` and the check's
//! history) — and, when `BackendSettings::alert_webhook` is set, is POSTed
//! there, retried until a 2xx: a webhook outage delays alerts and loses
//! none. It sleeps until an alert is queued (and retries every [`RETRY`]
//! while one is undelivered).

use std::time::Duration;

use bytes::Bytes;
use kanade_core::names::{subjects, SubjectToken, TokenKind};
use kanade_core::transport::{Headers, MESSAGE_ID_HEADER};

use super::core::Backend;
use crate::db::CheckAlertRecord;

/// How long an undelivered alert waits before the next try.
pub const RETRY: Duration = Duration::from_secs(5);

/// Alerts read per pass.
const BATCH: usize = 100;

/// How long a webhook has to answer.
#[cfg(feature = "webhooks")]
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a pass left.
#[derive(PartialEq, Eq)]
enum Left {
    /// Nothing pending.
    Nothing,
    /// A full batch went out: more may be queued, go again at once.
    More,
    /// Something failed: try again after [`RETRY`].
    Failed,
}

pub(super) async fn alert_publisher(backend: Backend) {
    let queued = backend.db.alerts_queued().clone();
    loop {
        match pass(&backend).await {
            Left::More => {}
            Left::Failed => {
                let _ = tokio::time::timeout(RETRY, queued.notified()).await;
            }
            Left::Nothing => queued.notified().await,
        }
    }
}

/// One pass: the bus side, then the webhook side (each on its own, so a
/// webhook outage never holds alerts back from the bus).
async fn pass(backend: &Backend) -> Left {
    let webhook = backend.settings.alert_webhook.clone();
    let mut left = Left::Nothing;
    let db = backend.db.clone();
    match backend.run_db(move || db.unpublished_alerts(BATCH)).await {
        Ok(alerts) => {
            if alerts.len() == BATCH {
                left = Left::More;
            }
            for alert in alerts {
                if !publish(backend, &alert).await {
                    left = Left::Failed;
                    break;
                }
                let db = backend.db.clone();
                let delivered = webhook.is_none();
                let _ = backend
                    .run_db(move || db.mark_alert_published(alert.id, delivered))
                    .await;
            }
        }
        Err(e) => {
            tracing::warn!("alerts not read: {e}");
            return Left::Failed;
        }
    }
    let Some(url) = webhook else {
        return left;
    };
    let db = backend.db.clone();
    match backend.run_db(move || db.undelivered_alerts(BATCH)).await {
        Ok(alerts) => {
            if alerts.len() == BATCH && left == Left::Nothing {
                left = Left::More;
            }
            for alert in alerts {
                // One failure ends the pass: a webhook that is down is not
                // asked again for every queued alert.
                if !deliver(&url, &alert).await {
                    return Left::Failed;
                }
                let db = backend.db.clone();
                let _ = backend
                    .run_db(move || db.mark_alert_delivered(alert.id))
                    .await;
            }
        }
        Err(e) => {
            tracing::warn!("alerts not read: {e}");
            return Left::Failed;
        }
    }
    left
}

/// Puts `alert` on `alerts.<check>.<pc>`; true once the bus has it (or it
/// can never be sent: a name that is not a subject token, logged).
async fn publish(backend: &Backend, alert: &CheckAlertRecord) -> bool {
    let tokens = SubjectToken::new(TokenKind::CheckName, alert.check.clone())
        .and_then(|check| SubjectToken::pc(alert.pc_id.clone()).map(|pc| (check, pc)));
    let (check, pc) = match tokens {
        Ok(tokens) => tokens,
        Err(e) => {
            tracing::warn!(
                check = alert.check,
                pc = alert.pc_id,
                "alert not published: {e}"
            );
            return true;
        }
    };
    let mut headers = Headers::new();
    headers.insert(MESSAGE_ID_HEADER.to_owned(), format!("alert-{}", alert.id));
    let body = serde_json::to_vec(alert).unwrap_or_default();
    match backend
        .log
        .publish(&subjects::alert(&check, &pc), headers, Bytes::from(body))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!("alert {} not published yet: {e}", alert.id);
            false
        }
    }
}

/// POSTs `alert` as JSON to `url`; true on a 2xx answer.
#[cfg(feature = "webhooks")]
async fn deliver(url: &str, alert: &CheckAlertRecord) -> bool {
    let (url, body) = (url.to_owned(), alert.clone());
    let sent = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(WEBHOOK_TIMEOUT))
            .build()
            .into();
        agent.post(&url).send_json(&body).map(|_| ())
    })
    .await;
    match sent {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            // Said without the error's text, which may quote the URL.
            let why = match e {
                ureq::Error::StatusCode(code) => format!("answered HTTP {code}"),
                ureq::Error::Timeout(_) => "timed out".to_owned(),
                ureq::Error::Io(e) => format!("connection failed ({:?})", e.kind()),
                _ => "request failed".to_owned(),
            };
            tracing::warn!(alert = alert.id, "alert webhook {why}; retrying");
            false
        }
        Err(e) => {
            tracing::warn!(alert = alert.id, "alert webhook task: {e}");
            false
        }
    }
}

/// Without the `webhooks` feature no webhook is ever configured
/// (`Backend::open` refuses one).
#[cfg(not(feature = "webhooks"))]
async fn deliver(_url: &str, _alert: &CheckAlertRecord) -> bool {
    true
}
