//! `fanout` (issue 4, issue 15): deliveries to many subscribers against NATS core.

#[allow(unused_imports)]
use super::*;

/// Nanoseconds since `base`.
pub(crate) fn since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// What the subscribers of one fan-out phase share with the publisher.
pub(crate) struct Board {
    pub(crate) base: Instant,
    /// Per event index: when its delivery was sent / acknowledged (ns since `base`, 0 = not yet).
    pub(crate) sent: Vec<AtomicU64>,
    pub(crate) acked: Vec<AtomicU64>,
    /// Per subscriber: events received so far.
    pub(crate) progress: Vec<AtomicU64>,
    /// Events whose sending has started.
    pub(crate) published: AtomicU64,
    /// Set when the phase is abandoned.
    pub(crate) abort: AtomicBool,
}

impl Board {
    pub(crate) fn new(events: usize, subscribers: usize) -> Arc<Board> {
        Arc::new(Board {
            base: Instant::now(),
            sent: (0..events).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..events).map(|_| AtomicU64::new(0)).collect(),
            progress: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
            published: AtomicU64::new(0),
            abort: AtomicBool::new(false),
        })
    }

    pub(crate) fn slowest(&self) -> u64 {
        self.progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Waits until publishing `upto` events keeps within the window of the slowest subscriber.
    pub(crate) async fn window(&self, upto: u64, deadline: Instant) -> bool {
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
pub(crate) struct Seen {
    pub(crate) received: u64,
    pub(crate) last_ns: u64,
    /// (event index, receipt ns) for sampled events.
    pub(crate) samples: Vec<(u64, u64)>,
    pub(crate) error: Option<String>,
}

/// Consumes `messages` (event indexes; `None` for heartbeats) until `expected` events arrived,
/// the stream ends, or the deadline passes.
pub(crate) async fn consume(
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
pub(crate) async fn our_streams(
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
pub(crate) struct EventId {
    #[prost(uint64, tag = "1")]
    pub(crate) cursor: u64,
    #[prost(string, tag = "2")]
    pub(crate) uuid: String,
}

/// The bench index of the event a Subscribe message carries (`None` for a heartbeat).
pub(crate) fn event_index(message: SubscribeResponse) -> Option<u64> {
    match message.kind {
        Some(Kind::Event(bytes)) => EventId::decode(bytes).ok().and_then(|id| uuid_n(&id.uuid)),
        _ => None,
    }
}

/// The figures of one fan-out phase.
pub(crate) struct Fanout {
    pub(crate) deliveries: u64,
    pub(crate) expected: u64,
    pub(crate) elapsed: Duration,
    /// Acknowledgement (ours) or publish (NATS) → receipt.
    pub(crate) ack_to_receipt: Vec<Duration>,
    /// Receipts that arrived before the hook acknowledgement.
    pub(crate) before_ack: u64,
    /// Send → receipt.
    pub(crate) send_to_receipt: Vec<Duration>,
    pub(crate) publish_errors: u64,
    pub(crate) subscriber_error: Option<String>,
    /// CPU seconds the server process (ours or nats-server) used during the phase.
    pub(crate) server_cpu: f64,
    /// CPU seconds this process (publisher and subscribers) used during the phase.
    pub(crate) tool_cpu: f64,
}

impl Fanout {
    pub(crate) fn rate(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU microseconds per delivery (less sensitive to other load than the rate).
    pub(crate) fn cpu_us(&self) -> f64 {
        self.server_cpu * 1e6 / (self.deliveries.max(1)) as f64
    }

    /// This process's CPU microseconds per delivery: what its clients spent on each.
    pub(crate) fn tool_cpu_us(&self) -> f64 {
        self.tool_cpu * 1e6 / (self.deliveries.max(1)) as f64
    }

    pub(crate) fn summarise(
        board: &Board,
        seen: Vec<Seen>,
        expected: u64,
        publish_errors: u64,
    ) -> Fanout {
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
            tool_cpu: 0.0,
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
pub(crate) fn stride(events: u64, subscribers: usize) -> u64 {
    (events * subscribers as u64 / 1_000_000).max(1)
}

#[allow(clippy::too_many_arguments)]
/// Publishes `events` hook events (index 0..events) through the server, by `senders`
/// concurrent senders of `per_delivery`-event deliveries, within the window of the slowest
/// subscriber; or, with `per_second`, one event per delivery on a fixed schedule.
pub(crate) async fn publish_hook(
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
pub(crate) async fn fanout_ours(
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
    let tool_before = own_cpu_secs();
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
    out.tool_cpu = own_cpu_secs() - tool_before;
    Ok(out)
}

/// A private core NATS server (no JetStream) on a free loopback port, killed on drop.
pub(crate) struct NatsServer {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) _dir: tempfile::TempDir,
}

impl NatsServer {
    /// NATS core (no JetStream): `NATS_SERVER_BIN` or Debian's `/usr/sbin/nats-server`.
    pub(crate) async fn start() -> Result<NatsServer, String> {
        let bin =
            std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".to_owned());
        NatsServer::start_with(&bin, |_| String::new()).await
    }

    /// A private server from `bin` on a free loopback port; `extra` returns more configuration
    /// given the server's temp dir (e.g. a JetStream block storing there).
    pub(crate) async fn start_with(
        bin: &str,
        extra: impl FnOnce(&std::path::Path) -> String,
    ) -> Result<NatsServer, String> {
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
            format!(
                "max_pending: 1GB\nwrite_deadline: \"60s\"\nmax_payload: 8MB\n{}",
                extra(dir.path())
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = Command::new(bin)
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
                return Err(format!("{bin} did not start within 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(NatsServer {
            child,
            url,
            _dir: dir,
        })
    }

    pub(crate) fn rss_kib(&self) -> Option<u64> {
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
pub(crate) struct NatsPayload {
    pub(crate) event: proto::Event,
    pub(crate) tag: u32,
}

impl NatsPayload {
    pub(crate) fn bytes(&self, n: u64) -> Bytes {
        let mut event = self.event.clone();
        event.uuid = uuid(self.tag, 0, n);
        Bytes::from(SubscribeResponse::event(Bytes::from(event.encode_to_vec())).encode_to_vec())
    }
}

/// The same fan-out through core NATS: `subscribers` subscriptions, ~100 per connection.
pub(crate) async fn fanout_nats(
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
    let tool_before = own_cpu_secs();
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
    out.tool_cpu = own_cpu_secs() - tool_before;
    Ok(out)
}

pub(crate) fn fanout_note(f: &Fanout) -> String {
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
pub(crate) fn burst(subscribers: usize, scale: f64) -> u64 {
    let base: u64 = match subscribers {
        1 => 50_000,
        100 => 5_000,
        _ => 2_000,
    };
    ((base as f64 * scale) as u64).max(100)
}

/// Fetches one stored event (for the NATS payload) from the server by uuid.
pub(crate) async fn stored_event(server: &Server) -> Result<proto::Event, String> {
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

/// Our server, a NATS core server, and the payload NATS carries: one stored event as our
/// server encodes it.
async fn fanout_servers() -> Result<(Server, NatsServer, NatsPayload), String> {
    let server = Server::start(&[]).await?;
    let nats = NatsServer::start().await?;
    let event = stored_event(&server).await?;
    let payload = NatsPayload {
        tag: rand::random(),
        event,
    };
    Ok((server, nats, payload))
}

pub(crate) async fn fanout(options: &Options) -> Result<(), String> {
    println!(
        "\n## fanout (issue 4): burst through the hook (16 senders × 50-event deliveries, publisher at most {FANOUT_WINDOW} events ahead of the slowest subscriber), ~{STREAMS_PER_CONNECTION} streams per connection; NATS core with the same payload bytes, window and subscriber counts"
    );
    let (server, nats, payload) = fanout_servers().await?;
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

/// `fanout --subscribers`: only the given table rows, with both servers' pids printed.
pub(crate) async fn fanout_rows(options: &Options, counts: &[usize]) -> Result<(), String> {
    let (server, nats, payload) = fanout_servers().await?;
    println!(
        "\n## fanout rows {counts:?} (scale {}): okta-stream pid {}, nats-server pid {}\n",
        options.scale,
        server.child.id().unwrap_or(0),
        nats.child.id().unwrap_or(0)
    );
    fanout_table(&server, &nats, &payload, counts, options.scale).await?;
    drop(nats);
    server.stop().await;
    Ok(())
}

pub(crate) fn print_paced(name: &str, f: &Fanout) {
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

pub(crate) async fn fanout_table(
    server: &Server,
    nats: &NatsServer,
    payload: &NatsPayload,
    counts: &[usize],
    scale: f64,
) -> Result<(), String> {
    println!(
        "| subscribers | events | ours deliveries/s | ack→receipt p50 ms | p99 ms | server CPU µs/delivery | NATS deliveries/s | publish→receipt p50 ms | p99 ms | nats-server CPU µs/delivery | ours/NATS | load tool CPU µs/delivery, ours / NATS | notes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
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
            "| {subscribers} | {events} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | ours: {} {note} |",
            ours.rate(),
            percentile_ms(&ours.ack_to_receipt, 50.0),
            percentile_ms(&ours.ack_to_receipt, 99.0),
            ours.cpu_us(),
            rate,
            p50,
            p99,
            theirs.cpu_us(),
            ours.rate() / rate,
            ours.tool_cpu_us(),
            theirs.tool_cpu_us(),
            fanout_note(&ours),
        );
    }
    Ok(())
}

/// Server RSS growth per idle Subscribe stream, on a fresh server.
pub(crate) async fn idle_rss(count: usize, nats: &NatsServer) -> Result<(), String> {
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
