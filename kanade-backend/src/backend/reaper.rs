//! The reaper: closes runs whose agent started them but never reported a
//! result, so their executions complete; ends approval requests past
//! their TTL; sends approved commands a stop left unsent.

use chrono::Utc;
use kanade_core::wire::ExecResult;

use super::core::Backend;

/// Closes runs that started but never reported, every
/// [`BackendSettings::reap_interval`](super::core::BackendSettings::reap_interval),
/// with a reaped result (exit -1).
pub(super) async fn reaper(backend: Backend) {
    loop {
        tokio::time::sleep(backend.settings.reap_interval).await;
        if let Err(e) = backend.expire_approvals().await {
            tracing::warn!("reaper: expiring approval requests: {e}");
        }
        match backend.send_approved_unsent().await {
            Ok(0) => {}
            Ok(sent) => {
                tracing::info!(sent, "reaper: sent approved commands left unsent by a stop")
            }
            Err(e) => tracing::warn!("reaper: sending approved commands: {e}"),
        }
        let db = backend.db.clone();
        let now = backend.now();
        let overdue = match backend.run_db(move || db.overdue_runs(now)).await {
            Ok(overdue) => overdue,
            Err(e) => {
                tracing::warn!("reaper: {e}");
                continue;
            }
        };
        for run in overdue {
            let now = backend.now();
            let result = ExecResult {
                result_id: run.result_id,
                request_id: run.request_id,
                exec_id: run.exec_id,
                pc_id: run.pc_id,
                exit_code: -1,
                skipped: false,
                stdout: String::new(),
                stderr: "kanade: reaped by the backend: the agent started this run but never reported a result".into(),
                started_at: chrono::DateTime::parse_from_rfc3339(&run.started_at).map_or(now, |t| t.with_timezone(&Utc)),
                finished_at: now,
                stdout_object: None,
                stderr_object: None,
                manifest_id: None,
                attempts: 1,
            };
            let db = backend.db.clone();
            if let Err(e) = backend
                .run_db({
                    let now = backend.now();
                    move || db.store_result_at(&result, true, now)
                })
                .await
            {
                tracing::warn!("reaper: {e}");
            }
        }
    }
}
