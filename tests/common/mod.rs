//! Helpers shared by the cross-crate tests: finding the workspace's
//! binaries (`kanade-agent`, `kanade-backend`, `kanade`), which live in
//! other packages than these tests, so Cargo gives no `CARGO_BIN_EXE_*`.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses a part

use std::path::PathBuf;
use std::sync::Mutex;

/// The path of a workspace binary next to this test's executable
/// (`target/<profile>/<name>`). `cargo nextest run --workspace` and
/// `cargo test --workspace` build every binary first; when this test runs
/// alone and one is missing, it is built once with the same Cargo.
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    let path = profile_dir.join(name);
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "-p",
                "kanade-agent",
                "-p",
                "kanade-backend",
                "--bins",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "building the workspace binaries failed");
    }
    assert!(
        path.exists(),
        "{} is missing after building",
        path.display()
    );
    path
}
