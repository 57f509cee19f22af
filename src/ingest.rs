//! Ingest: the one path from raw Okta LogEvents to the journal, shared by the hook and the
//! poller.
//!
//! Each raw event is mapped once, off the async worker threads (mapping a 10 MiB delivery or a
//! 1000-event page is milliseconds of CPU: it runs on the blocking pool so the runtime keeps
//! serving meanwhile), except a hook body of at most a full Okta delivery, which maps in less
//! time than a hand-off to the pool and back costs ([`INLINE_MAP_BYTES`]). An event that does not map, or whose record would be larger than the
//! limit every gRPC client can receive (`OKTA_STREAM_MAX_EVENT_BYTES`), is quarantined — one
//! record format whatever brought it — instead of failing its batch. The batch is then
//! appended whole.
//!
//! Two steps, [`map`] then [`append`], so the poller can map its next page while the previous
//! one commits. A hook body goes through [`map_body`] instead of [`map`]:
//! the whole body is parsed once, its envelope checked (an error before
//! anything is written), and each event mapped from that one parse; then [`append`].

use std::cell::Cell;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::journal::{Appended, Batch, Journal, JournalError, NewEvent, Quarantined, StateWrite};
use crate::mapping::{self, Buffers, Delivery, DeliveryFields, EnvelopeError};

/// One LogEvent's JSON as received from the poller's page, shared, never copied.
pub type RawEvent = Bytes;

/// Why raw events could not be ingested. Nothing of the batch was committed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The runtime shut down while the events were being mapped.
    #[error("the runtime shut down while events were being mapped")]
    Cancelled,
    /// The journal could not commit the batch.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Raw events mapped and encoded, or quarantined: a batch ready to append.
#[derive(Debug, Default)]
pub struct Mapped {
    /// The events that mapped, encoded once, in the order received.
    pub events: Vec<NewEvent>,
    /// The events that did not, with the reason.
    pub quarantine: Vec<Quarantined>,
}

/// What one ingest did.
#[derive(Debug, Default)]
pub struct Ingested {
    /// The journal's answer: newly stored events and duplicates dropped.
    pub appended: Appended,
    /// How many events went to quarantine.
    pub quarantined: usize,
}

