//! The project's load tool: the ingest, fan-out, poller and JetStream figures of
//! `BENCHMARKS.md`, each measured beside its floor in the same run.
//!
//! Not part of the test run (a `harness = false` bench target). One command per scenario:
//!
//! ```sh
//! cargo bench --bench load -- ingest|fanout|poller|jetstream|profile|all [--secs N] [--idle N]
//!     [--backlog N] [--scale F] [--nats URL] [--users N]
//! ```
//!
//! The service runs as the real release binary (`okta-stream serve` on 127.0.0.1 port 0, a
//! fresh data dir per server), so process figures (RSS) are the server's own. Floors run in
//! this process: a no-op axum handler (HTTP floor), a private `nats-server` without JetStream
//! (fan-out floor), a plain client paging the fake Okta (poller floor). All traffic is on
//! 127.0.0.1; every loop is bounded in count and in time.

#[allow(dead_code)]
#[path = "../tests/common/fake_okta.rs"]
mod fake_okta;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use okta_stream::grpc::{Kind, SubscribeResponse};
use okta_stream::proto;
use okta_stream::proto::event_stream_client::EventStreamClient;
use prost::Message as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// The hook secret of every server this tool starts.
const SECRET: &str = "load-tool-hook-secret";
/// Subscribe streams per HTTP/2 connection (and NATS subscriptions per NATS connection).
const STREAMS_PER_CONNECTION: usize = 100;
/// How far (in events) a fan-out publisher may run ahead of the slowest subscriber. The same
/// window for ours and NATS, so neither side's buffering decides the figure.
const FANOUT_WINDOW: u64 = 1000;
/// Longest any single phase may take before it is abandoned and reported as incomplete.
const PHASE_LIMIT: Duration = Duration::from_secs(180);
/// Event type of every generated event.
const EVENT_TYPE: &str = "user.account.update_profile";

#[derive(Debug, Clone)]
struct Options {
    scenario: String,
    /// Seconds per throughput phase.
    secs: f64,
    /// Idle subscribers for the RSS figure.
    idle: usize,
    /// Poller backlog size.
    backlog: usize,
    /// Multiplier of the fan-out burst sizes.
    scale: f64,
    /// JetStream server for the `jetstream` scenario.
    nats: String,
    /// Users of the fake org in the `profile` scenario.
    users: usize,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        scenario: String::new(),
        secs: 3.0,
        idle: 10_000,
        backlog: 100_000,
        scale: 1.0,
        nats: "nats://127.0.0.1:4222".to_owned(),
        users: 100_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            // `cargo bench` passes this to every bench binary.
            "--bench" => {}
            "--secs" => {
                options.secs = value("--secs")?
                    .parse()
                    .map_err(|e| format!("--secs: {e}"))?
            }
            "--idle" => {
                options.idle = value("--idle")?
                    .parse()
                    .map_err(|e| format!("--idle: {e}"))?
            }
            "--backlog" => {
                options.backlog = value("--backlog")?
                    .parse()
                    .map_err(|e| format!("--backlog: {e}"))?
            }
            "--scale" => {
                options.scale = value("--scale")?
                    .parse()
                    .map_err(|e| format!("--scale: {e}"))?
            }
            "--nats" => options.nats = value("--nats")?,
            "--users" => {
                options.users = value("--users")?
                    .parse()
                    .map_err(|e| format!("--users: {e}"))?
            }
            "ingest" | "fanout" | "poller" | "jetstream" | "profile" | "all" => {
                options.scenario = arg
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.scenario.is_empty() {
        return Err(
            "name a scenario: ingest, fanout, poller, jetstream, profile or all".to_owned(),
        );
    }
    let secs_ok = options.secs > 0.0 && options.secs <= 120.0;
    let scale_ok = options.scale > 0.0 && options.scale <= 20.0;
    if !secs_ok || !scale_ok {
        return Err("--secs must be in (0, 120], --scale in (0, 20]".to_owned());
    }
    Ok(options)
}

fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("load: {error}");
            eprintln!(
                "usage: cargo bench --bench load -- ingest|fanout|poller|jetstream|profile|all [--secs N] [--idle N] [--backlog N] [--scale F] [--nats URL] [--users N]"
            );
            std::process::exit(64);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "# okta-stream load tool: {} ({} CPUs, load average {}, binary {})",
        options.scenario,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        binary().display()
    );
    let all = options.scenario == "all";
    let result = runtime.block_on(async {
        if all || options.scenario == "ingest" {
            ingest(&options).await?;
        }
        if all || options.scenario == "fanout" {
            fanout(&options).await?;
        }
        if all || options.scenario == "poller" {
            poller(&options).await?;
        }
        if all || options.scenario == "jetstream" {
            jetstream(&options).await?;
        }
        if all || options.scenario == "profile" {
            profile(&options).await?;
        }
        Ok::<(), String>(())
    });
    println!("\n(load average at the end: {})", load_average());
    if let Err(error) = result {
        eprintln!("load: {error}");
        std::process::exit(1);
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// The server binary: this build's, or `LOAD_OKTA_STREAM_BIN` (to compare two builds A/B).
fn binary() -> PathBuf {
    std::env::var_os("LOAD_OKTA_STREAM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_okta-stream")))
}

/// User + system CPU seconds a process has used (from `/proc/<pid>/stat`), 0 if unreadable.
fn cpu_secs(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // The kernel's USER_HZ is 100 on Linux.
    ticks / 100.0
}

// ---------------------------------------------------------------------------------------------
// The server under test: the real binary.

/// A running `okta-stream serve` child process (killed on drop).
struct Server {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
    /// The admin listener (`/metrics`).
    admin: SocketAddr,
    _data_dir: tempfile::TempDir,
}

