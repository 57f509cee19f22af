//! A three-node (or any size) JetStream cluster of real `nats-server` processes for tests.
//!
//! Each node listens on free loopback ports with its own temporary store directory; the
//! processes are killed when the cluster (or a node) is dropped. [`NatsCluster::start`]
//! returns once the cluster can place a stream replicated on every node, so a test can create
//! an R3 stream at once. Include it with `#[path = "common/nats_cluster.rs"] mod nats_cluster;`.
//!
//! The binary is `$NATS_SERVER_BIN`, else `/usr/sbin/nats-server`, else `nats-server` on PATH.
//! Ports are found by binding port 0 and releasing it (nats-server cannot take a pre-bound
//! socket); another process could grab one in between, which only makes a start fail loudly.

#![allow(dead_code)] // each test target uses a different part of the helper

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// How long a cluster may take to elect its leaders.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running cluster; dropping it kills every node.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

/// One `nats-server` process of the cluster.
pub struct Node {
    /// The node's server name (`n1`, `n2`, ...), as JetStream reports leaders.
    pub name: String,
    /// Client port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether the process is still running (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return bin.into();
    }
    let system = Path::new("/usr/sbin/nats-server");
    if system.exists() {
        system.to_owned()
    } else {
        "nats-server".into()
    }
}

/// `n` distinct free ports: every listener is held until all are bound, since a port
/// released at once may come back from the next bind (a node once got the same port for its
/// clients and its routes, and could not start).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl NatsCluster {
    /// Starts `size` nodes as one JetStream cluster and waits until it can place a stream
    /// with `size` replicas.
    pub async fn start(size: usize) -> Self {
        assert!(size >= 1);
        let dir = tempfile::tempdir().unwrap();
        let free = free_ports(2 * size);
        let ports: Vec<(u16, u16)> = free.chunks(2).map(|pair| (pair[0], pair[1])).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster)| format!("\"nats-route://127.0.0.1:{cluster}\""))
            .collect();
        let mut nodes = Vec::with_capacity(size);
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let log = dir.path().join(format!("{name}.log"));
            let conf = dir.path().join(format!("{name}.conf"));
            // One node is a standalone server: a cluster of one waits for routes forever.
            let cluster = if size == 1 {
                String::new()
            } else {
                format!(
                    "cluster {{\n  name: okta-test\n  listen: \"127.0.0.1:{cluster_port}\"\n  \
                     routes: [{}]\n}}\n",
                    routes.join(", ")
                )
            };
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\n\
                     jetstream {{ store_dir: {store:?} }}\n{cluster}"
                ),
            )
            .unwrap();
            let child = Command::new(nats_server_bin())
                .arg("-c")
                .arg(&conf)
                .arg("-l")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", nats_server_bin()));
            nodes.push(Node {
                name,
                port: *port,
                log,
                child: Some(child),
            });
        }
        let cluster = Self { dir, nodes };
        if tokio::time::timeout(START_TIMEOUT, cluster.wait_ready(size))
            .await
            .is_err()
        {
            panic!("the NATS cluster did not become ready:\n{}", cluster.logs());
        }
        cluster
    }

    /// Waits until every node answers JetStream requests and an R`replicas` stream can be
    /// created (the meta leader is elected and knows every peer).
    async fn wait_ready(&self, replicas: usize) {
        let client = loop {
            match async_nats::connect(self.urls()).await {
                Ok(client) => break client,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let js = async_nats::jetstream::new(client);
        let probe = async_nats::jetstream::stream::Config {
            name: "READINESS_PROBE".to_owned(),
            subjects: vec!["readiness.probe".to_owned()],
            num_replicas: replicas,
            ..Default::default()
        };
        loop {
            if js.create_stream(probe.clone()).await.is_ok() {
                let _ = js.delete_stream("READINESS_PROBE").await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every node's client URL (including killed ones).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Kills node `name` (SIGKILL) and waits for it to exit.
    pub async fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.name == name)
            .unwrap_or_else(|| panic!("no node named {name}"));
        if let Some(mut child) = node.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}", node.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The temporary directory holding the nodes' stores, configs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
