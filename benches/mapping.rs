//! Mapping throughput against its floor, measured in the same run (issue 2).
//!
//! Workload: every LogEvent of the sample files in `tests/fixtures/` (the events of each hook
//! delivery and each line of the NDJSON files), concatenated. One iteration processes the whole
//! workload.
//! - `floor`: `serde_json::from_slice::<serde_json::Value>` of each event's bytes;
//! - `map_encode`: `map_event_with` of each event (JSON bytes in, the encoded record out; the
//!   mapping writes the protobuf bytes as it reads, and the delivery's fields are encoded once,
//!   as the hook and the poller do);
//! - the whole hook body: `body_floor` (`serde_json::Value` of each sample delivery, as is)
//!   against `hook_body` (`ingest::map_body_now`: the body parsed once, envelope checked, each
//!   event mapped and encoded, or quarantined).
//!
//! Throughput is reported in bytes of LogEvent JSON; events/s = events per iteration / time.
//! - `load_body`: one delivery of 50 copies of the load tool's LogEvent, the 16 × 50 row's
//!   body, through the same path as `hook_body`; before criterion runs, the fastest of 200
//!   batches of 50 deliveries is printed in µs per event.
//!
//! Run: `cargo bench --bench mapping`; the ratio is map_encode throughput / floor throughput.
//!
//! Before criterion runs, the bench also prints an interleaved measurement: floor and
//! map_encode alternate for many rounds and the fastest round of each is kept. On a shared
//! machine that ratio is steadier than criterion's, whose benches run one after the other.

/// The allocator the service runs with, so the figures are the service's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use okta_stream::ingest::map_body_now;
use okta_stream::journal::DEFAULT_MAX_EVENT_BYTES;
use okta_stream::mapping::{Buffers, Delivery, DeliveryFields, map_event_with, parse_envelope};
use okta_stream::proto::IngestSource;

/// The sample LogEvents, each as its own JSON bytes. Events the mapping rejects (Okta's doc
/// sample with the impossible date 2017-09-31) are left out so both sides do the same work.
fn workload() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .map(|entry| entry.expect("readable directory").path())
        // Only the sample files: `tests/fixtures/` also holds directories of other fixtures.
        .filter(|path| path.is_file())
        .collect();
    names.sort();
    let mut events = Vec::new();
    for path in names {
        let text = std::fs::read(&path).expect("readable fixture");
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let mut buffers = Buffers::default();
                let envelope = parse_envelope(&text, &mut buffers).expect("fixture is an envelope");
                events.extend(envelope.events.iter().map(|e| e.get().as_bytes().to_vec()));
            }
            Some("ndjson") => events.extend(
                text.split(|&b| b == b'\n')
                    .filter(|line| !line.is_empty())
                    .map(<[u8]>::to_vec),
            ),
            _ => {}
        }
    }
    let delivery = delivery();
    events.retain(|e| map_event_with(e, &DeliveryFields::new(&delivery)).is_ok());
    events
}

/// The sample hook deliveries (`tests/fixtures/*.json`), each a whole body.
fn bodies() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|path| std::fs::read(path).expect("readable fixture"))
        .collect()
}

