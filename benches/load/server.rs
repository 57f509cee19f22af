//! The server under test: the real `okta-stream serve` binary on loopback port 0.

#[allow(unused_imports)]
use super::*;

/// A running `okta-stream serve` child process (killed on drop).
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) http: SocketAddr,
    pub(crate) grpc: SocketAddr,
    /// The admin listener (`/metrics`).
    pub(crate) admin: SocketAddr,
    pub(crate) _data_dir: tempfile::TempDir,
}

impl Server {
    pub(crate) async fn start(env: &[(&str, String)]) -> Result<Server, String> {
        let data_dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("OKTA_STREAM_HTTP_ADDR", "127.0.0.1:0")
            .env("OKTA_STREAM_GRPC_ADDR", "127.0.0.1:0")
            .env("OKTA_STREAM_ADMIN_ADDR", "127.0.0.1:0")
            .env("OKTA_STREAM_DATA_DIR", data_dir.path())
            .env("OKTA_STREAM_HOOK_SECRETS", SECRET)
            .env("OKTA_STREAM_MAX_SUBSCRIBERS", "50000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary().display()))?;
        let stdout = child.stdout.take().ok_or("stdout is not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut http, mut grpc, mut admin) = (None, None, None);
        let started = tokio::time::timeout(Duration::from_secs(60), async {
            while http.is_none() || grpc.is_none() || admin.is_none() {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(addr) = line.strip_prefix("listening http=") {
                            http = addr.parse().ok();
                        } else if let Some(addr) = line.strip_prefix("listening grpc=") {
                            grpc = addr.parse().ok();
                        } else if let Some(addr) = line.strip_prefix("listening admin=") {
                            admin = addr.parse().ok();
                        }
                    }
                    _ => {
                        return Err(
                            "okta-stream exited before listening (see its stderr above)".to_owned()
                        );
                    }
                }
            }
            Ok(())
        })
        .await;
        match started {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err("okta-stream did not print its listening lines within 60 s".to_owned());
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (Some(http), Some(grpc), Some(admin)) = (http, grpc, admin) else {
            return Err("unparseable listening line".to_owned());
        };
        Ok(Server {
            child,
            http,
            grpc,
            admin,
            _data_dir: data_dir,
        })
    }

    pub(crate) fn hook_url(&self) -> String {
        format!("http://{}/okta/hook", self.http)
    }

    /// Resident set size of the server process in KiB.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    pub(crate) async fn channel(&self) -> Result<Channel, String> {
        Channel::from_shared(format!("http://{}", self.grpc))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("gRPC connect: {e}"))
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
