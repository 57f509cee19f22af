//! Ingest: the one path from raw Okta LogEvents to the journal, shared by the hook and the
//! poller.
//!
//! Each raw event is mapped once, off the async worker threads (mapping a 10 MiB delivery or a
//! 1000-event page is milliseconds of CPU: it runs on the blocking pool so the runtime keeps
//! serving meanwhile). An event that does not map, or whose record would be larger than the
//! limit every gRPC client can receive (`OKTA_STREAM_MAX_EVENT_BYTES`), is quarantined — one
//! record format whatever brought it — instead of failing its batch. The batch is then
//! appended whole.
//!
//! Two steps, [`map`] then [`append`], so the poller can map its next page while the previous
//! one commits; [`ingest`] is both in a row, as the hook uses it.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::value::RawValue;

use crate::journal::{
    Appended, Batch, Journal, JournalError, NewEvent, Quarantined, SharedJournal, StateWrite,
};
use crate::mapping::{self, Delivery};

/// One LogEvent's JSON as received: a slice of the hook body or of the poller's page, shared,
/// never copied.
pub type RawEvent = Bytes;

/// A raw event borrowed from `buffer` as a shared slice of it (no copy); copied only if it is
/// not in fact part of `buffer`.
pub fn raw_event_in(buffer: &Bytes, event: &RawValue) -> RawEvent {
    let part = event.get().as_bytes();
    let start = buffer.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    if at >= start && at + part.len() <= start + buffer.len() {
        buffer.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// A raw event that owns its JSON (a System Log page's element), without copying it.
pub fn raw_event_owned(event: Box<RawValue>) -> RawEvent {
    Bytes::from(String::from(Box::<str>::from(event)))
}

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
    for event in raw {
        let admitted = mapping::map_event(event, delivery)
            .map_err(|error| error.to_string())
            .and_then(|record| NewEvent::within(record, max_event_bytes));
        match admitted {
            Ok(event) => mapped.events.push(event),
            Err(reason) => {
                tracing::warn!(%origin, %reason, "event quarantined");
                mapped.quarantine.push(Quarantined::new(
                    reason,
                    &String::from_utf8_lossy(event),
                    origin.to_owned(),
                    received_text(received),
                ));
            }
        }
    }
    mapped
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

/// Maps `raw` events off the async workers, quarantines those that do not map (or are too
/// large), and appends the batch: [`map`] then [`append`].
pub async fn ingest(
    journal: &SharedJournal,
    raw: Vec<RawEvent>,
    delivery: Delivery,
    origin: String,
    received: DateTime<Utc>,
    max_event_bytes: usize,
) -> Result<Ingested, IngestError> {
    let mapped = map(raw, delivery, origin, received, max_event_bytes).await?;
    append(journal.as_ref(), mapped, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawEvent {
        Bytes::copy_from_slice(json.as_bytes())
    }

    #[test]
    fn a_raw_event_shares_the_buffer_it_was_found_in() {
        let body = Bytes::from_static(br#"{"events":[{"uuid":"a"}]}"#);
        #[derive(serde::Deserialize)]
        struct Body<'a> {
            #[serde(borrow)]
            events: Vec<&'a RawValue>,
        }
        let parsed: Body<'_> = serde_json::from_slice(&body).expect("valid JSON");
        let event = raw_event_in(&body, parsed.events[0]);
        assert_eq!(&event[..], br#"{"uuid":"a"}"#);
        assert_eq!(
            event.as_ptr(),
            body[11..].as_ptr(),
            "a slice of the body, not a copy"
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