/// A hook delivery context like the real one in the CruGlobal sample.
fn delivery() -> Delivery {
    Delivery {
        event_id: "c0ce732a-4933-4141-bcd5-a11e761cf90b".to_owned(),
        event_time: Some(prost_types::Timestamp {
            seconds: 1_638_206_297,
            nanos: 410_000_000,
        }),
        source: "https://signon.okta.com/api/v1/eventHooks/who1hzk33c2pxL1Yl0h8".to_owned(),
        headers: [
            ("accept", "application/json"),
            ("authorization", "[REDACTED]"),
            ("content-type", "application/json"),
            (
                "user-agent",
                "Okta Hook Service v1.0.0 - who1hzk33c2pxL1Yl0h8",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ingest_source: IngestSource::Hook,
        received: Some(prost_types::Timestamp {
            seconds: 1_638_206_297,
            nanos: 500_000_000,
        }),
    }
}

fn mapping(c: &mut Criterion) {
    let events = workload();
    let delivery = delivery();
    let fields = DeliveryFields::new(&delivery);
    let bytes: usize = events.iter().map(Vec::len).sum();
    let encoded: usize = events
        .iter()
        .map(|e| map_event_with(e, &fields).expect("maps").encoded.len())
        .sum();
    eprintln!(
        "workload: {} events, {bytes} bytes of JSON in, {encoded} bytes of protobuf out",
        events.len()
    );

    interleaved(&events, &fields);

    let mut group = c.benchmark_group("mapping");
    group
        .throughput(Throughput::Bytes(bytes as u64))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("floor", |b| b.iter(|| floor_pass(&events)));
    group.bench_function("map_encode", |b| {
        b.iter(|| map_encode_pass(&events, &fields))
    });
    group.finish();

    let bodies = bodies();
    let body_bytes: usize = bodies.iter().map(Vec::len).sum();
    eprintln!(
        "hook bodies: {} deliveries, {body_bytes} bytes",
        bodies.len()
    );
    interleaved_bodies(&bodies, &delivery);
    let load_body = [load_body(LOAD_BODY_EVENTS)];
    fastest_batch(&load_body, &delivery);
    let mut group = c.benchmark_group("load_body");
    group
        .throughput(Throughput::Elements(LOAD_BODY_EVENTS as u64))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("hook_body_50", |b| {
        b.iter(|| hook_body_pass(&load_body, &delivery))
    });
    group.finish();
    let mut group = c.benchmark_group("hook_body");
    group
        .throughput(Throughput::Bytes(body_bytes as u64))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("body_floor", |b| b.iter(|| floor_pass(&bodies)));
    group.bench_function("hook_body", |b| {
        b.iter(|| hook_body_pass(&bodies, &delivery))
    });
    group.finish();
}

/// Events in the load tool's delivery: the 16 × 50 row's.
const LOAD_BODY_EVENTS: usize = 50;

/// A delivery of `events` copies of the load tool's LogEvent (`benches/load/payload.rs`, read
/// from its source so the two stay the same), each with its own uuid.
fn load_body(events: usize) -> Vec<u8> {
    let source = include_str!("load/payload.rs");
    let template = source
        .split_once("EVENT_JSON: &str = r#\"")
        .and_then(|(_, rest)| rest.split_once("\"#;"))
        .expect("the load tool's payload.rs holds EVENT_JSON")
        .0;
    let events: Vec<String> = (0..events)
        .map(|n| template.replace("@UUID@", &format!("00000007-0000-4000-a000-{n:012x}")))
        .collect();
    format!(
        r#"{{"eventType":"com.okta.event_hook","eventTypeVersion":"1.0","eventId":"e","data":{{"events":[{}]}},"eventTime":"2026-11-28T10:15:33.093Z"}}"#,
        events.join(",")
    )
    .into_bytes()
}

/// The load tool's delivery mapped in batches of 50, printing the fastest batch per event:
/// on a shared machine the fastest of many short batches is steadier than a mean, and two
/// builds compare by running this bench alternately.
fn fastest_batch(body: &[Vec<u8>], delivery: &Delivery) {
    const BATCHES: usize = 200;
    const DELIVERIES_PER_BATCH: usize = 50;
    let mut fastest = Duration::MAX;
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..DELIVERIES_PER_BATCH {
            hook_body_pass(body, delivery);
        }
        fastest = fastest.min(start.elapsed());
    }
    let events = DELIVERIES_PER_BATCH * body.len() * LOAD_BODY_EVENTS;
    eprintln!(
        "load tool delivery, fastest of {BATCHES} batches of {DELIVERIES_PER_BATCH}: {:.3} us per event",
        fastest.as_secs_f64() * 1e6 / events as f64
    );
}

/// One pass of the hook's whole-body path over the sample deliveries.
fn hook_body_pass(bodies: &[Vec<u8>], delivery: &Delivery) {
    let received = chrono::DateTime::UNIX_EPOCH;
    for body in bodies {
        let mapped = map_body_now(
            black_box(body),
            delivery.clone(),
            received,
            DEFAULT_MAX_EVENT_BYTES,
        );
        black_box(mapped.ok());
    }
}

/// Whole-body floor and hook path alternating, fastest of `ROUNDS` rounds each.
fn interleaved_bodies(bodies: &[Vec<u8>], delivery: &Delivery) {
    const ROUNDS: usize = 3000;
    let mut floor = Duration::MAX;
    let mut hook = Duration::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        floor_pass(bodies);
        floor = floor.min(start.elapsed());
        let start = Instant::now();
        hook_body_pass(bodies, delivery);
        hook = hook.min(start.elapsed());
    }
    eprintln!(
        "interleaved, fastest of {ROUNDS} rounds: body_floor {floor:?}, hook_body {hook:?}, \
         ratio {:.2}",
        floor.as_secs_f64() / hook.as_secs_f64()
    );
}

/// One pass of the floor over the workload.
fn floor_pass(events: &[Vec<u8>]) {
    for event in events {
        black_box(serde_json::from_slice::<serde_json::Value>(black_box(event)).ok());
    }
}

/// One pass of the mapping (JSON bytes in, protobuf bytes out) over the workload.
fn map_encode_pass(events: &[Vec<u8>], delivery: &DeliveryFields) {
    for event in events {
        black_box(map_event_with(black_box(event), delivery).ok());
    }
}

/// Floor and mapping alternating, fastest of `ROUNDS` rounds each (see the module doc).
fn interleaved(events: &[Vec<u8>], delivery: &DeliveryFields) {
    const ROUNDS: usize = 3000;
    let mut floor = Duration::MAX;
    let mut mapping = Duration::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        floor_pass(events);
        floor = floor.min(start.elapsed());
        let start = Instant::now();
        map_encode_pass(events, delivery);
        mapping = mapping.min(start.elapsed());
    }
    eprintln!(
        "interleaved, fastest of {ROUNDS} rounds: floor {floor:?}, map_encode {mapping:?}, \
         ratio {:.2}",
        floor.as_secs_f64() / mapping.as_secs_f64()
    );
}

criterion_group!(benches, mapping);
criterion_main!(benches);