impl Server {
    async fn start(env: &[(&str, String)]) -> Result<Server, String> {
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

    fn hook_url(&self) -> String {
        format!("http://{}/okta/hook", self.http)
    }

    /// Resident set size of the server process in KiB.
    fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    async fn channel(&self) -> Result<Channel, String> {
        Channel::from_shared(format!("http://{}", self.grpc))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("gRPC connect: {e}"))
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads: realistic `user.account.update_profile` LogEvents (~1.7 KB) in hook envelopes.

/// One LogEvent as Okta sends it, with `@UUID@` where the uuid goes.
const EVENT_JSON: &str = r#"{"uuid":"@UUID@","published":"2026-11-28T10:15:32.159Z","eventType":"user.account.update_profile","version":"0","displayMessage":"Update user profile for Okta","severity":"INFO","client":{"userAgent":{"rawUserAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36","os":"Mac OS X","browser":"CHROME"},"zone":"null","device":"Computer","id":null,"ipAddress":"198.51.100.23","geographicalContext":{"city":"Toronto","state":"Ontario","country":"Canada","postalCode":"M4M","geolocation":{"lat":43.6567,"lon":-79.34}},"ipChain":[{"ip":"198.51.100.23","geographicalContext":{"city":"Toronto","state":"Ontario","country":"Canada","postalCode":"M4M","geolocation":{"lat":43.6567,"lon":-79.34}},"version":"V4","source":null}]},"device":null,"actor":{"id":"00uz9fj5aT69fHVro1d6","type":"User","alternateId":"admin@example.com","displayName":"Admin Name","detailEntry":null},"outcome":{"result":"SUCCESS","reason":null},"target":[{"id":"00u1b2c3d4e5f6g7h8i9","type":"User","alternateId":"jane.doe@example.com","displayName":"Jane Doe","detailEntry":null}],"transaction":{"type":"WEB","id":"ZCCzm8j2wTvzwele2NwLnwAADSc","detail":{}},"debugContext":{"debugData":{"changedAttributes":"lastName,mobilePhone,title","requestId":"ZCCzm8j2wTvzwele2NwLnwAADSc","dtHash":"f59d98b2e02f1319ef4ca651f57c36e3f25507f67dd6daf0408f753896b7e8dc","requestUri":"/api/v1/users/00u1b2c3d4e5f6g7h8i9","url":"/api/v1/users/00u1b2c3d4e5f6g7h8i9?"}},"legacyEventType":"core.user.config.profile_update.success","authenticationContext":{"authenticationProvider":null,"credentialProvider":null,"credentialType":null,"issuer":null,"authenticationStep":0,"externalSessionId":"idxyNcxVX2ESsSL0u462548Qg","interface":null},"securityContext":{"asNumber":null,"asOrg":null,"isp":null,"domain":null,"isProxy":null},"insertionTimestamp":null}"#;

/// A uuid-shaped, unique id: `tag`, `lane` and `n` in hex; `n` is the last 12 digits.
fn uuid(tag: u32, lane: u16, n: u64) -> String {
    format!("{tag:08x}-{lane:04x}-4000-a000-{n:012x}")
}

/// The `n` of a [`uuid`].
fn uuid_n(uuid: &str) -> Option<u64> {
    uuid.get(24..).and_then(|n| u64::from_str_radix(n, 16).ok())
}

/// Builds hook deliveries quickly from the event template.
#[derive(Clone)]
struct Deliveries {
    before: &'static str,
    after: &'static str,
}

impl Deliveries {
    fn new() -> Self {
        let (before, after) = EVENT_JSON
            .split_once("@UUID@")
            .expect("template has a uuid slot");
        Self { before, after }
    }

    /// A delivery envelope carrying one event per uuid.
    fn body(&self, uuids: impl Iterator<Item = String>) -> Bytes {
        let mut body = String::with_capacity(2048 * 4);
        body.push_str(
            r#"{"eventType":"com.okta.event_hook","eventTypeVersion":"1.0","cloudEventsVersion":"0.1","source":"https://example.okta.com/api/v1/eventHooks/who7hphp39JoHLni81d7","eventId":""#,
        );
        body.push_str(&uuid(
            rand::random(),
            0,
            rand::random::<u64>() & 0xffff_ffff_ffff,
        ));
        body.push_str(r#"","data":{"events":["#);
        for (i, id) in uuids.enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(self.before);
            body.push_str(&id);
            body.push_str(self.after);
        }
        body.push_str(
            r#"]},"eventTime":"2026-11-28T10:15:33.093Z","contentType":"application/json"}"#,
        );
        Bytes::from(body)
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

async fn post(client: &reqwest::Client, url: &str, body: Bytes) -> Result<(), String> {
    let response = client
        .post(url)
        .header("authorization", SECRET)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", response.status()))
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics.

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

/// The outcome of one load phase.
#[derive(Default)]
struct Run {
    events: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn p(&mut self, p: f64) -> f64 {
        self.latencies.sort_unstable();
        percentile_ms(&self.latencies, p)
    }
    fn merge(&mut self, other: Run) {
        self.events += other.events;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
    }
    fn error_note(&self) -> String {
        match &self.first_error {
            Some(e) => format!("{} errors (first: {e})", self.errors),
            None => "0".to_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ingest (issue 3).

/// `senders` tasks each posting `per_delivery`-event deliveries back to back for `run_for`.
async fn closed_loop(url: &str, senders: usize, per_delivery: usize, run_for: Duration) -> Run {
    let client = http_client();
    let deliveries = Deliveries::new();
    let tag: u32 = rand::random();
    let started = Instant::now();
    let deadline = started + run_for;
    let mut tasks = Vec::new();
    for lane in 0..senders {
        let (client, deliveries, url) = (client.clone(), deliveries.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut n = 0u64;
            // Bounded in time and in count.
            while Instant::now() < deadline && n < 50_000_000 {
                let body = deliveries.body((0..per_delivery).map(|_| {
                    n += 1;
                    uuid(tag, lane as u16, n)
                }));
                let sent = Instant::now();
                match post(&client, &url, body).await {
                    Ok(()) => {
                        run.latencies.push(sent.elapsed());
                        run.events += per_delivery as u64;
                    }
                    Err(error) => {
                        run.errors += 1;
                        run.first_error.get_or_insert(error);
                    }
                }
            }
            run
        }));
    }
    let mut total = Run::default();
    for task in tasks {
        if let Ok(run) = task.await {
            total.merge(run);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Deliveries of `per_delivery` events at `per_second` deliveries/s for `run_for`, each sent on
/// its schedule whatever the previous ones do (open loop); latency from the scheduled time.
async fn open_loop(url: &str, per_delivery: usize, per_second: f64, run_for: Duration) -> Run {
    let client = http_client();
    let deliveries = Deliveries::new();
    let tag: u32 = rand::random();
    let count = (per_second * run_for.as_secs_f64()).round() as u64;
    let period = Duration::from_secs_f64(1.0 / per_second);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0u64;
    for i in 0..count {
        let due = started + period.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let body = deliveries.body((0..per_delivery).map(|_| {
            next += 1;
            uuid(tag, 0, next)
        }));
        let (client, url) = (client.clone(), url.to_owned());
        tasks.spawn(async move { post(&client, &url, body).await.map(|()| due.elapsed()) });
    }
    let mut run = Run::default();
    let _ = tokio::time::timeout(PHASE_LIMIT, async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(latency)) => {
                    run.latencies.push(latency);
                    run.events += per_delivery as u64;
                }
                Ok(Err(error)) => {
                    run.errors += 1;
                    run.first_error.get_or_insert(error);
                }
                Err(error) => {
                    run.errors += 1;
                    run.first_error.get_or_insert(error.to_string());
                }
            }
        }
    })
    .await;
    run.elapsed = started.elapsed();
    run
}

/// The HTTP floor: an axum server that reads the body and answers 204, on its own runtime
/// (two workers, like the server process) so it does not share the load generator's workers.
struct Floor {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Floor {
    fn start() -> Result<Floor, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("floor runtime");
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                async fn noop(body: Bytes) -> http::StatusCode {
                    std::hint::black_box(body.len());
                    http::StatusCode::NO_CONTENT
                }
                let router = axum::Router::new()
                    .route("/okta/hook", axum::routing::post(noop))
                    .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(Floor {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn url(&self) -> String {
        format!("http://{}/okta/hook", self.addr)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const INGEST_ROWS: [(usize, usize); 6] = [(1, 1), (16, 1), (64, 1), (1, 50), (16, 50), (64, 50)];

async fn ingest(options: &Options) -> Result<(), String> {
    let run_for = Duration::from_secs_f64(options.secs);
    println!(
        "\n## ingest (issue 3): closed loop, {:.1} s per row",
        options.secs
    );
    let server = Server::start(&[]).await?;
    let floor = Floor::start()?;
    ingest_table(&server, &floor.url(), &INGEST_ROWS, run_for).await;

    let fixed_for = run_for.max(Duration::from_secs(5));
    println!(
        "\nFixed rate 2,000 events/s, open loop, {:.0} s each (latency from the scheduled send time):\n",
        fixed_for.as_secs_f64()
    );
    println!(
        "| deliveries | ours events/s | ours p50 ms | ours p99 ms | ours max ms | floor p50 ms | floor p99 ms | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (per_delivery, per_second) in [(50usize, 40.0), (1, 2000.0)] {
        let mut ours = open_loop(&server.hook_url(), per_delivery, per_second, fixed_for).await;
        let mut base = open_loop(&floor.url(), per_delivery, per_second, fixed_for).await;
        let max = ours.p(100.0);
        println!(
            "| {per_delivery} events × {per_second}/s | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            ours.rate(),
            ours.p(50.0),
            ours.p(99.0),
            max,
            base.p(50.0),
            base.p(99.0),
            ours.error_note()
        );
    }
    drop(floor);
    server.stop().await;
    Ok(())
}

/// One table row per (senders, events per delivery): ours and, if given, the floor.
async fn ingest_table(server: &Server, floor: &str, rows: &[(usize, usize)], run_for: Duration) {
    let url = server.hook_url();
    println!();
    println!(
        "| senders | events/delivery | ours events/s | ours p50 ms | ours p99 ms | server CPU µs/event | floor events/s | floor p50 ms | floor p99 ms | ours/floor | errors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for &(senders, per_delivery) in rows {
        let cpu_before = cpu_secs(server.child.id());
        let mut ours = closed_loop(&url, senders, per_delivery, run_for).await;
        let cpu_us = (cpu_secs(server.child.id()) - cpu_before) * 1e6 / ours.events.max(1) as f64;
        let mut base = closed_loop(floor, senders, per_delivery, run_for).await;
        let (floor_rate, floor_p50, floor_p99) = (base.rate(), base.p(50.0), base.p(99.0));
        println!(
            "| {senders} | {per_delivery} | {:.0} | {:.2} | {:.2} | {cpu_us:.1} | {:.0} | {:.2} | {:.2} | {:.3} | {} |",
            ours.rate(),
            ours.p(50.0),
            ours.p(99.0),
            floor_rate,
            floor_p50,
            floor_p99,
            ours.rate() / floor_rate,
            ours.error_note()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// fanout (issue 4).

/// Nanoseconds since `base`.
fn since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// What the subscribers of one fan-out phase share with the publisher.
struct Board {
    base: Instant,
    /// Per event index: when its delivery was sent / acknowledged (ns since `base`, 0 = not yet).
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    /// Per subscriber: events received so far.
    progress: Vec<AtomicU64>,
    /// Events whose sending has started.
    published: AtomicU64,
    /// Set when the phase is abandoned.
    abort: AtomicBool,
}

impl Board {
    fn new(events: usize, subscribers: usize) -> Arc<Board> {
        Arc::new(Board {
            base: Instant::now(),
            sent: (0..events).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..events).map(|_| AtomicU64::new(0)).collect(),
            progress: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
            published: AtomicU64::new(0),
            abort: AtomicBool::new(false),
        })
    }

    fn slowest(&self) -> u64 {
        self.progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Waits until publishing `upto` events keeps within the window of the slowest subscriber.
    async fn window(&self, upto: u64, deadline: Instant) -> bool {
        while upto > self.slowest() + FANOUT_WINDOW {
            if Instant::now() > deadline || self.abort.load(Ordering::Relaxed) {
                return false;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        true
    }
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    received: u64,
    last_ns: u64,
    /// (event index, receipt ns) for sampled events.
    samples: Vec<(u64, u64)>,
    error: Option<String>,
}

/// Consumes `messages` (event indexes; `None` for heartbeats) until `expected` events arrived,
/// the stream ends, or the deadline passes.
async fn consume(
    board: Arc<Board>,
    slot: usize,
    expected: u64,
    stride: u64,
    deadline: Instant,
    mut messages: impl futures::Stream<Item = Result<Option<u64>, String>> + Unpin,
) -> Seen {
    let mut seen = Seen::default();
    while seen.received < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, messages.next()).await {
            Ok(Some(Ok(Some(n)))) => {
                let now = since(board.base);
                seen.received += 1;
                seen.last_ns = now;
                board.progress[slot].store(seen.received, Ordering::Relaxed);
                if n % stride == 0 {
                    seen.samples.push((n, now));
                }
            }
            Ok(Some(Ok(None))) => {} // a heartbeat
            Ok(Some(Err(error))) => {
                seen.error = Some(error);
                break;
            }
            Ok(None) => {
                seen.error = Some(format!(
                    "stream ended after {} of {expected}",
                    seen.received
                ));
                break;
            }
            Err(_) => {
                seen.error = Some(format!("timed out after {} of {expected}", seen.received));
                break;
            }
        }
    }
    // Let the publisher stop waiting for a subscriber that gave up.
    board.progress[slot].store(u64::MAX / 2, Ordering::Relaxed);
    seen
}

/// Opens `n` Subscribe streams (live only), ~100 per HTTP/2 connection.
async fn our_streams(
    server: &Server,
    n: usize,
) -> Result<Vec<tonic::Streaming<SubscribeResponse>>, String> {
    let mut channels = Vec::new();
    for _ in 0..n.div_ceil(STREAMS_PER_CONNECTION) {
        channels.push(server.channel().await?);
    }
    let opened: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let mut client = EventStreamClient::new(channels[i / STREAMS_PER_CONNECTION].clone())
                .max_decoding_message_size(16 << 20);
            async move {
                client
                    .subscribe(proto::EventFilter::default())
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| format!("subscribe: {s}"))
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    opened.into_iter().collect()
}

/// The leading fields of an `okta.events.v1.Event` (`cursor` = 1, `uuid` = 2); decoding it
/// skips the rest, so clients (ours and NATS's alike) spend little per message.
#[derive(Clone, PartialEq, prost::Message)]
struct EventId {
    #[prost(uint64, tag = "1")]
    cursor: u64,
    #[prost(string, tag = "2")]
    uuid: String,
}

/// The bench index of the event a Subscribe message carries (`None` for a heartbeat).
fn event_index(message: SubscribeResponse) -> Option<u64> {
    match message.kind {
        Some(Kind::Event(bytes)) => EventId::decode(bytes).ok().and_then(|id| uuid_n(&id.uuid)),
        _ => None,
    }
}

/// The figures of one fan-out phase.
struct Fanout {
    deliveries: u64,
    expected: u64,
    elapsed: Duration,
    /// Acknowledgement (ours) or publish (NATS) → receipt.
    ack_to_receipt: Vec<Duration>,
    /// Receipts that arrived before the hook acknowledgement.
    before_ack: u64,
    /// Send → receipt.
    send_to_receipt: Vec<Duration>,
    publish_errors: u64,
    subscriber_error: Option<String>,
    /// CPU seconds the server process (ours or nats-server) used during the phase.
    server_cpu: f64,
}

impl Fanout {
    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU microseconds per delivery (less sensitive to other load than the rate).
    fn cpu_us(&self) -> f64 {
        self.server_cpu * 1e6 / (self.deliveries.max(1)) as f64
    }

    fn summarise(board: &Board, seen: Vec<Seen>, expected: u64, publish_errors: u64) -> Fanout {
        let mut out = Fanout {
            deliveries: 0,
            expected,
            elapsed: Duration::ZERO,
            ack_to_receipt: Vec::new(),
            before_ack: 0,
            send_to_receipt: Vec::new(),
            publish_errors,
            subscriber_error: None,
            server_cpu: 0.0,
        };
        let first_sent = board
            .sent
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .filter(|&t| t > 0)
            .min()
            .unwrap_or(0);
        let mut last = 0;
        for s in seen {
            out.deliveries += s.received;
            last = last.max(s.last_ns);
            if out.subscriber_error.is_none() {
                out.subscriber_error = s.error;
            }
            for (n, at) in s.samples {
                let Some(i) = usize::try_from(n).ok().filter(|&i| i < board.sent.len()) else {
                    continue;
                };
                let sent = board.sent[i].load(Ordering::Relaxed);
                let acked = board.acked[i].load(Ordering::Relaxed);
                out.send_to_receipt
                    .push(Duration::from_nanos(at.saturating_sub(sent)));
                if at < acked {
                    out.before_ack += 1;
                }
                out.ack_to_receipt
                    .push(Duration::from_nanos(at.saturating_sub(acked)));
            }
        }
        out.elapsed = Duration::from_nanos(last.saturating_sub(first_sent));
        out.ack_to_receipt.sort_unstable();
        out.send_to_receipt.sort_unstable();
        out
    }
}

/// Sampling stride so that at most ~1M latency samples are kept in a phase.
fn stride(events: u64, subscribers: usize) -> u64 {
    (events * subscribers as u64 / 1_000_000).max(1)
}

#[allow(clippy::too_many_arguments)]
/// Publishes `events` hook events (index 0..events) through the server, by `senders`
/// concurrent senders of `per_delivery`-event deliveries, within the window of the slowest
/// subscriber; or, with `per_second`, one event per delivery on a fixed schedule.
async fn publish_hook(
    url: &str,
    board: Arc<Board>,
    tag: u32,
    events: u64,
    senders: usize,
    per_delivery: u64,
    per_second: Option<f64>,
    deadline: Instant,
) -> u64 {
    let client = http_client();
    let deliveries = Deliveries::new();
    let errors = Arc::new(AtomicU64::new(0));
    if let Some(per_second) = per_second {
        let period = Duration::from_secs_f64(1.0 / per_second);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..events {
            let due = started + period.mul_f64(n as f64);
            if due > deadline {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            let body = deliveries.body(std::iter::once(uuid(tag, 0, n)));
            let (client, url, board, errors) = (
                client.clone(),
                url.to_owned(),
                board.clone(),
                errors.clone(),
            );
            tasks.spawn(async move {
                board.sent[n as usize].store(since(board.base), Ordering::Relaxed);
                match post(&client, &url, body).await {
                    Ok(()) => board.acked[n as usize].store(since(board.base), Ordering::Relaxed),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        return errors.load(Ordering::Relaxed);
    }
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, deliveries, url, board, errors, next) = (
            client.clone(),
            deliveries.clone(),
            url.to_owned(),
            board.clone(),
            errors.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(per_delivery, Ordering::Relaxed);
                if start >= events {
                    return;
                }
                let end = (start + per_delivery).min(events);
                if !board.window(end, deadline).await {
                    return;
                }
                board.published.fetch_max(end, Ordering::Relaxed);
                let body = deliveries.body((start..end).map(|n| uuid(tag, 0, n)));
                let sent = since(board.base);
                for n in start..end {
                    board.sent[n as usize].store(sent, Ordering::Relaxed);
                }
                match post(&client, &url, body).await {
                    Ok(()) => {
                        let acked = since(board.base);
                        for n in start..end {
                            board.acked[n as usize].store(acked, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    errors.load(Ordering::Relaxed)
}

/// One fan-out phase through our server: `subscribers` streams, `events` events.
async fn fanout_ours(
    server: &Server,
    subscribers: usize,
    events: u64,
    per_second: Option<f64>,
) -> Result<Fanout, String> {
    let streams = our_streams(server, subscribers).await?;
    let board = Board::new(events as usize, subscribers);
    let deadline = Instant::now() + PHASE_LIMIT;
    let stride = stride(events, subscribers);
    let mut consumers = Vec::new();
    for (slot, stream) in streams.into_iter().enumerate() {
        let board = board.clone();
        let messages = stream.map(|m| {
            m.map(event_index)
                .map_err(|s| format!("stream failed: {s}"))
        });
        consumers.push(tokio::spawn(consume(
            board, slot, events, stride, deadline, messages,
        )));
    }
    let tag: u32 = rand::random();
    let cpu_before = cpu_secs(server.child.id());
    let errors = publish_hook(
        &server.hook_url(),
        board.clone(),
        tag,
        events,
        16,
        50,
        per_second,
        deadline,
    )
    .await;
    let mut seen = Vec::new();
    for consumer in consumers {
        if let Ok(s) = consumer.await {
            seen.push(s);
        }
    }
    board.abort.store(true, Ordering::Relaxed);
    let mut out = Fanout::summarise(&board, seen, events * subscribers as u64, errors);
    out.server_cpu = cpu_secs(server.child.id()) - cpu_before;
    Ok(out)
}

/// A private core NATS server (no JetStream) on a free loopback port, killed on drop.
struct NatsServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    async fn start() -> Result<NatsServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        // Generous per-connection buffers so the server never cuts a subscriber connection as a
        // slow consumer; the shared publish window bounds what is in flight anyway.
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            "max_pending: 1GB\nwrite_deadline: \"60s\"\nmax_payload: 8MB\n",
        )
        .map_err(|e| e.to_string())?;
        let bin =
            std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".to_owned());
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err("nats-server did not start within 10 s".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(NatsServer {
            child,
            url,
            _dir: dir,
        })
    }

    fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }
}

/// Encoded `SubscribeResponse`s exactly like our server sends, one per event index.
struct NatsPayload {
    event: proto::Event,
    tag: u32,
}

impl NatsPayload {
    fn bytes(&self, n: u64) -> Bytes {
        let mut event = self.event.clone();
        event.uuid = uuid(self.tag, 0, n);
        Bytes::from(SubscribeResponse::event(Bytes::from(event.encode_to_vec())).encode_to_vec())
    }
}

/// The same fan-out through core NATS: `subscribers` subscriptions, ~100 per connection.
async fn fanout_nats(
    nats: &NatsServer,
    payload: &NatsPayload,
    subscribers: usize,
    events: u64,
    per_second: Option<f64>,
) -> Result<Fanout, String> {
    let subject = format!("bench.fanout.{:08x}", rand::random::<u32>());
    let connect = || {
        async_nats::ConnectOptions::new()
            .subscription_capacity(1 << 16)
            .connect(nats.url.clone())
    };
    let mut connections = Vec::new();
    for _ in 0..subscribers.div_ceil(STREAMS_PER_CONNECTION) {
        connections.push(connect().await.map_err(|e| format!("NATS connect: {e}"))?);
    }
    let mut subs = Vec::new();
    for i in 0..subscribers {
        let sub = connections[i / STREAMS_PER_CONNECTION]
            .subscribe(subject.clone())
            .await
            .map_err(|e| format!("NATS subscribe: {e}"))?;
        subs.push(sub);
    }
    for connection in &connections {
        connection
            .flush()
            .await
            .map_err(|e| format!("NATS flush: {e}"))?;
    }
    let board = Board::new(events as usize, subscribers);
    let deadline = Instant::now() + PHASE_LIMIT;
    let stride = stride(events, subscribers);
    let mut consumers = Vec::new();
    for (slot, sub) in subs.into_iter().enumerate() {
        let board = board.clone();
        let messages = sub.map(|m| {
            SubscribeResponse::decode(m.payload)
                .map(event_index)
                .map_err(|e| format!("decode: {e}"))
        });
        consumers.push(tokio::spawn(consume(
            board, slot, events, stride, deadline, messages,
        )));
    }
    let publisher = connect().await.map_err(|e| format!("NATS connect: {e}"))?;
    let mut errors = 0u64;
    let cpu_before = cpu_secs(nats.child.id());
    let started = Instant::now();
    for n in 0..events {
        match per_second {
            Some(per_second) => {
                let due = started + Duration::from_secs_f64(n as f64 / per_second);
                if due > deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
            }
            None => {
                if !board.window(n + 1, deadline).await {
                    break;
                }
            }
        }
        let bytes = payload.bytes(n);
        let at = since(board.base);
        board.sent[n as usize].store(at, Ordering::Relaxed);
        board.acked[n as usize].store(at, Ordering::Relaxed);
        if publisher.publish(subject.clone(), bytes).await.is_err() {
            errors += 1;
        }
        if per_second.is_some() {
            let _ = publisher.flush().await;
        }
    }
    let _ = publisher.flush().await;
    let mut seen = Vec::new();
    for consumer in consumers {
        if let Ok(s) = consumer.await {
            seen.push(s);
        }
    }
    board.abort.store(true, Ordering::Relaxed);
    let mut out = Fanout::summarise(&board, seen, events * subscribers as u64, errors);
    out.server_cpu = cpu_secs(nats.child.id()) - cpu_before;
    Ok(out)
}

fn fanout_note(f: &Fanout) -> String {
    let mut note = String::new();
    if f.deliveries < f.expected {
        note.push_str(&format!("INCOMPLETE {}/{} ", f.deliveries, f.expected));
    }
    if f.publish_errors > 0 {
        note.push_str(&format!("{} publish errors ", f.publish_errors));
    }
    if let Some(e) = &f.subscriber_error {
        note.push_str(&format!("subscriber: {e}"));
    }
    if note.is_empty() {
        "ok".to_owned()
    } else {
        note
    }
}

/// Burst sizes per subscriber count (events), scaled by `--scale`.
fn burst(subscribers: usize, scale: f64) -> u64 {
    let base: u64 = match subscribers {
        1 => 50_000,
        100 => 5_000,
        _ => 2_000,
    };
    ((base as f64 * scale) as u64).max(100)
}

/// Fetches one stored event (for the NATS payload) from the server by uuid.
async fn stored_event(server: &Server) -> Result<proto::Event, String> {
    let tag: u32 = rand::random();
    let id = uuid(tag, 0, 0);
    post(
        &http_client(),
        &server.hook_url(),
        Deliveries::new().body(std::iter::once(id.clone())),
    )
    .await?;
    let mut client = EventStreamClient::new(server.channel().await?);
    client
        .get_event(proto::GetEventRequest { uuid: id })
        .await
        .map_err(|s| format!("GetEvent: {s}"))?
        .into_inner()
        .event
        .ok_or_else(|| "GetEvent returned no event".to_owned())
}

async fn fanout(options: &Options) -> Result<(), String> {
    println!(
        "\n## fanout (issue 4): burst through the hook (16 senders × 50-event deliveries, publisher at most {FANOUT_WINDOW} events ahead of the slowest subscriber), ~{STREAMS_PER_CONNECTION} streams per connection; NATS core with the same payload bytes, window and subscriber counts"
    );
    let server = Server::start(&[]).await?;
    let nats = NatsServer::start().await?;
    let event = stored_event(&server).await?;
    let payload = NatsPayload {
        tag: rand::random(),
        event,
    };
    println!(
        "\npayload: encoded SubscribeResponse of {} bytes (the server's own encoding of a ~1.7 KB LogEvent)\n",
        payload.bytes(0).len()
    );
    fanout_table(&server, &nats, &payload, &[1, 100, 1000], options.scale).await?;

    let paced_for = Duration::from_secs_f64(options.secs.max(5.0));
    let paced_events = (1000.0 * paced_for.as_secs_f64()) as u64;
    println!(
        "\nLatency at 1,000 events/s (single-event deliveries, open loop) with 100 subscribers, {:.0} s:\n",
        paced_for.as_secs_f64()
    );
    println!(
        "| system | deliveries/s | ack→receipt p50 ms | p99 ms | max ms | send→receipt p50 ms | p99 ms | receipts before ack | notes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let ours = fanout_ours(&server, 100, paced_events, Some(1000.0)).await?;
    print_paced("okta-stream", &ours);
    let theirs = fanout_nats(&nats, &payload, 100, paced_events, Some(1000.0)).await?;
    print_paced("NATS core", &theirs);

    idle_rss(options.idle, &nats).await?;
    drop(nats);
    server.stop().await;
    Ok(())
}

fn print_paced(name: &str, f: &Fanout) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
        f.rate(),
        percentile_ms(&f.ack_to_receipt, 50.0),
        percentile_ms(&f.ack_to_receipt, 99.0),
        percentile_ms(&f.ack_to_receipt, 100.0),
        percentile_ms(&f.send_to_receipt, 50.0),
        percentile_ms(&f.send_to_receipt, 99.0),
        f.before_ack,
        fanout_note(f)
    );
}

async fn fanout_table(
    server: &Server,
    nats: &NatsServer,
    payload: &NatsPayload,
    counts: &[usize],
    scale: f64,
) -> Result<(), String> {
    println!(
        "| subscribers | events | ours deliveries/s | ack→receipt p50 ms | p99 ms | server CPU µs/delivery | NATS deliveries/s | publish→receipt p50 ms | p99 ms | nats-server CPU µs/delivery | ours/NATS | notes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for &subscribers in counts {
        let events = burst(subscribers, scale);
        let ours = fanout_ours(server, subscribers, events, None).await?;
        let theirs = fanout_nats(nats, payload, subscribers, events, None).await?;
        let (rate, p50, p99, note) = (
            theirs.rate(),
            percentile_ms(&theirs.ack_to_receipt, 50.0),
            percentile_ms(&theirs.ack_to_receipt, 99.0),
            format!("NATS: {}", fanout_note(&theirs)),
        );
        println!(
            "| {subscribers} | {events} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | ours: {} {note} |",
            ours.rate(),
            percentile_ms(&ours.ack_to_receipt, 50.0),
            percentile_ms(&ours.ack_to_receipt, 99.0),
            ours.cpu_us(),
            rate,
            p50,
            p99,
            theirs.cpu_us(),
            ours.rate() / rate,
            fanout_note(&ours),
        );
    }
    Ok(())
}

/// Server RSS growth per idle Subscribe stream, on a fresh server.
async fn idle_rss(count: usize, nats: &NatsServer) -> Result<(), String> {
    let server = Server::start(&[]).await?;
    // Warm up: a few events through the hook and one stream, so lazily allocated state exists.
    stored_event(&server).await?;
    drop(our_streams(&server, 10).await?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.rss_kib().ok_or("cannot read the server's VmRSS")?;
    let started = Instant::now();
    let streams = our_streams(&server, count).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib().ok_or("cannot read the server's VmRSS")?;
    let per = (after.saturating_sub(before)) as f64 / count as f64;
    println!(
        "\nIdle subscribers: {count} streams on {} connections opened in {:.1} s; server VmRSS {before} KiB → {after} KiB = **{per:.1} KiB per idle subscriber** (target ≤ 32 KiB)",
        count.div_ceil(STREAMS_PER_CONNECTION),
        started.elapsed().as_secs_f64()
    );
    drop(streams);
    server.stop().await;

    // The same count of idle NATS subscriptions, for scale.
    let before = nats.rss_kib().ok_or("cannot read nats-server's VmRSS")?;
    let mut connections = Vec::new();
    let mut subs = Vec::new();
    for i in 0..count {
        if i % STREAMS_PER_CONNECTION == 0 {
            connections.push(
                async_nats::connect(nats.url.clone())
                    .await
                    .map_err(|e| format!("NATS connect: {e}"))?,
            );
        }
        let connection = connections.last().ok_or("no connection")?;
        subs.push(
            connection
                .subscribe(format!("bench.idle.{i}"))
                .await
                .map_err(|e| format!("NATS subscribe: {e}"))?,
        );
    }
    for connection in &connections {
        let _ = connection.flush().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = nats.rss_kib().ok_or("cannot read nats-server's VmRSS")?;
    println!(
        "NATS for comparison: {count} idle subscriptions: nats-server VmRSS {before} KiB → {after} KiB = {:.1} KiB each",
        after.saturating_sub(before) as f64 / count as f64
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// poller (issue 5).

const TOKEN: &str = "00SSWS-load-tool-token";

/// Pages through the whole backlog as a plain client would, without storing: the fake's raw
/// serving rate.
async fn raw_paging(fake: &fake_okta::FakeOkta, expected: usize) -> Result<(f64, usize), String> {
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
    Ok((events as f64 / started.elapsed().as_secs_f64(), events))
}

/// Occurrences of `"uuid"` in a page: one per LogEvent (a byte scan, cheaper than parsing).
fn count_uuid_keys(body: &[u8]) -> usize {
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

/// Drives `okta_stream::okta::Poller` in-process over an embedded journal until it holds
/// `expected` events.
async fn poller_in_process(
    fake: &fake_okta::FakeOkta,
    expected: usize,
) -> Result<(f64, u64), String> {
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
    let shared: okta_stream::journal::SharedJournal = journal.clone();
    let mut config =
        PollerConfig::new(fake.base.clone(), Credentials::ApiToken(Secret::new(TOKEN)));
    config.start = StartFrom::Since(chrono::Utc::now() - chrono::Duration::days(1));
    config.poll_interval = Duration::from_millis(200);
    let poller = Poller::new(config, shared.clone()).map_err(|e| e.to_string())?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(poller.run(shutdown.clone()));
    let head = wait_for(expected as u64, || {
        let shared = shared.clone();
        async move { shared.bounds().await.map(|b| b.head).unwrap_or(0) }
    })
    .await;
    let elapsed = started.elapsed();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    journal.close().await;
    Ok((head as f64 / elapsed.as_secs_f64(), head))
}

/// Polls `progress` every 5 ms until it reaches `expected`, stalls for 15 s, or the phase limit.
async fn wait_for<F, Fut>(expected: u64, mut progress: F) -> u64
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
async fn poller_binary(fake: &fake_okta::FakeOkta, expected: usize) -> Result<(f64, u64), String> {
    let server = Server::start(&[
        ("OKTA_ORG_URL", fake.base.clone()),
        ("OKTA_API_TOKEN", TOKEN.to_owned()),
    ])
    .await?;
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
    server.stop().await;
    Ok((count as f64 / elapsed.as_secs_f64(), count))
}

async fn poller(options: &Options) -> Result<(), String> {
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
    println!("| run | events | events/s | % of raw (mean of the raw runs) |");
    println!("|---|---:|---:|---:|");
    let (raw1, n1) = raw_paging(&fake, backlog).await?;
    let (ours, stored) = poller_in_process(&fake, backlog).await?;
    let (raw2, n2) = raw_paging(&fake, backlog).await?;
    let raw = (raw1 + raw2) / 2.0;
    println!("| raw paging (before) | {n1} | {raw1:.0} | |");
    println!(
        "| poller in-process (redb journal) | {stored} | {ours:.0} | {:.0}% |",
        100.0 * ours / raw
    );
    println!("| raw paging (after) | {n2} | {raw2:.0} | |");
    match poller_binary(&fake, backlog).await {
        Ok((rate, count)) if count as usize >= backlog => {
            println!(
                "| poller in the release binary (redb journal) | {count} | {rate:.0} | {:.0}% |",
                100.0 * rate / raw
            )
        }
        Ok((_, count)) => println!(
            "| poller in the release binary | {count} | n/a | the binary did not poll the backlog (OKTA_ORG_URL not wired in this build?) |"
        ),
        Err(error) => println!("| poller in the release binary | 0 | n/a | {error} |"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// jetstream (issue 6).

async fn jetstream(options: &Options) -> Result<(), String> {
    let run_for = Duration::from_secs_f64(options.secs);
    let stream = format!("OKTA_BENCH_{:08X}", rand::random::<u32>());
    println!(
        "\n## jetstream (issue 6): the same release binary on the embedded journal and on JetStream at {} (stream {stream}, replicas 1), rows alternating between the two",
        options.nats
    );
    let outcome = jetstream_rows(options, &stream, run_for).await;
    // Remove what this run created: the events stream, its quarantine stream and its state
    // bucket (the quarantine subject is fixed, so a leftover would block the next run).
    match async_nats::connect(options.nats.clone()).await {
        Ok(client) => {
            let js = async_nats::jetstream::new(client);
            for name in [
                stream.clone(),
                format!("{stream}_QUARANTINE"),
                format!("KV_{stream}_STATE"),
            ] {
                match js.delete_stream(&name).await {
                    Ok(_) => println!("(deleted JetStream stream {name})"),
                    Err(error) => println!("(JetStream stream {name} not deleted: {error})"),
                }
            }
        }
        Err(error) => println!(
            "\n(cannot connect to {} to delete {stream}: {error})",
            options.nats
        ),
    }
    outcome
}

async fn jetstream_rows(options: &Options, stream: &str, run_for: Duration) -> Result<(), String> {
    let embedded = Server::start(&[]).await?;
    let jetstream = Server::start(&[
        ("OKTA_STREAM_JOURNAL", options.nats.clone()),
        ("OKTA_STREAM_NATS_STREAM", stream.to_owned()),
    ])
    .await
    .map_err(|e| format!("JetStream journal: {e}"))?;
    println!("\nIngest, closed loop, {:.1} s per cell:\n", options.secs);
    println!(
        "| senders | events/delivery | embedded events/s | p50 ms | p99 ms | JetStream events/s | p50 ms | p99 ms | JetStream/embedded | errors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (senders, per_delivery) in [(1usize, 50usize), (16, 50), (64, 50), (64, 1)] {
        let mut ours = closed_loop(&embedded.hook_url(), senders, per_delivery, run_for).await;
        let mut js = closed_loop(&jetstream.hook_url(), senders, per_delivery, run_for).await;
        println!(
            "| {senders} | {per_delivery} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {} / {} |",
            ours.rate(),
            ours.p(50.0),
            ours.p(99.0),
            js.rate(),
            js.p(50.0),
            js.p(99.0),
            js.rate() / ours.rate(),
            ours.error_note(),
            js.error_note()
        );
    }
    println!("\nFan-out (burst through the hook, as in `fanout`):\n");
    println!(
        "| subscribers | events | embedded deliveries/s | ack→receipt p50 ms | p99 ms | JetStream deliveries/s | ack→receipt p50 ms | p99 ms | JetStream/embedded | notes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for subscribers in [1usize, 100, 1000] {
        let events = burst(subscribers, options.scale);
        let ours = fanout_ours(&embedded, subscribers, events, None).await?;
        let js = fanout_ours(&jetstream, subscribers, events, None).await?;
        println!(
            "| {subscribers} | {events} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {} / {} |",
            ours.rate(),
            percentile_ms(&ours.ack_to_receipt, 50.0),
            percentile_ms(&ours.ack_to_receipt, 99.0),
            js.rate(),
            percentile_ms(&js.ack_to_receipt, 50.0),
            percentile_ms(&js.ack_to_receipt, 99.0),
            js.rate() / ours.rate(),
            fanout_note(&ours),
            fanout_note(&js)
        );
    }
    embedded.stop().await;
    jetstream.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// profile (issue 13).

/// The user every generated event targets (`EVENT_JSON`).
const PROFILE_TARGET: &str = "00u1b2c3d4e5f6g7h8i9";

/// Size in bytes of every file in `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
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

/// Waits until the server's seeding sweep completed (`profile_sweeps_total` ≥ 1).
async fn sweep_done(server: &Server) -> Result<Duration, String> {
    let client = http_client();
    let started = Instant::now();
    while started.elapsed() < PHASE_LIMIT {
        let text = client
            .get(format!("http://{}/metrics", server.admin))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        if text.lines().any(|l| {
            l.strip_prefix("profile_sweeps_total ")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0)
        }) {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the seeding sweep did not complete in time".to_owned())
}

/// Hook acknowledgement p99 at 2,000 events/s with profile values off and on, and the
/// snapshot store's size and the server's memory per 100,000 users after the seeding sweep.
async fn profile(options: &Options) -> Result<(), String> {
    let run_for = Duration::from_secs_f64(options.secs).max(Duration::from_millis(500));
    println!(
        "\n## profile values (issue 13): 1-event deliveries at 2,000/s, open loop, {:.1} s each; fake org of {} users\n",
        run_for.as_secs_f64(),
        options.users
    );
    let fake = fake_okta::FakeOkta::start(fake_okta::FakeAuth::Ssws(TOKEN.to_owned())).await;
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
    fake.add_user(
        PROFILE_TARGET,
        serde_json::json!({"lastName": "Doe", "mobilePhone": "1", "title": "Engineer"}),
    );

    println!("| profile values | events/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---:|---:|---:|---:|---|");
    let off = Server::start(&[]).await?;
    let mut run = open_loop(&off.hook_url(), 1, 2000.0, run_for).await;
    let max = run.p(100.0);
    println!(
        "| off | {:.0} | {:.2} | {:.2} | {max:.2} | {} |",
        run.rate(),
        run.p(50.0),
        run.p(99.0),
        run.error_note()
    );
    off.stop().await;

    let on = Server::start(&[
        ("OKTA_ORG_URL", fake.base.clone()),
        ("OKTA_API_TOKEN", TOKEN.to_owned()),
        ("OKTA_STREAM_PROFILE_VALUES", "true".to_owned()),
        ("OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE", "1".to_owned()),
    ])
    .await?;
    let rss_before = on.rss_kib().unwrap_or(0);
    let bytes_before = dir_bytes(on._data_dir.path());
    let sweep = sweep_done(&on).await?;
    let rss_after = on.rss_kib().unwrap_or(0);
    let bytes_after = dir_bytes(on._data_dir.path());
    let mut run = open_loop(&on.hook_url(), 1, 2000.0, run_for).await;
    let max = run.p(100.0);
    println!(
        "| on (seeded) | {:.0} | {:.2} | {:.2} | {max:.2} | {} |",
        run.rate(),
        run.p(50.0),
        run.p(99.0),
        run.error_note()
    );
    let per = 100_000.0 / options.users.max(1) as f64;
    println!(
        "\nSeeding sweep of {} users: {:.1} s; journal.redb grew {:.1} MiB ({:.1} MiB per 100,000 users); \
         server RSS grew {:.1} MiB ({:.1} MiB per 100,000 users)",
        options.users,
        sweep.as_secs_f64(),
        bytes_after.saturating_sub(bytes_before) as f64 / 1_048_576.0,
        bytes_after.saturating_sub(bytes_before) as f64 / 1_048_576.0 * per,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0 * per,
    );
    on.stop().await;
    Ok(())
}
