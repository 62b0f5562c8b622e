//! M-of-N approvals through the real router on a real listener: a job
//! that requires approval publishes nothing until enough distinct
//! approvers agree, and pending requests survive a backend restart;
//! denial and expiry publish nothing. The harness is in `security_common/`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod security_common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kanade::backend::auth::{Role, Scopes};
use kanade::backend::http::ApiAuth;
use kanade::core::transport::{Subscription, Transport};
use security_common::Api;
use serde_json::json;

async fn commands(transport: &Arc<dyn Transport>) -> Subscription {
    transport.messages().subscribe("commands.>").await.unwrap()
}

async fn quiet(sub: &mut Subscription) -> bool {
    tokio::time::timeout(Duration::from_millis(400), sub.next())
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_need_m_distinct_approvers_and_survive_a_restart() {
    let mut api = Api::start(ApiAuth::default()).await;
    api.backend
        .apply_job(
            "id: careful\nversion: 1\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\nrequire_approval: {approvals: 2, role: operator, ttl: 1h}\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let alice = api.token("alice", Role::Operator, Scopes::default());
    let bob = api.token("bob", Role::Operator, Scopes::default());
    let carol = api.token("carol", Role::Admin, Scopes::default());
    let viewer = api.token("val", Role::Viewer, Scopes::default());
    let mut sent = commands(&api.transport).await;

    let (status, row) = api
        .call(
            "POST",
            "/api/jobs/careful/exec",
            Some(&alice),
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(
        (status, row["status"].as_str()),
        (202, Some("awaiting_approval")),
        "{row}"
    );
    let exec = row["exec_id"].as_str().unwrap().to_owned();
    let approve = format!("/api/executions/{exec}/approve");
    assert!(quiet(&mut sent).await, "nothing published while awaiting");
    let (_, pending) = api.call("GET", "/api/approvals", Some(&viewer), None).await;
    assert_eq!(pending[0]["execution"]["exec_id"], json!(exec), "{pending}");

    let (status, body) = api.call("POST", &approve, Some(&alice), None).await;
    assert_eq!(status, 403, "the requester cannot approve: {body}");
    let (status, _) = api.call("POST", &approve, Some(&viewer), None).await;
    assert_eq!(status, 403, "a viewer cannot approve");
    let (status, body) = api.call("POST", &approve, Some(&bob), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("awaiting_approval")),
        "{body}"
    );
    let (status, _) = api.call("POST", &approve, Some(&bob), None).await;
    assert_eq!(status, 403, "bob counts once");
    assert!(
        quiet(&mut sent).await,
        "one approval of two publishes nothing"
    );

    // The backend restarts between the approvals: the state is in SQLite.
    api.restart().await;
    let (status, body) = api.call("POST", &approve, Some(&carol), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pending")),
        "{body}"
    );
    let command = tokio::time::timeout(Duration::from_secs(5), sent.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(command.subject, "commands.all");
    assert!(
        quiet(&mut sent).await,
        "the quorum publishes exactly one command"
    );
    let (status, _) = api.call("POST", &approve, Some(&alice), None).await;
    assert_eq!(status, 400, "decided requests take no more votes");

    // Denial: nothing is published.
    let (_, row) = api
        .call(
            "POST",
            "/api/jobs/careful/exec",
            Some(&alice),
            Some(json!({"all": true})),
        )
        .await;
    let denied = row["exec_id"].as_str().unwrap().to_owned();
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/executions/{denied}/deny"),
            Some(&bob),
            Some(json!({"reason": "not today"})),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("denied")),
        "{body}"
    );
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/executions/{denied}/approve"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(status, 400);

    // Expiry: past the TTL the request ends `expired`, nothing published.
    let (_, row) = api
        .call(
            "POST",
            "/api/jobs/careful/exec",
            Some(&alice),
            Some(json!({"all": true})),
        )
        .await;
    let late = row["exec_id"].as_str().unwrap().to_owned();
    api.clock.store(3601, Ordering::SeqCst);
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/executions/{late}/approve"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let row = api.backend.db().execution(&late).unwrap().unwrap();
    assert_eq!(row.status, "expired");
    // An unattended request is ended by the reaper's sweep.
    let (_, row) = api
        .call(
            "POST",
            "/api/jobs/careful/exec",
            Some(&alice),
            Some(json!({"all": true})),
        )
        .await;
    let unattended = row["exec_id"].as_str().unwrap().to_owned();
    api.clock.store(2 * 3601, Ordering::SeqCst);
    assert_eq!(api.backend.expire_approvals().await.unwrap(), 1);
    let row = api.backend.db().execution(&unattended).unwrap().unwrap();
    assert_eq!(row.status, "expired");
    assert!(quiet(&mut sent).await, "denial and expiry publish nothing");
    let audit = api.audit();
    let expired: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "execution.expire")
        .map(|e| (e.actor.as_str(), e.target.as_deref()))
        .collect();
    assert!(
        expired.contains(&("backend", Some(unattended.as_str()))),
        "{expired:?}"
    );
    // Each vote is one entry (written in the vote's transaction).
    let bobs_votes = audit
        .iter()
        .filter(|e| {
            e.actor == "bob"
                && e.action == "execution.approve"
                && e.outcome.as_deref() == Some("ok")
        })
        .count();
    assert_eq!(bobs_votes, 1, "one stored vote, one entry");
    let steps: Vec<_> = api
        .audit()
        .into_iter()
        .filter(|e| e.action.starts_with("execution.") || e.action == "job.exec")
        .map(|e| (e.actor, e.action, e.outcome.unwrap_or_default()))
        .collect();
    assert!(
        steps.contains(&("carol".into(), "execution.approve".into(), "ok".into())),
        "{steps:?}"
    );
    assert!(
        steps.contains(&("alice".into(), "execution.approve".into(), "denied".into())),
        "{steps:?}"
    );
    assert!(
        steps.contains(&("bob".into(), "execution.deny".into(), "ok".into())),
        "{steps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_command_a_stop_left_unsent_goes_out_once() {
    let mut api = Api::start(ApiAuth::default()).await;
    api.backend
        .apply_job(
            "id: careful\nversion: 1\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\nrequire_approval: true\n",
            &Default::default(),
        )
        .await
        .unwrap();
    let alice = api.token("alice", Role::Operator, Scopes::default());
    let (_, row) = api
        .call(
            "POST",
            "/api/jobs/careful/exec",
            Some(&alice),
            Some(json!({"all": true})),
        )
        .await;
    let exec = row["exec_id"].as_str().unwrap().to_owned();
    // The quorum's transaction committed, then the backend stopped before
    // publishing: the row is `pending`, its command unsent.
    rusqlite::Connection::open(&api.db_path)
        .unwrap()
        .execute(
            "UPDATE executions SET status = 'pending' WHERE exec_id = ?1",
            [&exec],
        )
        .unwrap();
    api.restart().await;
    let mut sent = commands(&api.transport).await;
    assert_eq!(api.backend.send_approved_unsent().await.unwrap(), 1);
    let command = tokio::time::timeout(Duration::from_secs(5), sent.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(command.subject, "commands.all");
    assert_eq!(api.backend.send_approved_unsent().await.unwrap(), 0);
    assert!(quiet(&mut sent).await, "sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_of_a_gated_job_fires_only_once_approved_per_job_version() {
    let api = Api::start(ApiAuth::default()).await;
    let gated = "id: careful\nversion: 1\nexecute:\n  shell: sh\n  script: echo hi\n  timeout: 30s\nrequire_approval: {approvals: 2, role: operator, ttl: 1h}\n";
    api.backend
        .apply_job(gated, &Default::default())
        .await
        .unwrap();
    let alice = api.token("alice", Role::Operator, Scopes::default());
    let bob = api.token("bob", Role::Operator, Scopes::default());
    let carol = api.token("carol", Role::Operator, Scopes::default());
    let schedule =
        "id: hourly\njob_id: careful\nwhen:\n  per_target: {every: 1h}\ntarget:\n  all: true\n";
    let (status, body) = api
        .call(
            "POST",
            "/api/schedules",
            Some(&alice),
            Some(json!({"yaml": schedule})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, waiting) = api
        .call("GET", "/api/schedule-approvals", Some(&bob), None)
        .await;
    assert_eq!(waiting[0]["schedule_id"], "hourly", "{waiting}");
    assert_eq!(waiting[0]["version"], "1", "{waiting}");

    let scheduler = kanade::backend::Scheduler::new(api.backend.clone());
    let mut sent = commands(&api.transport).await;
    assert!(
        scheduler.tick_once().await.unwrap().is_empty(),
        "not approved: no fire"
    );
    assert!(quiet(&mut sent).await);

    let approve = "/api/schedules/hourly/approve";
    let (status, _) = api.call("POST", approve, Some(&alice), None).await;
    assert_eq!(status, 403, "the requester cannot approve");
    let (status, body) = api.call("POST", approve, Some(&bob), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("awaiting_approval")),
        "{body}"
    );
    assert!(
        scheduler.tick_once().await.unwrap().is_empty(),
        "one of two: no fire"
    );
    let (status, body) = api.call("POST", approve, Some(&carol), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    assert_eq!(
        scheduler.tick_once().await.unwrap().len(),
        1,
        "approved: it fires"
    );
    let command = tokio::time::timeout(Duration::from_secs(5), sent.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(command.subject, "commands.all");

    // A new job version is a new request: the schedule waits again.
    api.backend
        .apply_job(
            &gated.replace("version: 1", "version: 2"),
            &Default::default(),
        )
        .await
        .unwrap();
    let (status, _) = api
        .call(
            "POST",
            "/api/schedules",
            Some(&alice),
            Some(json!({"yaml": schedule})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, waiting) = api
        .call("GET", "/api/schedule-approvals", Some(&bob), None)
        .await;
    assert_eq!(waiting[0]["version"], "2", "{waiting}");
    api.clock.store(3 * 3600, Ordering::SeqCst);
    let scheduler = kanade::backend::Scheduler::with_clock(
        api.backend.clone(),
        security_common::clock_fn(api.clock.clone()),
        Duration::from_secs(60),
    );
    assert!(
        scheduler.tick_once().await.unwrap().is_empty(),
        "version 2 not approved"
    );
    let audit = api.audit();
    assert!(audit
        .iter()
        .any(|e| e.actor == "carol" && e.action == "schedule.approve"));
}
