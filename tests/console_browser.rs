//! The web console in a real browser: headless Chromium (the Debian
//! `chromium` and `chromium-driver` packages; `.ci/run` installs them)
//! driven over WebDriver by `fantoccini`, against the real
//! `kanade-backend` and two real `kanade-agent` processes on a real
//! nats-server.
//!
//! One walk through an operator's day, a PNG screenshot per step under
//! `<target>/tmp/console/` (the README's two come from here):
//! sign in (a wrong token is refused), the fleet with both agents, a job
//! with a mistake (the error next to its line), the fix, a run on both
//! agents with rows appearing live, a pc's output (overflowed past the
//! inline limit, and markup shown as text), a kill of a long run, an
//! approval by a second user, the audit trail, a schedule's next fires,
//! disabling it, a freeze with its banner and lifting it, what a viewer
//! sees (and that the server refuses it anyway), and the phone width.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use kanade::nats::test_server::NatsServer;
use serde_json::{json, Value};

mod browser_common;
mod common;
use browser_common::{click, present, scroll_to, start_browser, text_of, type_into, Shots, WAIT};
use common::{create_token, free_port, spawn_quiet, wait_until, workspace_binary};

async fn sign_in(browser: &Client, base: &str, token: &str) {
    browser.goto(&format!("{base}/#/fleet")).await.unwrap();
    if present(browser, "#sign-out").await {
        click(browser, "#sign-out").await;
    }
    type_into(browser, "#token", token).await;
    click(browser, "#sign-in-button").await;
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#whoami"))
        .await
        .unwrap();
}

/// The current page's `#/exec/<id>`.
async fn exec_id_of(browser: &Client) -> String {
    let started = Instant::now();
    loop {
        let url = browser.current_url().await.unwrap();
        if let Some((_, id)) = url.as_str().split_once("#/exec/") {
            return id.split('/').next().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < WAIT,
            "never reached an execution: {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn api(base: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{base}{path}");
    let auth = format!("Bearer {token}");
    let response = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
        (_, Some(body)) => agent
            .post(&url)
            .header("Authorization", &auth)
            .send_json(body),
        (_, None) => agent.post(&url).header("Authorization", &auth).send_empty(),
    };
    // Not up yet: no answer.
    let Ok(mut response) = response else {
        return (0, Value::Null);
    };
    let status = response.status().as_u16();
    let body = response.body_mut().read_json().unwrap_or(Value::Null);
    (status, body)
}

fn manifest_upload(yaml: &str) -> Value {
    json!({ "yaml": yaml })
}

