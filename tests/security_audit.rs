//! The audit trail through the real router: `/api/audit/verify` passes on
//! an untouched trail, and verification fails, naming the entry, after an
//! edit, a deletion or a swap in the database. The harness is in
//! `security_common/`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod security_common;

use kanade::backend::auth::{Role, Scopes};
use kanade::backend::http::ApiAuth;
use security_common::Api;
use serde_json::json;

/// Runs a few audited calls, then returns the API with its trail.
async fn audited_run() -> Api {
    let api = Api::start(ApiAuth::default()).await;
    let admin = api.token("admin", Role::Admin, Scopes::default());
    for n in 0..4 {
        api.call(
            "POST",
            "/api/jobs/hello/exec",
            Some(&admin),
            Some(json!({"all": true})),
        )
        .await;
        api.call("GET", "/api/jobs", Some(&format!("kanade_{n:012}_x")), None)
            .await;
    }
    let (status, verdict) = api
        .call("GET", "/api/audit/verify", Some(&admin), None)
        .await;
    assert_eq!(
        (status, verdict["ok"].as_bool()),
        (200, Some(true)),
        "{verdict}"
    );
    assert!(verdict["entries"].as_u64().unwrap() >= 8, "{verdict}");
    api
}

fn tamper(api: &Api, sql: &str) {
    rusqlite::Connection::open(&api.db_path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_an_edited_deleted_or_swapped_entry() {
    let edited = audited_run().await;
    tamper(&edited, "UPDATE audit SET actor = 'mallory' WHERE seq = 3;");
    let broken = edited.backend.db().verify_audit().unwrap().unwrap_err();
    assert_eq!(broken.seq, 3, "{broken:?}");

    let deleted = audited_run().await;
    tamper(&deleted, "DELETE FROM audit WHERE seq = 4;");
    let broken = deleted.backend.db().verify_audit().unwrap().unwrap_err();
    assert!(broken.seq == 4 || broken.seq == 5, "{broken:?}");

    let swapped = audited_run().await;
    tamper(
        &swapped,
        "UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = -1;",
    );
    let broken = swapped.backend.db().verify_audit().unwrap().unwrap_err();
    assert_eq!(broken.seq, 2, "{broken:?}");
}
