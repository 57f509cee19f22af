//! `poller` (issue 5, issue 15): System Log catch-up against raw paging.
//!
//! Both sides page the same fake Okta (`tests/common/fake_okta.rs`, in this process, on this
//! process's runtime) through the same backlog with the same query (`limit=1000`, ascending,
//! the same `eventType` filter), one request at a time over a reused reqwest connection. Raw
//! paging only counts the events; the poller maps, encodes and durably commits them. The CPU
//! columns say where the time goes: this process runs the fake (and the raw client or the
//! in-process poller), the server column is the release binary's own CPU.

#[allow(unused_imports)]
use super::*;

pub(crate) const TOKEN: &str = "00SSWS-load-tool-token";

/// Pages through the whole backlog as a plain client would, without storing: the fake's raw
/// serving rate.
pub(crate) async fn raw_paging(
    fake: &fake_okta::FakeOkta,
    expected: usize,
) -> Result<Phase, String> {
    let client = http_client();
    let since = (chrono::Utc::now() - chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut url = reqwest::Url::parse_with_params(
        &format!("{}/api/v1/logs", fake.base),
        &[
            ("since", since.as_str()),
            ("limit", "1000"),
            ("sortOrder", "ASCENDING"),
            ("filter", &format!("eventType eq \"{EVENT_TYPE}\"")),
        ],
    )
    .map_err(|e| e.to_string())?;
    let cpu = own_cpu_secs();
    let started = Instant::now();
    let mut events = 0usize;
    for _ in 0..(expected / 1000 + 10) {
        let response = client
            .get(url.clone())
            .header("authorization", format!("SSWS {TOKEN}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let next = response
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find(|l| l.contains("rel=\"next\""))
            .and_then(|l| l.split_once('<'))
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(u, _)| u.to_owned());
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        // Count the page's events without building them: each carries one "uuid" key.
        let page = count_uuid_keys(&body);
        events += page;
        if page == 0 {
            break;
        }
        url = reqwest::Url::parse(&next.ok_or("no next link")?).map_err(|e| e.to_string())?;
    }
    Ok(Phase::new(
        events as u64,
        started.elapsed(),
        own_cpu_secs() - cpu,
        None,
    ))
}

/// CPU seconds of this process's threads named `name` (e.g. the journal's `journal-writer`).
fn thread_cpu_secs(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
            // utime and stime, in USER_HZ (100 on Linux).
            [11, 12]
                .iter()
                .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
                .sum::<f64>()
                / 100.0
        })
        .sum()
}

/// One timed phase: events done, their rate, and CPU per event.
pub(crate) struct Phase {
    events: u64,
    rate: f64,
    /// This process's CPU µs per event.
    own_cpu_us: f64,
    /// The server process's CPU µs per event, when a server did the work.
    server_cpu_us: Option<f64>,
}

impl Phase {
    fn new(events: u64, elapsed: Duration, own_cpu: f64, server_cpu: Option<f64>) -> Self {
        let per_event = |cpu: f64| 1e6 * cpu / events.max(1) as f64;
        Self {
            events,
            rate: events as f64 / elapsed.as_secs_f64(),
            own_cpu_us: per_event(own_cpu),
            server_cpu_us: server_cpu.map(per_event),
        }
    }

    /// A table row; `raw` is the mean raw rate (none for the raw rows themselves).
    fn row(&self, name: &str, raw: Option<f64>) -> String {
        let share = raw.map_or(String::new(), |raw| {
            format!("{:.0}%", 100.0 * self.rate / raw)
        });
        let server = self
            .server_cpu_us
            .map_or(String::new(), |us| format!("{us:.1}"));
        format!(
            "| {name} | {} | {:.0} | {share} | {:.1} | {server} |",
            self.events, self.rate, self.own_cpu_us
        )
    }
}

/// Occurrences of `"uuid"` in a page: one per LogEvent (a byte scan, cheaper than parsing).
pub(crate) fn count_uuid_keys(body: &[u8]) -> usize {
    const KEY: &[u8] = b"\"uuid\"";
    let mut count = 0;
    let mut i = 0;
    while i + KEY.len() <= body.len() {
        if body[i] == b'"' && body[i..].starts_with(KEY) {
            count += 1;
            i += KEY.len();
        } else {
            i += 1;
        }
    }
    count
}

