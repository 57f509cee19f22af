//! `profile` (issue 13): hook p99 with profile values on and off; snapshot store size.

#[allow(unused_imports)]
use super::*;

/// The user every generated event targets (`EVENT_JSON`).
pub(crate) const PROFILE_TARGET: &str = "00u1b2c3d4e5f6g7h8i9";

/// Size in bytes of every file in `dir`.
pub(crate) fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The server's counter of completed sweeps (the metrics registry prefixes every name with
/// `okta_stream_`; a counter gets `_total`).
const SWEEPS_METRIC: &str = "okta_stream_profile_sweeps_total";

/// The value of the sample `name` (no labels) in a Prometheus text exposition.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// Waits until the server's seeding sweep completed (`okta_stream_profile_sweeps_total` ≥ 1).
/// On timeout the error carries the server's sweep counters, so it says how far it got.
pub(crate) async fn sweep_done(server: &Server) -> Result<Duration, String> {
    let client = http_client();
    let started = Instant::now();
    let mut text = String::new();
    while started.elapsed() < PHASE_LIMIT {
        text = client
            .get(format!("http://{}/metrics", server.admin))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        if metric(&text, SWEEPS_METRIC).is_some_and(|v| v >= 1.0) {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sweep_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("okta_stream_profile_sweep"))
        .collect();
    Err(format!(
        "the seeding sweep did not complete within {} s; the server's sweep metrics: {}",
        PHASE_LIMIT.as_secs(),
        if sweep_lines.is_empty() {
            "none (is the feature on?)".to_owned()
        } else {
            sweep_lines.join(", ")
        }
    ))
}

/// The statuses an update event can be released with (`okta_stream_profile_events_*_total`).
const STATUS_METRICS: [&str; 4] = [
    "okta_stream_profile_events_complete_total",
    "okta_stream_profile_events_no_baseline_total",
    "okta_stream_profile_events_newer_than_event_total",
    "okta_stream_profile_events_unavailable_total",
];

/// Waits until the server released `events` update events with their values (any status);
/// returns how long that took, or `None` if it did not within [`PHASE_LIMIT`].
pub(crate) async fn values_attached(server: &Server, events: u64) -> Option<Duration> {
    let client = http_client();
    let started = Instant::now();
    while started.elapsed() < PHASE_LIMIT {
        let text = client
            .get(format!("http://{}/metrics", server.admin))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let released: f64 = STATUS_METRICS.iter().filter_map(|m| metric(&text, m)).sum();
        if released >= events as f64 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The fake Okta on a runtime of its own (one worker thread): the stage's reads it serves
/// then never hold up the measuring client's tasks on the tool's runtime (sharing it, every
/// read delayed the client's sends and the timing of their answers).
pub(crate) struct SeparateFake {
    fake: Option<fake_okta::FakeOkta>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl SeparateFake {
    pub(crate) fn start(auth: fake_okta::FakeAuth) -> Result<Self, String> {
        // A runtime cannot be started from a thread inside another one: build it elsewhere.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("fake-okta")
                .enable_all()
                .build()
                .map_err(|e| format!("fake Okta runtime: {e}"))?;
            let fake = runtime.block_on(fake_okta::FakeOkta::start(auth));
            Ok(Self {
                fake: Some(fake),
                runtime: Some(runtime),
            })
        })
        .join()
        .map_err(|_| "starting the fake Okta panicked".to_owned())?
    }
}

impl std::ops::Deref for SeparateFake {
    type Target = fake_okta::FakeOkta;

    fn deref(&self) -> &Self::Target {
        self.fake.as_ref().expect("present until dropped")
    }
}

impl Drop for SeparateFake {
    fn drop(&mut self) {
        // The server task first (aborted on drop), then its runtime without blocking here.
        drop(self.fake.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Hook acknowledgement p99 at 2,000 events/s with profile values off and on, and the
/// snapshot store's size and the server's memory per 100,000 users after the seeding sweep.
pub(crate) async fn profile(options: &Options) -> Result<(), String> {
    let run_for = Duration::from_secs_f64(options.secs).max(Duration::from_millis(500));
    println!(
        "\n## profile values (issue 13): 1-event deliveries at 2,000/s, open loop, {:.1} s each; fake org of {} users\n",
        run_for.as_secs_f64(),
        options.users
    );
    let fake = SeparateFake::start(fake_okta::FakeAuth::Ssws(TOKEN.to_owned()))?;
    // The target first: the fake finds a user by a scan from the front, and every read the
    // stage makes is of this user (with it last, each read scanned the whole org).
    fake.add_user(
        PROFILE_TARGET,
        serde_json::json!({"lastName": "Doe", "mobilePhone": "1", "title": "Engineer"}),
    );
    fake.add_users((0..options.users).map(|i| {
        (
            format!("00u{i:017}"),
            serde_json::json!({
                "login": format!("user{i}@example.com"),
                "email": format!("user{i}@example.com"),
                "firstName": "Jane",
                "lastName": format!("Doe{i}"),
                "title": "Engineer",
                "department": "R&D",
                "mobilePhone": "+1 555 0100",
            }),
        )
    }));

    println!(
        "| profile values | events/s | p50 ms | p99 ms | max ms | server CPU µs/event | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    let off = Server::start(&[]).await?;
    let cpu = cpu_secs(off.child.id());
    let mut run = open_loop(&off.hook_url(), 1, 2000.0, run_for).await;
    let cpu = cpu_secs(off.child.id()) - cpu;
    let rss_off = off.rss_kib().unwrap_or(0);
    let max = run.p(100.0);
    println!(
        "| off | {:.0} | {:.2} | {:.2} | {max:.2} | {:.1} | {} |",
        run.rate(),
        run.p(50.0),
        run.p(99.0),
        cpu * 1e6 / run.events.max(1) as f64,
        run.error_note()
    );
    off.stop().await;

    let starting = Instant::now();
    let mut on = Server::start(&[
        ("OKTA_ORG_URL", fake.base.clone()),
        ("OKTA_API_TOKEN", TOKEN.to_owned()),
        ("OKTA_STREAM_PROFILE_VALUES", "true".to_owned()),
        ("OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE", "1".to_owned()),
    ])
    .await?;
    let rss_before = on.rss_kib().unwrap_or(0);
    let bytes_before = dir_bytes(on._data_dir.path());
    sweep_done(&on).await?;
    // From the start of the process: the sweep starts with it.
    let sweep = starting.elapsed();
    let rss_after = on.rss_kib().unwrap_or(0);
    let bytes_after = dir_bytes(on._data_dir.path());
    let cpu = cpu_secs(on.child.id());
    let mut run = open_loop(&on.hook_url(), 1, 2000.0, run_for).await;
    // The values are attached after the acknowledgement: count their work too.
    let attached = values_attached(&on, run.events).await;
    let cpu = cpu_secs(on.child.id()) - cpu;
    let max = run.p(100.0);
    println!(
        "| on (seeded) | {:.0} | {:.2} | {:.2} | {max:.2} | {:.1} | {} |",
        run.rate(),
        run.p(50.0),
        run.p(99.0),
        cpu * 1e6 / run.events.max(1) as f64,
        run.error_note()
    );
    match attached {
        Some(after) => println!(
            "\nValues attached to all {} update events {:.2} s after the last acknowledgement \
             (CPU of \"on\" counted until then)",
            run.events,
            after.as_secs_f64()
        ),
        None => println!(
            "\nValues were not attached to all {} update events within {} s",
            run.events,
            PHASE_LIMIT.as_secs()
        ),
    }
    let rss_end = on.rss_kib().unwrap_or(0);
    // Stopped (as by kill -9) but with its data dir kept, so the file can be opened here.
    let _ = on.child.kill().await;
    let _ = on.child.wait().await;
    let table = snapshot_table(&on._data_dir.path().join("journal.redb"));
    on.stop().await;

    let per = 100_000.0 / options.users.max(1) as f64;
    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    println!(
        "Seeding sweep of {} users: done {:.1} s after the server started",
        options.users,
        sweep.as_secs_f64()
    );
    match table {
        Ok(t) => println!(
            "Snapshot store (redb table profile_snapshots): {} entries, {:.1} MiB of keys and values, \
             {:.1} MiB with page metadata and fragmentation ({:.1} MiB per 100,000 users)",
            t.entries,
            mib(t.stored),
            mib(t.total()),
            mib(t.total()) * per
        ),
        Err(error) => println!("Snapshot store: cannot read its table: {error}"),
    }
    println!(
        "journal.redb grew {:.1} MiB during the sweep ({:.1} MiB per 100,000 users)",
        mib(bytes_after.saturating_sub(bytes_before)),
        mib(bytes_after.saturating_sub(bytes_before)) * per,
    );
    println!(
        "Server RSS: {:.1} MiB at start, {:.1} MiB after the sweep (+{:.1} MiB, {:.1} MiB per 100,000 users), \
         {:.1} MiB after the 2,000/s run (with the feature off: {:.1} MiB after the same run)",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0 * per,
        rss_end as f64 / 1024.0,
        rss_off as f64 / 1024.0,
    );
    Ok(())
}

/// The size of the snapshot table in a journal file no process has open.
pub(crate) struct TableSize {
    entries: u64,
    /// Bytes of keys and values.
    stored: u64,
    metadata: u64,
    fragmented: u64,
}

impl TableSize {
    fn total(&self) -> u64 {
        self.stored + self.metadata + self.fragmented
    }
}

/// Reads the size of `profile_snapshots` (user id → stored snapshot) in the journal at `path`.
pub(crate) fn snapshot_table(path: &std::path::Path) -> Result<TableSize, String> {
    use redb::{ReadableDatabase as _, ReadableTableMetadata as _, TableHandle as _};
    let db = redb::Database::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let handle = txn
        .list_tables()
        .map_err(|e| e.to_string())?
        .find(|t| t.name() == "profile_snapshots")
        .ok_or("no table profile_snapshots")?;
    let table = txn.open_untyped_table(handle).map_err(|e| e.to_string())?;
    let stats = table.stats().map_err(|e| e.to_string())?;
    Ok(TableSize {
        entries: table.len().map_err(|e| e.to_string())?,
        stored: stats.stored_bytes(),
        metadata: stats.metadata_bytes(),
        fragmented: stats.fragmented_bytes(),
    })
}
