//! A real three-server (or n-server) JetStream cluster for tests, next to
//! [`NatsServer`](crate::test_server::NatsServer) (feature `test-server`).
//!
//! Each member listens on its own free loopback client port, routes to
//! the others on a second free port, keeps its own temporary store with
//! `sync_interval: always` (acknowledged writes are on disk first — the
//! setting whose absence Jepsen found losing acknowledged writes in NATS
//! 2.12.1), and shares one cluster name. [`NatsCluster::start`] returns
//! once JetStream answers (a meta leader is elected); members can be
//! killed (`kill -9`), stopped and restarted by index, and
//! [`NatsCluster::stream_leader`] says which member leads a stream.
//! Each member also serves its monitoring endpoints on a third loopback
//! port, so [`NatsCluster::member_serving`] can tell which member a
//! client process (an agent binary, say) is connected to, by the
//! connection name it gave.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::test_server::{find_nats_server, INSTALL_HINT};

/// The cluster name members share.
pub const CLUSTER_NAME: &str = "kanade-test";

struct Member {
    name: String,
    client_port: u16,
    route_port: u16,
    monitor_port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

/// A running cluster; every member is killed on drop.
pub struct NatsCluster {
    binary: PathBuf,
    members: Vec<Member>,
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster")
            .field("urls", &self.urls())
            .finish_non_exhaustive()
    }
}

/// `count` distinct free loopback ports: every listener is held until all
/// are bound, so no two members (or a member's two listeners) get the
/// same one.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .filter_map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.port())
        .collect()
}

impl NatsCluster {
    /// Starts `size` members and waits until JetStream answers, panicking
    /// with an install hint if there is no suitable `nats-server`. A
    /// cluster that does not elect a meta leader in time (a busy machine, a
    /// port taken meanwhile by another process) is started once more on
    /// fresh ports.
    pub async fn start(size: usize) -> Self {
        let mut last = String::new();
        for _ in 0..2 {
            match Self::try_start(size).await {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("cannot start a NATS cluster for this test: {last} ({INSTALL_HINT})")
    }

    /// Like [`start`](Self::start), returning errors.
    pub async fn try_start(size: usize) -> Result<Self, String> {
        let binary = find_nats_server()?;
        let ports = free_ports(size * 3);
        if ports.len() < size * 3 {
            return Err("no free loopback ports".into());
        }
        let mut members = Vec::new();
        for index in 0..size {
            members.push(Member {
                name: format!("n{index}"),
                client_port: ports[index * 3],
                route_port: ports[index * 3 + 1],
                monitor_port: ports[index * 3 + 2],
                store: tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?,
                child: None,
            });
        }
        let mut cluster = Self { binary, members };
        for index in 0..size {
            cluster.launch(index)?;
        }
        cluster.wait_ready(Duration::from_secs(45)).await?;
        Ok(cluster)
    }

    /// `nats://127.0.0.1:<port>` of every member, in index order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.url(i)).collect()
    }

    /// `nats://127.0.0.1:<port>` of member `index`.
    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.members[index].client_port)
    }

    /// The server name of member `index` (`n0`, `n1`, …), as JetStream
    /// reports leaders.
    pub fn name(&self, index: usize) -> &str {
        &self.members[index].name
    }

    fn config(&self, index: usize) -> String {
        let member = &self.members[index];
        let routes: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("nats-route://127.0.0.1:{}", m.route_port))
            .collect();
        format!(
            "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
             jetstream {{\n  store_dir: {store:?}\n  max_file_store: {limit}\n  sync_interval: always\n}}\n\
             cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
            name = member.name,
            client = member.client_port,
            monitor = member.monitor_port,
            store = member.store.path().join("js").display().to_string(),
            limit = crate::test_server::TEST_MAX_FILE_STORE,
            route = member.route_port,
            routes = routes.join(", "),
        )
    }

    fn launch(&mut self, index: usize) -> Result<(), String> {
        let path = self.members[index].store.path().join("server.conf");
        std::fs::write(&path, self.config(index)).map_err(|e| format!("writing config: {e}"))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        self.members[index].child = Some(child);
        Ok(())
    }

    /// Waits until JetStream answers an account-info request through the
    /// first member that accepts a connection (a meta leader exists).
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        let mut last = String::from("no member accepted a connection");
        while started.elapsed() < limit {
            for url in self.urls() {
                let Ok(client) = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_millis(500))
                    .connect(url.as_str())
                    .await
                else {
                    continue;
                };
                match async_nats::jetstream::new(client).query_account().await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("JetStream not ready within {limit:?}: {last}"))
    }

    /// Kills member `index` (SIGKILL, as a crash) and waits for it to exit.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops member `index` gracefully (SIGTERM: it leaves the cluster).
    pub fn stop(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `index` again on its ports and store, and waits until
    /// the cluster's JetStream answers.
    pub async fn restart(&mut self, index: usize) -> Result<(), String> {
        self.kill(index);
        self.launch(index)?;
        self.wait_ready(Duration::from_secs(30)).await
    }

    /// The index of the member leading `stream`, asked through any live
    /// member (`None` while there is no leader).
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for (index, member) in self.members.iter().enumerate() {
            if member.child.is_none() {
                continue;
            }
            let Ok(client) = async_nats::connect(self.url(index)).await else {
                continue;
            };
            let js = async_nats::jetstream::new(client);
            let Ok(mut handle) = js.get_stream(stream).await else {
                continue;
            };
            let Ok(info) = handle.info().await else {
                continue;
            };
            let leader = info.cluster.as_ref().and_then(|c| c.leader.clone())?;
            return self.members.iter().position(|m| m.name == leader);
        }
        None
    }
}

impl NatsCluster {
    /// The index of the live member holding a client connection named
    /// `connection_name` (the `name` a client gave when connecting), read
    /// from each member's `/connz` monitoring endpoint; `None` if no live
    /// member has one (yet).
    pub async fn member_serving(&self, connection_name: &str) -> Option<usize> {
        for (index, member) in self.members.iter().enumerate() {
            if member.child.is_none() {
                continue;
            }
            let Ok(body) = http_get(member.monitor_port, "/connz?limit=1024").await else {
                continue;
            };
            let Ok(connz) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let named = connz["connections"].as_array().is_some_and(|connections| {
                connections
                    .iter()
                    .any(|c| c["name"].as_str() == Some(connection_name))
            });
            if named {
                return Some(index);
            }
        }
        None
    }
}

/// The body of `GET path` on a loopback monitoring port (HTTP/1.0, so the
/// server closes the connection after the body).
async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "monitoring endpoint"))??;
    let response = String::from_utf8_lossy(&response);
    match response.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_owned()),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no HTTP body",
        )),
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}
