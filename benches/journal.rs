//! Group-commit throughput of the embedded journal: concurrent appenders, durable commits.
//!
//! Not a criterion benchmark: the figure that matters is sustained events/s and append latency
//! under concurrency, which needs many tasks running at once for a few seconds. Run with
//! `cargo bench --bench journal` (optionally `-- SECONDS`, default 3 per scenario). The journal
//! file goes in a temporary dir under `TMPDIR` (set it to put the file on the disk you measure).

use std::sync::Arc;
use std::time::{Duration, Instant};

use okta_stream::journal::embedded::RedbJournal;
use okta_stream::journal::{Batch, Journal, NewEvent, Retention};
use okta_stream::proto;

/// Size of the `message` of each event, so an encoded event is about 2 KB.
const EVENT_PAYLOAD: usize = 2000;

/// (concurrent appenders, events per append).
const SCENARIOS: [(usize, usize); 5] = [(1, 1), (1, 50), (16, 50), (64, 50), (64, 1)];

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "| appenders | events/append | events/s | appends/s | commits | appends/commit | p50 ms | p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (senders, per_append) in SCENARIOS {
        let row = runtime.block_on(scenario(senders, per_append, Duration::from_secs(seconds)));
        println!("{row}");
    }
}

async fn scenario(senders: usize, per_append: usize, run_for: Duration) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = RedbJournal::open(
        dir.path(),
        Retention::keep_all(),
        okta_stream::hub::Hub::new(1 << 16, 0),
    )
    .await
    .expect("open journal");
    let payload = "x".repeat(EVENT_PAYLOAD);
    let started = Instant::now();
    let deadline = started + run_for;
    let mut tasks = Vec::new();
    for sender in 0..senders {
        let journal: Arc<RedbJournal> = journal.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0usize;
            while Instant::now() < deadline {
                let events = (0..per_append)
                    .map(|i| {
                        NewEvent::new(proto::Event {
                            uuid: format!("s{sender}-a{n}-e{i}"),
                            message: payload.clone(),
                            ..Default::default()
                        })
                    })
                    .collect();
                let sent = Instant::now();
                journal
                    .append(Batch {
                        events,
                        ..Default::default()
                    })
                    .await
                    .expect("append");
                latencies.push(sent.elapsed());
                n += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("appender"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let commits = journal.commits();
    journal.close().await;
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    let appends = latencies.len();
    format!(
        "| {senders} | {per_append} | {:.0} | {:.0} | {commits} | {:.1} | {:.2} | {:.2} |",
        (appends * per_append) as f64 / elapsed,
        appends as f64 / elapsed,
        appends as f64 / commits.max(1) as f64,
        pct(0.50),
        pct(0.99),
    )
}
