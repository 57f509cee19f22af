//! Mapping: one Okta LogEvent (JSON) plus its delivery context → the typed record.
//!
//! Pure functions, no I/O. Accepts every shape real Okta data takes (SPEC.md A.2.2, C, H):
//! members null, absent or empty, `target` null or with several entries, `ipChain` under
//! `client` or `request`, `"null"` strings, unknown enum values, numbers where strings are
//! documented, unknown extra members (kept in `event_details`). It rejects only what cannot be
//! an event — not a JSON object, no `uuid`, no parsable `published` — with an error naming the
//! field, so the hook can quarantine that one event and commit the rest of its delivery.
//!
//! The bytes are parsed once, into a flat document that borrows them (`parse`); the typed
//! fields are read out of it (`json`, `record`), and `event_details` and the other
//! `google.protobuf.Struct` fields are written from it as encoded bytes ([`EncodedStruct`]).
//! The hook's envelope is split by [`parse_envelope`], which does not map.

mod envelope;
mod json;
mod parse;
mod record;
mod time;

use std::cell::Cell;
use std::collections::BTreeMap;

use crate::proto;

pub use crate::proto::EncodedStruct;
pub use envelope::{Envelope, EnvelopeError, parse_envelope};
pub use parse::MAX_DEPTH;
pub use time::parse_rfc3339;

/// What the transport knew about a LogEvent: the hook envelope and HTTP request, or the poll.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Hook envelope `eventId` (card "Event ID"); empty for polled events.
    pub event_id: String,
    /// Hook envelope `eventTime`, or the time of the poll (card "Event Time").
    pub event_time: Option<prost_types::Timestamp>,
    /// Hook envelope `source`, or the polled org URL (card "Source").
    pub source: String,
    /// HTTP request headers of the delivery, already redacted (see [`redact_headers`]).
    pub headers: BTreeMap<String, String>,
    /// Which path brought the event.
    pub ingest_source: proto::IngestSource,
    /// When okta-stream received the delivery or page.
    pub received: Option<prost_types::Timestamp>,
}

/// Why a LogEvent could not be mapped; names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct MappingError {
    /// The JSON path of the field, e.g. `published`; `event` for the LogEvent as a whole.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// Maps one LogEvent (the JSON of one element of `data.events[]`, or of one System Log API
/// result) to the record. The cursor is left 0 for the journal to assign.
///
/// Errors (field named in [`MappingError::field`]):
/// - `event`: not JSON, not a JSON object, or nested deeper than [`MAX_DEPTH`] levels;
/// - `uuid`: missing, not a string, or empty;
/// - `published`: missing, not a string, or not an RFC 3339 date-time.
pub fn map_event(log_event: &[u8], delivery: &Delivery) -> Result<proto::Event, MappingError> {
    thread_local! {
        /// Parse buffers reused from event to event on this thread.
        static BUFFERS: Cell<parse::Buffers> = Cell::default();
    }
    let mut buffers = BUFFERS.take();
    let mapped = map_with(log_event, delivery, &mut buffers);
    if buffers.worth_keeping() {
        BUFFERS.set(buffers);
    }
    mapped
}

/// [`map_event`] with the parse buffers to use.
fn map_with(
    log_event: &[u8],
    delivery: &Delivery,
    buffers: &mut parse::Buffers,
) -> Result<proto::Event, MappingError> {
    let doc = parse::parse_object(log_event, buffers)
        .map_err(|e| MappingError {
            field: "event",
            problem: e.to_string(),
        })?
        .ok_or_else(|| MappingError {
            field: "event",
            problem: "not a JSON object".to_owned(),
        })?;
    record::map(&doc, delivery)
}

/// Copies HTTP request headers for the record (names lower-cased), replacing the values of
/// secret-bearing headers with `[REDACTED]`: `auth_header` (compared ignoring case),
/// `authorization`, `proxy-authorization`, `cookie`, `set-cookie`. A header sent several times
/// keeps every value, joined with `", "` as HTTP allows; values that are not UTF-8 are
/// converted lossily.
pub fn redact_headers(headers: &http::HeaderMap, auth_header: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        // `http` stores names in lower case already; the conversion only guards that.
        let name = name.as_str().to_ascii_lowercase();
        let secret = name.eq_ignore_ascii_case(auth_header.trim())
            || matches!(
                name.as_str(),
                "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
            );
        let value = if secret {
            REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        match out.get_mut(&name) {
            Some(existing) if secret => *existing = REDACTED.to_owned(),
            Some(existing) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            None => {
                out.insert(name, value);
            }
        }
    }
    out
}

/// What a secret header's value is replaced by in the record.
pub const REDACTED: &str = "[REDACTED]";
