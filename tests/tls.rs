//! The HTTP API over TLS with a CA the test generates (rcgen): the CLI
//! trusting that CA gets through; without it, or trusting another CA, the
//! connection is refused; and the CLI never sends a token over plain HTTP
//! to another host.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

mod common;
use common::{free_port, workspace_binary, KillOnDrop};

/// A CA (its certificate PEM) and a server certificate for 127.0.0.1 and
/// localhost signed by it (certificate and key PEM).
fn pki(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let ca = dir.join(format!("{name}-ca.pem"));
    let cert = dir.join(format!("{name}-server.pem"));
    let key = dir.join(format!("{name}-server.key"));
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    std::fs::write(&cert, server_cert.pem()).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (ca, cert, key)
}

fn kanade(args: &[&str], token: &str) -> Output {
    Command::new(workspace_binary("kanade"))
        .args(args)
        .env("KANADE_TOKEN", token)
        .env_remove("KANADE_CA")
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("kanade-test-no-config"),
        )
        .output()
        .unwrap()
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_api_is_served_over_tls_to_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "ours");
    let (other_ca, _, _) = pki(dir.path(), "theirs");
    let db = dir.path().join("backend.db");
    let created = Command::new(workspace_binary("kanade-backend"))
        .args([
            "token", "create", "--name", "admin", "--role", "admin", "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let port = free_port();
    let _backend = KillOnDrop(
        Command::new(workspace_binary("kanade-backend"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(&db)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let server = format!("https://127.0.0.1:{port}");
    let ca_arg = ca.to_str().unwrap();
    let started = Instant::now();
    loop {
        let out = kanade(&["--server", &server, "--ca", ca_arg, "agents"], &token);
        if out.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the TLS API never answered: {}",
            said(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = kanade(&["--server", &server, "agents"], &token);
    assert!(!out.status.success(), "public roots do not know our CA");
    let out = kanade(
        &[
            "--server",
            &server,
            "--ca",
            other_ca.to_str().unwrap(),
            "agents",
        ],
        &token,
    );
    assert!(
        !out.status.success(),
        "another CA is refused: {}",
        said(&out)
    );
    // Plain HTTP to the TLS port fails too.
    let out = kanade(
        &["--server", &format!("http://127.0.0.1:{port}"), "agents"],
        &token,
    );
    assert!(!out.status.success());
}

#[test]
fn the_cli_never_sends_a_token_over_plain_http_to_another_host() {
    let out = kanade(
        &["--server", "http://10.255.255.1:8080", "agents"],
        "kanade_x",
    );
    assert!(!out.status.success());
    assert!(
        said(&out).contains("refusing to send a bearer token over plain HTTP"),
        "{}",
        said(&out)
    );
}
