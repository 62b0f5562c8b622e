//! The alert publisher: every check alert the projection queued
//! (`db::alerts`) goes out on `alerts.<check>.<pc>` as JSON
//! ([`CheckAlertRecord`]) and, when `BackendSettings::alert_webhook` is
//! set, is POSTed there; each is marked once delivered, so a broker or
//! webhook outage delays alerts and loses none. It sleeps until an alert
//! is queued (and retries every [`RETRY`] while one is undelivered).

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

pub(super) async fn alert_publisher(backend: Backend) {
    let queued = backend.db.alerts_queued().clone();
    loop {
        let left = pass(&backend).await;
        if left {
            let _ = tokio::time::timeout(RETRY, queued.notified()).await;
        } else {
            queued.notified().await;
        }
    }
}

/// One pass over the queue; returns whether something is still
/// undelivered.
async fn pass(backend: &Backend) -> bool {
    let webhook = backend.settings.alert_webhook.clone();
    let db = backend.db.clone();
    let with_webhook = webhook.is_some();
    let pending = match backend
        .run_db(move || db.pending_alerts(with_webhook, BATCH))
        .await
    {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!("alerts not read: {e}");
            return true;
        }
    };
    let mut left = pending.len() == BATCH;
    for (alert, published) in pending {
        if !published {
            if publish(backend, &alert).await {
                let db = backend.db.clone();
                let _ = backend
                    .run_db(move || db.mark_alert_published(alert.id))
                    .await;
            } else {
                left = true;
            }
        }
        if let Some(url) = &webhook {
            if deliver(url, &alert).await {
                let db = backend.db.clone();
                let _ = backend
                    .run_db(move || db.mark_alert_delivered(alert.id))
                    .await;
            } else {
                left = true;
            }
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
            tracing::warn!(alert = alert.id, "alert webhook: {e}; retrying");
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
