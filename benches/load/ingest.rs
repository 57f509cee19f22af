//! `ingest` (issue 3, issue 15): hook deliveries against an HTTP floor.

#[allow(unused_imports)]
use super::*;

/// `senders` tasks each posting `per_delivery`-event deliveries back to back for `run_for`.
pub(crate) async fn closed_loop(
    url: &str,
    senders: usize,
    per_delivery: usize,
    run_for: Duration,
) -> Run {
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
                run.record(post(&client, &url, body).await, sent, per_delivery);
            }
            run
        }));
    }
    Run::join(tasks, started).await
}

/// Deliveries of `per_delivery` events at `per_second` deliveries/s for `run_for`, each sent on
/// its schedule whatever the previous ones do (open loop); latency from the scheduled time.
pub(crate) async fn open_loop(
    url: &str,
    per_delivery: usize,
    per_second: f64,
    run_for: Duration,
) -> Run {
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
pub(crate) struct Floor {
    pub(crate) addr: SocketAddr,
    pub(crate) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl Floor {
    pub(crate) fn start() -> Result<Floor, String> {
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

    pub(crate) fn url(&self) -> String {
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

pub(crate) const INGEST_ROWS: [(usize, usize); 6] =
    [(1, 1), (16, 1), (64, 1), (1, 50), (16, 50), (64, 50)];

pub(crate) async fn ingest(options: &Options) -> Result<(), String> {
    let run_for = Duration::from_secs_f64(options.secs);
    println!(
        "\n## ingest (issue 3): closed loop, {:.1} s per row",
        options.secs
    );
    let server = Server::start(&[]).await?;
    let floor = Floor::start()?;
    let peer = Peer::start().await?;
    println!(
        "\npeer: {} with JetStream on file storage, sync_interval always, Nats-Msg-Id dedupe, one {}-byte LogEvent per message",
        peer.version,
        EVENT_JSON.len() + 30
    );
    ingest_table(&server, &floor.url(), Some(&peer), &INGEST_ROWS, run_for).await;
    drop(peer);

    fixed_rate(&server, &floor.url(), run_for).await;
    drop(floor);
    server.stop().await;
    Ok(())
}

/// Open-loop phases at 2,000 events/s (50-event and one-event deliveries): the hook
/// acknowledgement latency from each delivery's scheduled send time, ours beside the floor.
pub(crate) async fn fixed_rate(server: &Server, floor: &str, run_for: Duration) {
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
        let mut base = open_loop(floor, per_delivery, per_second, fixed_for).await;
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
}

/// One table row per (senders, events per delivery): ours, the floor and, if given, the
/// JetStream peer, each row's three runs back to back so they share the machine's load.
pub(crate) async fn ingest_table(
    server: &Server,
    floor: &str,
    peer: Option<&Peer>,
    rows: &[(usize, usize)],
    run_for: Duration,
) {
    let url = server.hook_url();
    println!();
    println!(
        "| senders | events/delivery | ours events/s | ours p50 ms | ours p99 ms | server CPU µs/event | floor events/s | floor p50 ms | ours/floor | peer msgs/s | peer p50 ms | peer p99 ms | nats-server CPU µs/msg | ours/peer | errors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for &(senders, per_delivery) in rows {
        let cpu_before = cpu_secs(server.child.id());
        let mut ours = closed_loop(&url, senders, per_delivery, run_for).await;
        let cpu_us = (cpu_secs(server.child.id()) - cpu_before) * 1e6 / ours.events.max(1) as f64;
        let mut base = closed_loop(floor, senders, per_delivery, run_for).await;
        let (floor_rate, floor_p50) = (base.rate(), base.p(50.0));
        let peer_cells = match peer {
            Some(peer) => {
                let cpu_before = cpu_secs(peer.nats.child.id());
                let mut theirs = peer.closed_loop(senders, per_delivery, run_for).await;
                let peer_cpu_us = (cpu_secs(peer.nats.child.id()) - cpu_before) * 1e6
                    / theirs.events.max(1) as f64;
                format!(
                    "{:.0} | {:.2} | {:.2} | {peer_cpu_us:.1} | {:.2} | {} / {}",
                    theirs.rate(),
                    theirs.p(50.0),
                    theirs.p(99.0),
                    ours.rate() / theirs.rate(),
                    ours.error_note(),
                    theirs.error_note()
                )
            }
            None => format!("- | - | - | - | - | {}", ours.error_note()),
        };
        println!(
            "| {senders} | {per_delivery} | {:.0} | {:.2} | {:.2} | {cpu_us:.1} | {:.0} | {:.2} | {:.3} | {peer_cells} |",
            ours.rate(),
            ours.p(50.0),
            ours.p(99.0),
            floor_rate,
            floor_p50,
            ours.rate() / floor_rate,
        );
    }
}