/// Posts a manifest (a job or a schedule) to `route` and expects 200.
fn post_manifest(base: &str, token: &str, route: &str, yaml: &str) {
    let (status, body) = api(base, token, "POST", route, Some(manifest_upload(yaml)));
    assert_eq!(status, 200, "{route}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_day_in_the_console() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("backend.db");
    let alice = create_token(&db, "alice", "admin", &[]);
    let bob = create_token(&db, "bob", "operator", &[]);
    let vera = create_token(&db, "vera", "viewer", &[]);
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let _backend = spawn_quiet(
        Command::new(workspace_binary("kanade-backend"))
            .args(["--transport", &nats.url(), "--listen", &listen])
            .arg("--db")
            .arg(&db),
    );
    let mut agents = Vec::new();
    for (pc, group) in [("pc-1", "lab"), ("pc-2", "office")] {
        agents.push(spawn_quiet(
            Command::new(workspace_binary("kanade-agent"))
                .args(["--transport", &nats.url(), "--pc-id", pc, "--group", group])
                .arg("--state-dir")
                .arg(dir.path().join(pc)),
        ));
    }
    wait_until("both agents in the fleet", || {
        let (status, body) = api(&base, &alice, "GET", "/api/agents", None);
        status == 200
            && body.as_array().is_some_and(|a| {
                a.iter()
                    .filter(|x| x["online"] == true && !x["groups"].is_null())
                    .count()
                    == 2
            })
    });
    // Set up by API what the walk only uses: a long job, a gated job.
    post_manifest(
        &base,
        &alice,
        "/api/jobs",
        "id: long\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: sleep 120\n  timeout: 5m\n",
    );
    post_manifest(
        &base,
        &alice,
        "/api/jobs",
        "id: guarded\nversion: 1.0.0\ndescription: <img src=x id=injected> needs a second pair of eyes\nrequire_approval: true\nexecute:\n  shell: sh\n  script: echo approved\n  timeout: 30s\n",
    );

    // The page comes with its security headers.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let page = agent.get(format!("{base}/")).call().unwrap();
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(
        header("content-security-policy"),
        kanade::backend::console::CONTENT_SECURITY_POLICY
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("x-frame-options"), "DENY");
    assert!(page.headers().get("set-cookie").is_none());

    let (_driver, browser) = start_browser().await;
    let shots_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&shots_dir).unwrap();
    let mut shots = Shots {
        dir: shots_dir,
        n: 0,
    };

    // 1. Sign in: a wrong token is refused, the admin's is taken.
    browser.goto(&format!("{base}/")).await.unwrap();
    type_into(&browser, "#token", "kanade_wrong").await;
    click(&browser, "#sign-in-button").await;
    text_of(&browser, "#sign-in-error", |t| t.contains("not accepted")).await;
    shots.take(&browser, "sign-in-refused").await;
    sign_in(&browser, &base, &alice).await;
    text_of(&browser, "#whoami", |t| t == "alice · admin").await;

    // 2. The fleet: both agents, counts, search.
    text_of(&browser, "#count-online", |t| t == "2").await;
    text_of(&browser, "#fleet-table tr[data-pc=\"pc-2\"]", |t| {
        t.contains("online") && t.contains("office")
    })
    .await;
    type_into(&browser, "#fleet-search", "lab").await;
    text_of(&browser, "#fleet-shown", |t| t == "1 of 2 shown").await;
    assert!(!present(&browser, "#fleet-table tr[data-pc=\"pc-2\"]").await);
    type_into(&browser, "#fleet-search", "").await;
    browser
        .find(Locator::Css("#fleet-search"))
        .await
        .unwrap()
        .send_keys(" ")
        .await
        .unwrap();
    text_of(&browser, "#fleet-shown", |t| t == "2 of 2 shown").await;
    shots.take(&browser, "fleet").await;
    click(&browser, "#fleet-table tr[data-pc=\"pc-1\"] a").await;
    text_of(&browser, "#pc-facts", |t| t.contains("lab")).await;
    shots.take(&browser, "pc-page").await;

    // 3. A job with a mistake: the error is shown next to line 6.
    click(&browser, "#nav-jobs").await;
    // The scripts wait for the test's go (a file) before they answer.
    let go = dir.path().join("go");
    let broken = format!(
        "id: hello\nversion: 1.0.0\nexecute:\n  shell: sh\n  script: while [ ! -e {} ]; do sleep 0.1; done; echo \"hi from $KANADE_PC_ID <b>not bold</b>\"; yes kanade-output | head -c 300000\n  timeout: soon\n",
        go.display()
    );
    type_into(&browser, "#manifest", &broken).await;
    click(&browser, "#apply").await;
    let error = text_of(&browser, ".error-line[data-line=\"6\"]", |t| {
        t.contains("execute.timeout")
    })
    .await;
    assert!(error.contains("line 6: execute.timeout"), "{error}");
    scroll_to(&browser, "manifest-errors").await;
    shots.take(&browser, "manifest-error").await;
    type_into(&browser, "#manifest", &broken.replace("soon", "1m")).await;
    click(&browser, "#apply").await;
    text_of(&browser, "#job-yaml", |t| t.contains("timeout: 1m")).await;
    shots.take(&browser, "job-applied").await;

    // 4. Run it on both agents; the rows appear while the page is open.
    click(&browser, "#run-link").await;
    click(&browser, "#run-check").await;
    text_of(&browser, "#run-review", |t| t.contains("every agent")).await;
    click(&browser, "#run-confirm").await;
    let run = exec_id_of(&browser).await;
    // Both started, none answered yet: the view is up, with no rows.
    text_of(&browser, "#count-started", |t| t == "2").await;
    text_of(&browser, "#exec-status", |t| t == "running").await;
    let rows_at_first = browser
        .find_all(Locator::Css("#results tbody tr"))
        .await
        .unwrap()
        .len();
    assert_eq!(rows_at_first, 0, "rows before any result");
    std::fs::write(&go, b"").unwrap();
    // The rows arrive without the page being reloaded or navigated.
    text_of(&browser, "#count-succeeded", |t| t == "2").await;
    for pc in ["pc-1", "pc-2"] {
        let exit = format!("#results tr[data-pc=\"{pc}\"] td:nth-child(2)");
        text_of(&browser, &exit, |t| t == "0").await;
    }
    assert_eq!(
        browser.current_url().await.unwrap().fragment(),
        Some(format!("/exec/{run}").as_str())
    );
    shots.take(&browser, "live-execution").await;

    // 5. A pc's output: all of it (it overflowed to the object store), as text.
    click(&browser, "#results tr[data-pc=\"pc-1\"]").await;
    let stdout = text_of(&browser, "#stdout", |t| t.contains("hi from pc-1")).await;
    assert!(
        stdout.contains("<b>not bold</b>"),
        "markup not shown as text"
    );
    assert!(!present(&browser, "#stdout b").await, "output became HTML");
    let length: u64 = browser
        .execute(
            "return document.getElementById('stdout').textContent.length",
            vec![],
        )
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    assert!(length > 300_000, "only {length} characters of output shown");
    scroll_to(&browser, "output").await;
    shots.take(&browser, "output").await;

    // 6. Kill a long run.
    browser.goto(&format!("{base}/#/run/long")).await.unwrap();
    click(&browser, "#run-check").await;
    click(&browser, "#run-confirm").await;
    let long = exec_id_of(&browser).await;
    text_of(&browser, "#count-started", |t| t == "2").await;
    click(&browser, "#kill").await;
    text_of(&browser, "#exec-status", |t| t == "cancelled").await;
    // Both agents report the killed run.
    text_of(&browser, "#results tr[data-pc=\"pc-2\"]", |t| !t.is_empty()).await;
    text_of(&browser, "#results tr[data-pc=\"pc-1\"]", |t| !t.is_empty()).await;
    assert!(
        !present(&browser, "#kill").await || {
            let kill = browser.find(Locator::Css("#kill")).await.unwrap();
            !kill.is_displayed().await.unwrap()
        }
    );
    shots.take(&browser, "killed").await;

    // 7. A gated job waits; a second user approves it.
    browser
        .goto(&format!("{base}/#/job/guarded"))
        .await
        .unwrap();
    let heading = text_of(&browser, "main h1", |t| t.contains("guarded")).await;
    assert!(!heading.is_empty());
    let description = text_of(&browser, "main .page > p", |t| t.contains("second pair")).await;
    assert!(description.contains("<img src=x id=injected>"));
    assert!(
        !present(&browser, "#injected").await,
        "a description became HTML"
    );
    browser
        .goto(&format!("{base}/#/run/guarded"))
        .await
        .unwrap();
    click(&browser, "#target-pcs").await;
    click(&browser, "input.pc-pick[value=\"pc-2\"]").await;
    click(&browser, "#run-check").await;
    click(&browser, "#run-confirm").await;
    let gated = exec_id_of(&browser).await;
    text_of(&browser, "#exec-status", |t| t == "awaiting_approval").await;
    sign_in(&browser, &base, &bob).await;
    browser.goto(&format!("{base}/#/approvals")).await.unwrap();
    text_of(
        &browser,
        &format!("#approvals-table tr[data-exec=\"{gated}\"]"),
        |t| t.contains("alice"),
    )
    .await;
    shots.take(&browser, "approval-queue").await;
    click(&browser, &format!("#approve-{gated}")).await;
    text_of(&browser, "#no-approvals", |t| t.contains("Nothing")).await;
    browser
        .goto(&format!("{base}/#/exec/{gated}"))
        .await
        .unwrap();
    text_of(&browser, "#count-succeeded", |t| t == "1").await;

    // 8. The audit trail, as the admin: intact, with what happened.
    sign_in(&browser, &base, &alice).await;
    browser.goto(&format!("{base}/#/audit")).await.unwrap();
    text_of(&browser, "#audit-chain", |t| t.contains("chain intact")).await;
    let trail = text_of(&browser, "#audit-table", |t| {
        t.contains("execution.approve")
    })
    .await;
    for (actor, action) in [
        ("bob", "execution.approve"),
        ("alice", "execution.kill"),
        ("alice", "job.exec"),
        ("alice", "job.apply"),
    ] {
        assert!(
            trail
                .lines()
                .any(|line| line.contains(actor) && line.contains(action)),
            "no {action} by {actor} in\n{trail}"
        );
    }
    shots.take(&browser, "audit").await;

    // 9. Schedules: next fires, disable, the freeze and its banner.
    post_manifest(
        &base,
        &alice,
        "/api/schedules",
        "id: nightly\njob_id: hello\nwhen:\n  calendar: {at: \"02:30\"}\ntarget:\n  groups: [lab]\ntz: utc\n",
    );
    browser.goto(&format!("{base}/#/schedules")).await.unwrap();
    let row = text_of(
        &browser,
        "#schedules-table tr[data-schedule=\"nightly\"]",
        |t| t.contains("enabled"),
    )
    .await;
    assert!(row.contains("group lab"), "{row}");
    let fires = browser
        .find_all(Locator::Css(
            "#schedules-table tr[data-schedule=\"nightly\"] td:nth-child(6) div",
        ))
        .await
        .unwrap();
    assert_eq!(fires.len(), 3, "three next fire times");
    assert!(fires[0].text().await.unwrap().contains("2:30"));
    click(&browser, "#disable-nightly").await;
    text_of(
        &browser,
        "#schedules-table tr[data-schedule=\"nightly\"]",
        |t| t.contains("disabled"),
    )
    .await;
    type_into(&browser, "#freeze-reason", "change freeze").await;
    click(&browser, "#freeze-set").await;
    text_of(&browser, "#freeze-banner", |t| t.contains("change freeze")).await;
    shots.take(&browser, "schedules-frozen").await;
    click(&browser, "#freeze-clear").await;
    text_of(&browser, "#freeze", |t| t.contains("as planned")).await;
    let started = std::time::Instant::now();
    while browser
        .find(Locator::Css("#freeze-banner"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap()
    {
        assert!(
            started.elapsed() < WAIT,
            "the banner stayed after the freeze was lifted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 10. A viewer sees no controls, and the server refuses it anyway.
    sign_in(&browser, &base, &vera).await;
    assert!(!present(&browser, "#nav-run").await);
    assert!(!present(&browser, "#nav-audit").await);
    browser.goto(&format!("{base}/#/jobs")).await.unwrap();
    text_of(&browser, "#jobs-table", |t| t.contains("hello")).await;
    assert!(!present(&browser, "#apply").await);
    browser
        .goto(&format!("{base}/#/exec/{long}"))
        .await
        .unwrap();
    text_of(&browser, "#exec-status", |t| t == "cancelled").await;
    assert!(!present(&browser, "#kill").await);
    let refused = browser
        .execute_async(
            "const done = arguments[0];
             fetch('/api/jobs/hello/exec', {method: 'POST', headers: {
               'Authorization': 'Bearer ' + sessionStorage.getItem('kanade.token'),
               'Content-Type': 'application/json'}, body: '{\"all\": true}'})
             .then((r) => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused, json!(403));

    // 11. A phone's width: nothing wider than the screen.
    browser.set_window_size(390, 844).await.unwrap();
    browser.goto(&format!("{base}/#/fleet")).await.unwrap();
    text_of(&browser, "#count-online", |t| t == "2").await;
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "page wider than a phone: {overflow}"
    );
    shots.take(&browser, "phone-fleet").await;

    browser.close().await.unwrap();
    drop(agents);
}
