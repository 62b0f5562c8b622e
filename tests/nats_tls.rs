//! NATS over TLS with a CA the test generates (rcgen), the server requiring
//! client certificates: the kanade transport with a certificate from that
//! CA connects and works; without a certificate, or with one from another
//! CA, it is refused.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use kanade::core::transport::{Headers, Transport};
use kanade::nats::test_server::NatsServer;
use kanade::nats::{NatsOptions, NatsTransport, TlsOptions};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA and a certificate it issued (for `names`), written as PEM files:
/// (ca, cert, key).
struct Pki {
    ca: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        Pki {
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

async fn connect(
    url: &str,
    ca: &Path,
    client: Option<(PathBuf, PathBuf)>,
) -> Result<NatsTransport, String> {
    let mut options = NatsOptions::new(url);
    options.tls = TlsOptions {
        required: true,
        root_certificates: Some(ca.to_path_buf()),
        client_certificate: client,
    };
    options.request_timeout = Duration::from_secs(3);
    tokio::time::timeout(Duration::from_secs(10), NatsTransport::connect(options))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_with_a_certificate_from_the_fleet_ca_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Pki::new(dir.path(), "ours");
    let theirs = Pki::new(dir.path(), "theirs");
    let (server_cert, server_key) = ours.issue(dir.path(), "server", &["127.0.0.1", "localhost"]);
    let agent = ours.issue(dir.path(), "agent", &["pc-001"]);
    let stranger = theirs.issue(dir.path(), "stranger", &["pc-666"]);
    let server = NatsServer::start_with_config(&format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 3\n}}\n",
        server_cert.display().to_string(),
        server_key.display().to_string(),
        ours.ca.display().to_string(),
    ));
    let url = server.url();

    let transport = connect(&url, &ours.ca, Some(agent)).await.unwrap();
    let log = transport.messages();
    let mut sub = log.subscribe("tls.check").await.unwrap();
    log.publish("tls.check", Headers::new(), Bytes::from_static(b"over tls"))
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.payload.as_ref(), b"over tls");

    let refused = connect(&url, &ours.ca, None).await;
    assert!(refused.is_err(), "no client certificate must be refused");
    let refused = connect(&url, &ours.ca, Some(stranger)).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA must be refused"
    );
    // A client that does not trust the fleet CA refuses the server.
    let refused = connect(&url, &theirs.ca, None).await;
    assert!(refused.is_err());
}
