//! Writes the upgrade fixtures under `tests/fixtures/upgrade/`: a journal as *this* version of
//! okta-stream stores it, for `tests/upgrade.rs` to open with every later version.
//!
//! ```text
//! cargo run --example upgrade_fixtures -- tests/fixtures/upgrade
//! ```
//!
//! It writes three things into the given directory (replacing what is there):
//! - `embedded/journal.redb`: the embedded journal, written through `RedbJournal`;
//! - `jetstream/`: the store directory of a private `nats-server` (started here on a free
//!   loopback port with `-js -sd`, stopped with SIGTERM so it flushes) after the same batches
//!   went through `NatsJournal`;
//! - `expected.ndjson`: one line per event, `{"cursor", "uuid", "encoded"}` with the stored
//!   record (base64), which both journals must still serve at the same cursors.
//!
//! The events are the documented LogEvent examples under `tests/fixtures/`, each stored twice
//! times under derived uuids, with fixed delivery times so a rerun writes the same records. One
//! batch also carries the quarantined examples and the poller's state, as real batches do. Retention
//! is a century, so the fixture never ages out of a test. Needs `nats-server` (on `PATH`, at
//! `/usr/sbin/nats-server`, or `$NATS_SERVER_BIN`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use okta_stream::hub::Hub;
use okta_stream::journal::embedded::RedbJournal;
use okta_stream::journal::nats::{NatsConfig, NatsJournal};
use okta_stream::journal::{
    Batch, DEFAULT_MAX_EVENT_BYTES, Journal, NewEvent, Quarantined, Retention, StateWrite,
};
use okta_stream::mapping::{Delivery, map_event};
use okta_stream::proto;

/// Events per appended batch.
const BATCH: usize = 8;
/// How many times each example event is stored (under a derived uuid).
const COPIES: usize = 2;
/// A century: the fixture's events must never be removed by retention.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "tests/fixtures/upgrade".to_owned()),
    );
    let batches = batches()?;
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;

    let expected = write_embedded(&out.join("embedded"), batches.clone()).await?;
    let from_nats = write_jetstream(&out.join("jetstream"), batches).await?;
    if from_nats != expected {
        return Err("the JetStream journal assigned other cursors than the embedded one".into());
    }
    let mut lines = String::new();
    for (cursor, uuid, encoded) in &expected {
        let line = serde_json::json!({
            "cursor": cursor,
            "uuid": uuid,
            "encoded": base64::engine::general_purpose::STANDARD.encode(encoded),
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    std::fs::write(out.join("expected.ndjson"), lines)?;
    println!("wrote {} events to {}", expected.len(), out.display());
    Ok(())
}

/// What a journal stored: cursor, uuid and encoded record of each event.
type Stored = Vec<(u64, String, Vec<u8>)>;

/// The example LogEvents, mapped as hook deliveries with fixed times, in batches.
fn batches() -> Result<Vec<Batch>, Error> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut log_events = Vec::new();
    for file in [
        "okta-developer-docs__logevent_examples.ndjson",
        "okta-management-openapi-spec__ListLogs_examples.ndjson",
    ] {
        let text = std::fs::read_to_string(fixtures.join(file))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            log_events.push(serde_json::from_str::<serde_json::Value>(line)?);
        }
    }
    let mut events = Vec::new();
    let mut refused = Vec::new();
    for copy in 0..COPIES {
        for (n, log_event) in log_events.iter().enumerate() {
            let mut log_event = log_event.clone();
            log_event["uuid"] = format!("upgrade-fixture-{copy}-{n:02}").into();
            let delivery = Delivery {
                event_id: format!("delivery-{copy}-{n:02}"),
                event_time: Some(timestamp(1_767_225_600 + (copy * 100 + n) as i64)),
                source: "https://example.okta.com/api/v1/eventHooks/who8mgiqsz1F2DHsg0g3".into(),
                headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
                ingest_source: proto::IngestSource::Hook,
                received: Some(timestamp(1_767_225_601 + (copy * 100 + n) as i64)),
            };
            let raw = serde_json::to_string(&log_event)?;
            // An example the mapper refuses (one has a 31 September) is quarantined, as the
            // hook does.
            match map_event(raw.as_bytes(), &delivery) {
                Ok(mapped) => events.push(NewEvent::within(
                    mapped.encoded,
                    mapped.facts,
                    DEFAULT_MAX_EVENT_BYTES,
                )?),
                Err(error) => refused.push(Quarantined {
                    reason: error.to_string(),
                    raw,
                    origin: format!("delivery {}", delivery.event_id),
                    received: "2026-01-01T00:00:00Z".to_owned(),
                    // 0.1.0 did not record it (entries it wrote read back with 0).
                    raw_bytes: 0,
                }),
            }
        }
    }
    let mut batches: Vec<Batch> = events
        .chunks(BATCH)
        .map(|chunk| Batch {
            events: chunk.to_vec(),
            ..Batch::default()
        })
        .collect();
    if let Some(last) = batches.last_mut() {
        last.quarantine = refused;
        last.state = Some(StateWrite {
            key: "poller.next_url".to_owned(),
            value: b"https://example.okta.com/api/v1/logs?after=upgrade-fixture".to_vec(),
        });
    }
    Ok(batches)
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// Appends `batches` to `journal` and reads every event back.
async fn append_all(journal: &dyn Journal, batches: Vec<Batch>) -> Result<Stored, Error> {
    for batch in batches {
        journal.append(batch).await?;
    }
    Ok(journal
        .read_after(0, 10_000)
        .await?
        .iter()
        .map(|e| (e.cursor(), e.uuid().to_owned(), e.encoded.to_vec()))
        .collect())
}

async fn write_embedded(dir: &Path, batches: Vec<Batch>) -> Result<Stored, Error> {
    let journal = RedbJournal::open(dir, Retention::keep_all(), Hub::new(1024, 0)).await?;
    let stored = append_all(journal.as_ref(), batches).await?;
    journal.close().await;
    Ok(stored)
}

async fn write_jetstream(dir: &Path, batches: Vec<Batch>) -> Result<Stored, Error> {
    let work = tempfile::tempdir()?;
    let store = work.path().join("store");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = NatsServer::start(&store, port)?;
    let url = format!("nats://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let defaults = NatsConfig::from_url(&url)?;
    let config = NatsConfig {
        max_age: CENTURY,
        // The subject `okta-stream serve` uses (src/app.rs), so the binary opens this stream.
        subject: format!("okta_stream.{}", defaults.stream),
        ..defaults
    };
    let journal = NatsJournal::open(config, Hub::new(1024, 0)).await?;
    let stored = append_all(journal.as_ref(), batches).await?;
    journal.close().await;
    drop(journal);
    server.stop()?;
    copy_dir(&store, dir)?;
    Ok(stored)
}

/// A private `nats-server`, stopped (SIGTERM, then waited for) by [`NatsServer::stop`] or on drop.
struct NatsServer(Child);

impl NatsServer {
    fn start(store: &Path, port: u16) -> Result<Self, Error> {
        let bin = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let system = Path::new("/usr/sbin/nats-server");
                system.exists().then(|| system.to_owned())
            })
            .unwrap_or_else(|| "nats-server".into());
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self(child))
    }

    fn stop(&mut self) -> Result<(), Error> {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
