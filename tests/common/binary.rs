//! The real `okta-stream` binary as a child process (killed on drop), found by its
//! `listening http=` / `listening grpc=` / `listening admin=` lines.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use okta_stream::proto::{self, event_stream_client::EventStreamClient};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `okta-stream serve`.
pub struct Service {
    /// The child process.
    pub child: Child,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its admin address (`/metrics`, `/healthz`, `/readyz`).
    pub admin: SocketAddr,
}

impl Service {
    /// Starts `okta-stream serve` on loopback port 0 with `data_dir` and extra environment.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_okta-stream"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("OKTA_STREAM_HTTP_ADDR", "127.0.0.1:0")
            .env("OKTA_STREAM_GRPC_ADDR", "127.0.0.1:0")
            .env("OKTA_STREAM_ADMIN_ADDR", "127.0.0.1:0")
            .env("OKTA_STREAM_DATA_DIR", data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("okta-stream starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let (mut http, mut grpc, mut admin) = (None, None, None);
        tokio::time::timeout(Duration::from_secs(30), async {
            while http.is_none() || grpc.is_none() || admin.is_none() {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("okta-stream printed its listening lines");
                if let Some(addr) = line.strip_prefix("listening http=") {
                    http = Some(addr.parse().unwrap());
                } else if let Some(addr) = line.strip_prefix("listening grpc=") {
                    grpc = Some(addr.parse().unwrap());
                } else if let Some(addr) = line.strip_prefix("listening admin=") {
                    admin = Some(addr.parse().unwrap());
                }
            }
        })
        .await
        .expect("okta-stream starts within 30 s");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Service {
            child,
            http: http.unwrap(),
            grpc: grpc.unwrap(),
            admin: admin.unwrap(),
        }
    }

    /// `kill -9`: no shutdown, no flush.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Every stored event, in cursor order, paged through `ListEvents` of the service at `grpc`.
pub async fn all_events(grpc: std::net::SocketAddr) -> Vec<proto::Event> {
    let mut client = EventStreamClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_events(proto::ListEventsRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        token = page.next_page_token;
    }
}