/// The `received` time of a quarantine record: RFC 3339, UTC, milliseconds, `Z`.
pub fn received_text(received: DateTime<Utc>) -> String {
    received.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Maps `raw` events on the blocking pool. Events that do not map, or whose record would be
/// larger than `max_event_bytes`, are quarantined with `origin` (where they came from) and
/// `received`.
pub async fn map(
    raw: Vec<RawEvent>,
    delivery: Delivery,
    origin: String,
    received: DateTime<Utc>,
    max_event_bytes: usize,
) -> Result<Mapped, IngestError> {
    tokio::task::spawn_blocking(move || {
        map_now(&raw, &delivery, &origin, received, max_event_bytes)
    })
    .await
    .map_err(|error| {
        if error.is_panic() {
            std::panic::resume_unwind(error.into_panic());
        }
        IngestError::Cancelled
    })
}

/// Maps on the calling thread: for callers already off the async workers (and tests).
pub fn map_now(
    raw: &[RawEvent],
    delivery: &Delivery,
    origin: &str,
    received: DateTime<Utc>,
    max_event_bytes: usize,
) -> Mapped {
    let mut mapped = Mapped {
        events: Vec::with_capacity(raw.len()),
        quarantine: Vec::new(),
    };
    let fields = DeliveryFields::new(delivery);
    for event in raw {
        let admitted = mapping::map_event_with(event, &fields)
            .map_err(|error| error.to_string())
            .and_then(|mapped| NewEvent::within(mapped.encoded, mapped.facts, max_event_bytes));
        admit(&mut mapped, admitted, event, origin, received);
    }
    mapped
}

/// Why a hook body could not be ingested. Nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is not a hook delivery (the hook answers 400 with this message).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Mapping or appending failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// A hook body mapped: the batch, and the delivery's envelope `eventId` (for logs).
#[derive(Debug)]
pub struct MappedBody {
    /// The events mapped and quarantined.
    pub mapped: Mapped,
    /// Envelope `eventId`.
    pub event_id: String,
}

/// Largest hook body mapped on the calling async worker instead of the blocking pool: Okta's
/// fullest delivery (50 events, about 100 KB) maps in a few hundred microseconds, and the two
/// thread switches of a hand-off to the pool and back cost more than they buy when the runtime
/// has a worker per core (16 senders × 50 events: 16.0 → 14.1 µs of server CPU per event,
/// BENCHMARKS.md, issue 15). A larger body holds a worker for at most about 1.5 ms here.
pub const INLINE_MAP_BYTES: usize = 256 * 1024;

/// Parses a whole (decoded) hook body once, checks its envelope, and maps each of its events
/// from that one parse: a body of at most [`INLINE_MAP_BYTES`] on the calling task, a larger
/// one on the blocking pool. `delivery` carries what the request knew (headers, `received`);
/// the envelope's `eventId`, `eventTime` and `source` are filled in from the body. A body that
/// is not an envelope is an error before anything is mapped or written.
pub async fn map_body(
    body: Bytes,
    delivery: Delivery,
    received: DateTime<Utc>,
    max_event_bytes: usize,
) -> Result<MappedBody, BodyError> {
    if body.len() <= INLINE_MAP_BYTES {
        return map_body_now(&body, delivery, received, max_event_bytes);
    }
    tokio::task::spawn_blocking(move || map_body_now(&body, delivery, received, max_event_bytes))
        .await
        .map_err(|error| {
            if error.is_panic() {
                std::panic::resume_unwind(error.into_panic());
            }
            BodyError::Ingest(IngestError::Cancelled)
        })?
}

/// [`map_body`] on the calling thread: for callers already off the async workers (and tests).
pub fn map_body_now(
    body: &[u8],
    mut delivery: Delivery,
    received: DateTime<Utc>,
    max_event_bytes: usize,
) -> Result<MappedBody, BodyError> {
    thread_local! {
        /// Parse buffers reused from body to body on this thread.
        static BUFFERS: Cell<Buffers> = Cell::default();
    }
    let mut buffers = BUFFERS.take();
    let mapped = map_envelope(body, &mut delivery, &mut buffers, received, max_event_bytes);
    if buffers.worth_keeping() {
        BUFFERS.set(buffers);
    }
    mapped
}

fn map_envelope(
    body: &[u8],
    delivery: &mut Delivery,
    buffers: &mut Buffers,
    received: DateTime<Utc>,
    max_event_bytes: usize,
) -> Result<MappedBody, BodyError> {
    let envelope = mapping::parse_envelope(body, buffers)?;
    let origin = format!(
        "hook eventId={} source={}",
        envelope.event_id, envelope.source
    );
    delivery.event_id.clone_from(&envelope.event_id);
    delivery.event_time = envelope.event_time;
    delivery.source.clone_from(&envelope.source);
    let mut mapped = Mapped {
        events: Vec::with_capacity(envelope.events.len()),
        quarantine: Vec::new(),
    };
    let fields = DeliveryFields::new(delivery);
    for event in &envelope.events {
        let admitted = envelope
            .map(event, &fields)
            .map_err(|error| error.to_string())
            .and_then(|mapped| NewEvent::within(mapped.encoded, mapped.facts, max_event_bytes));
        admit(
            &mut mapped,
            admitted,
            event.get().as_bytes(),
            &origin,
            received,
        );
    }
    Ok(MappedBody {
        mapped,
        event_id: envelope.event_id,
    })
}

/// Adds one event's outcome to `mapped`: the record, or `raw` quarantined with the reason
/// (turned into text only then: most events map, and a UTF-8 pass each would be wasted).
fn admit(
    mapped: &mut Mapped,
    admitted: Result<NewEvent, String>,
    raw: &[u8],
    origin: &str,
    received: DateTime<Utc>,
) {
    match admitted {
        Ok(event) => mapped.events.push(event),
        Err(reason) => {
            tracing::warn!(%origin, %reason, "event quarantined");
            mapped.quarantine.push(Quarantined::new(
                reason,
                &String::from_utf8_lossy(raw),
                origin.to_owned(),
                received_text(received),
            ));
        }
    }
}

/// Appends a mapped batch, with `state` in the same transaction, once it is durable.
pub async fn append(
    journal: &dyn Journal,
    mapped: Mapped,
    state: Option<StateWrite>,
) -> Result<Ingested, IngestError> {
    let quarantined = mapped.quarantine.len();
    let appended = journal
        .append(Batch {
            events: mapped.events,
            quarantine: mapped.quarantine,
            state,
        })
        .await?;
    Ok(Ingested {
        appended,
        quarantined,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawEvent {
        Bytes::copy_from_slice(json.as_bytes())
    }

    #[test]
    fn a_hook_body_is_mapped_from_one_parse_and_a_bad_envelope_maps_nothing() {
        let received = DateTime::UNIX_EPOCH;
        let body = br#"{"eventId":"e","source":"s","data":{"events":[
            {"uuid":"u-1","published":"2026-01-02T03:04:05Z"}, {"uuid":"u-2"} ]}}"#;
        let delivery = Delivery {
            ingest_source: crate::proto::IngestSource::Hook,
            ..Delivery::default()
        };
        let max = crate::journal::DEFAULT_MAX_EVENT_BYTES;
        let mapped = map_body_now(body, delivery.clone(), received, max).expect("an envelope");
        assert_eq!(mapped.event_id, "e");
        assert_eq!(mapped.mapped.events.len(), 1);
        assert_eq!(mapped.mapped.events[0].uuid(), "u-1");
        let quarantined = &mapped.mapped.quarantine;
        assert_eq!(quarantined.len(), 1);
        assert_eq!(quarantined[0].raw, r#"{"uuid":"u-2"}"#);
        assert_eq!(quarantined[0].origin, "hook eventId=e source=s");

        let not_an_envelope = map_body_now(br#"{"data": [1]}"#, delivery, received, max);
        match not_an_envelope {
            Err(BodyError::Envelope(error)) => assert_eq!(error.to_string(), "data: not an object"),
            other => panic!("expected an envelope error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn small_and_large_hook_bodies_map_alike_inline_or_on_the_blocking_pool() {
        let received = DateTime::UNIX_EPOCH;
        let max = crate::journal::DEFAULT_MAX_EVENT_BYTES;
        let body = |events: usize| {
            let events: Vec<String> = (0..events)
                .map(|i| format!(r#"{{"uuid":"u-{i}","published":"2026-01-02T03:04:05Z"}}"#))
                .collect();
            let json = format!(
                r#"{{"eventId":"e","source":"s","data":{{"events":[{},{{"published":"x"}}]}}}}"#,
                events.join(",")
            );
            Bytes::from(json)
        };
        for events in [1, 5000] {
            let body = body(events);
            assert_eq!(body.len() > INLINE_MAP_BYTES, events == 5000);
            let mapped = map_body(body, Delivery::default(), received, max)
                .await
                .expect("an envelope");
            assert_eq!(mapped.mapped.events.len(), events);
            assert_eq!(
                mapped.mapped.events[events - 1].uuid(),
                format!("u-{}", events - 1)
            );
            assert_eq!(mapped.mapped.quarantine.len(), 1);
        }
        let not_an_envelope = Bytes::from_static(br#"{"data": [1]}"#);
        let refused = map_body(not_an_envelope, Delivery::default(), received, max).await;
        assert!(
            matches!(refused, Err(BodyError::Envelope(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn an_event_that_does_not_map_is_quarantined_with_one_received_format() {
        let received = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678901234Z")
            .expect("a time")
            .with_timezone(&Utc);
        let good = r#"{"uuid":"u-1","published":"2026-01-02T03:04:05.000Z","eventType":"x"}"#;
        let mapped = map_now(
            &[raw(good), raw(r#"{"published":"2026-01-02T03:04:05Z"}"#)],
            &Delivery::default(),
            "hook eventId=e source=s",
            received,
            crate::journal::DEFAULT_MAX_EVENT_BYTES,
        );
        assert_eq!(mapped.events.len(), 1);
        assert_eq!(mapped.events[0].uuid(), "u-1");
        assert_eq!(mapped.quarantine.len(), 1);
        let quarantined = &mapped.quarantine[0];
        assert!(
            quarantined.reason.starts_with("uuid"),
            "{}",
            quarantined.reason
        );
        assert_eq!(quarantined.origin, "hook eventId=e source=s");
        assert_eq!(quarantined.received, "2026-01-02T03:04:05.678Z");
    }
}