/// The in-process poller's journal, timing its appends: how busy the commit stage was (the
/// append awaits the journal writer's insert and fsync).
#[derive(Debug)]
struct TimedJournal {
    inner: Arc<okta_stream::journal::embedded::RedbJournal>,
    busy_nanos: AtomicU64,
    appends: AtomicU64,
}

#[async_trait::async_trait]
impl okta_stream::journal::Journal for TimedJournal {
    async fn append(
        &self,
        batch: okta_stream::journal::Batch,
    ) -> Result<okta_stream::journal::Appended, okta_stream::journal::JournalError> {
        let started = Instant::now();
        let appended = self.inner.append(batch).await;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.appends.fetch_add(1, Ordering::Relaxed);
        appended
    }
    async fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<okta_stream::journal::SharedEvent>, okta_stream::journal::JournalError> {
        self.inner.read_after(after, limit).await
    }
    async fn read_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<okta_stream::journal::SharedEvent>, okta_stream::journal::JournalError> {
        self.inner.read_before(before, limit).await
    }
    async fn get(
        &self,
        uuid: &str,
    ) -> Result<Option<okta_stream::journal::SharedEvent>, okta_stream::journal::JournalError> {
        self.inner.get(uuid).await
    }
    async fn cursor_before_time(
        &self,
        since_micros: i64,
    ) -> Result<u64, okta_stream::journal::JournalError> {
        self.inner.cursor_before_time(since_micros).await
    }
    async fn bounds(
        &self,
    ) -> Result<okta_stream::journal::Bounds, okta_stream::journal::JournalError> {
        self.inner.bounds().await
    }
    async fn state(
        &self,
        key: &str,
    ) -> Result<Option<Vec<u8>>, okta_stream::journal::JournalError> {
        self.inner.state(key).await
    }
    async fn quarantine_page(
        &self,
        page: okta_stream::journal::QuarantinePage,
    ) -> Result<
        Vec<(
            okta_stream::journal::QuarantineId,
            okta_stream::journal::Quarantined,
        )>,
        okta_stream::journal::JournalError,
    > {
        self.inner.quarantine_page(page).await
    }
    async fn check(&self) -> Result<(), okta_stream::journal::JournalError> {
        self.inner.check().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

/// Drives `okta_stream::okta::Poller` in-process over an embedded journal until it holds
/// `expected` events.
pub(crate) async fn poller_in_process(
    fake: &fake_okta::FakeOkta,
    expected: usize,
) -> Result<Phase, String> {
    use okta_stream::journal::Retention;
    use okta_stream::journal::embedded::RedbJournal;
    use okta_stream::okta::{Credentials, Poller, PollerConfig, Secret, StartFrom};
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let journal = RedbJournal::open(
        dir.path(),
        Retention::keep_all(),
        okta_stream::hub::Hub::new(4096, 0),
    )
    .await
    .map_err(|e| e.to_string())?;
    let timed = Arc::new(TimedJournal {
        inner: journal.clone(),
        busy_nanos: AtomicU64::new(0),
        appends: AtomicU64::new(0),
    });
    let shared: okta_stream::journal::SharedJournal = timed.clone();
    let mut config =
        PollerConfig::new(fake.base.clone(), Credentials::ApiToken(Secret::new(TOKEN)));
    config.start = StartFrom::Since(chrono::Utc::now() - chrono::Duration::days(1));
    config.poll_interval = Duration::from_millis(200);
    let poller = Poller::new(config, shared.clone()).map_err(|e| e.to_string())?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cpu = own_cpu_secs();
    let writer_cpu = thread_cpu_secs("journal-writer");
    let started = Instant::now();
    let task = tokio::spawn(poller.run(shutdown.clone()));
    let head = wait_for(expected as u64, || {
        let shared = shared.clone();
        async move { shared.bounds().await.map(|b| b.head).unwrap_or(0) }
    })
    .await;
    let elapsed = started.elapsed();
    let cpu = own_cpu_secs() - cpu;
    let writer_cpu = thread_cpu_secs("journal-writer") - writer_cpu;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    journal.close().await;
    let busy = timed.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let appends = timed.appends.load(Ordering::Relaxed).max(1);
    println!(
        "(in-process commit stage: {appends} appends, {:.1} ms each on average, busy {:.0}% of the run; journal writer thread CPU {:.1} ms per append)",
        1e3 * busy / appends as f64,
        100.0 * busy / elapsed.as_secs_f64(),
        1e3 * writer_cpu / appends as f64
    );
    Ok(Phase::new(head, elapsed, cpu, None))
}

/// Polls `progress` every 5 ms until it reaches `expected`, stalls for 15 s, or the phase limit.
pub(crate) async fn wait_for<F, Fut>(expected: u64, mut progress: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let deadline = Instant::now() + PHASE_LIMIT;
    let (mut last, mut last_change) = (0, Instant::now());
    loop {
        let now = progress().await;
        if now >= expected
            || Instant::now() > deadline
            || last_change.elapsed() > Duration::from_secs(15)
        {
            return now;
        }
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The poller inside the real binary (`OKTA_ORG_URL` + `OKTA_API_TOKEN`), progress read from
/// its `/metrics` (`okta_stream_poller_events_committed`), timed from its `listening` lines.
pub(crate) async fn poller_binary(
    fake: &fake_okta::FakeOkta,
    expected: usize,
) -> Result<Phase, String> {
    let server = Server::start(&[
        ("OKTA_ORG_URL", fake.base.clone()),
        ("OKTA_API_TOKEN", TOKEN.to_owned()),
    ])
    .await?;
    let server_pid = server.child.id();
    let (cpu, server_cpu) = (own_cpu_secs(), cpu_secs(server_pid));
    let started = Instant::now();
    let client = http_client();
    let metrics = format!("http://{}/metrics", server.admin);
    let count = wait_for(expected as u64, || {
        let (client, metrics) = (client.clone(), metrics.clone());
        async move {
            let Ok(response) = client.get(&metrics).send().await else {
                return 0;
            };
            let text = response.text().await.unwrap_or_default();
            text.lines()
                .filter(|l| l.starts_with("okta_stream_poller_events_committed"))
                .filter_map(|l| l.rsplit(' ').next())
                .filter_map(|v| v.parse::<f64>().ok())
                .map(|v| v as u64)
                .sum()
        }
    })
    .await;
    let elapsed = started.elapsed();
    let (cpu, server_cpu) = (own_cpu_secs() - cpu, cpu_secs(server_pid) - server_cpu);
    server.stop().await;
    Ok(Phase::new(count, elapsed, cpu, Some(server_cpu)))
}

pub(crate) async fn poller(options: &Options) -> Result<(), String> {
    let backlog = options.backlog;
    println!(
        "\n## poller (issue 5): catch-up of a {backlog}-event backlog from the fake Okta (no rate limit, pages of 1000)\n"
    );
    let fake = fake_okta::FakeOkta::start(fake_okta::FakeAuth::Ssws(TOKEN.to_owned())).await;
    let published = (chrono::Utc::now() - chrono::Duration::minutes(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let tag: u32 = rand::random();
    for n in 0..backlog as u64 {
        fake.push(fake_okta::log_event(
            &uuid(tag, 0, n),
            EVENT_TYPE,
            &published,
        ));
    }
    println!(
        "| run | events | events/s | % of raw (mean of the raw runs) | CPU µs/event, this process (fake + client) | server CPU µs/event |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let before = raw_paging(&fake, backlog).await?;
    let ours = poller_in_process(&fake, backlog).await?;
    let after = raw_paging(&fake, backlog).await?;
    let raw = (before.rate + after.rate) / 2.0;
    println!("{}", before.row("raw paging (before)", None));
    println!(
        "{}",
        ours.row("poller in-process (redb journal)", Some(raw))
    );
    println!("{}", after.row("raw paging (after)", None));
    match poller_binary(&fake, backlog).await {
        Ok(phase) if phase.events as usize >= backlog => println!(
            "{}",
            phase.row("poller in the release binary (redb journal)", Some(raw))
        ),
        Ok(phase) => println!(
            "| poller in the release binary | {} | n/a | the binary did not poll the backlog (OKTA_ORG_URL not wired in this build?) | | |",
            phase.events
        ),
        Err(error) => println!("| poller in the release binary | 0 | n/a | {error} | | |"),
    }
    Ok(())
}
