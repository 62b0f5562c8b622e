//! The file transport: conformance, crash safety across processes,
//! cross-process CAS and delivery, torn-write recovery, bad directories.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;

use kanade_core::transport::conformance;
use kanade_core::transport::file::FileTransport;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes() {
    let dirs = std::sync::Mutex::new(Vec::new());
    let report = conformance::run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let transport = FileTransport::open(dir.path()).unwrap();
        dirs.lock().unwrap().push(dir);
        async move { Arc::new(transport) }
    })
    .await;
    println!("{report}");
    report.assert_passed();
    assert_eq!(report.skipped(), 0, "{report}");
}
