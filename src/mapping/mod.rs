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
//! `google.protobuf.Struct` fields are written from it as encoded bytes, straight into the
//! record's encoding (`record`, `wire`): no `Event` of owned strings is built.
//! A hook body is parsed once as a whole by [`parse_envelope`]; each of its events is then
//! mapped from that parse ([`Envelope::map`]), never scanned again.

mod delivery;
mod envelope;
mod error;
mod json;
mod parse;
mod record;
mod time;
mod uuid;
mod wire;

use std::cell::Cell;

pub use crate::proto::EncodedStruct;
pub use delivery::{Delivery, DeliveryFields, REDACTED, is_secret_header, redact_headers};
pub use envelope::{Envelope, EnvelopeError, LogEvent, parse_envelope};
pub use error::MappingError;
pub use parse::{Buffers, MAX_BODY_DEPTH, MAX_DEPTH, MAX_INPUT_BYTES};
pub use record::MappedEvent;
pub use time::parse_rfc3339;
pub use uuid::{MAX_UUID_BYTES, check_uuid};

/// Maps one LogEvent (the JSON of one element of `data.events[]`, or of one System Log API
/// result) to the record.
///
/// Errors (field named in [`MappingError::field`]):
/// - `event`: not JSON, not a JSON object, or nested deeper than [`MAX_DEPTH`] levels;
/// - `uuid`: missing, not a string, blank, or longer than [`MAX_UUID_BYTES`] bytes;
/// - `published`: missing, not a string, or not an RFC 3339 date-time.
pub fn map_event(log_event: &[u8], delivery: &Delivery) -> Result<MappedEvent, MappingError> {
    map_event_with(log_event, &DeliveryFields::new(delivery))
}

/// [`map_event`] for one of several events of a delivery, whose fields are encoded once.
pub fn map_event_with(
    log_event: &[u8],
    delivery: &DeliveryFields,
) -> Result<MappedEvent, MappingError> {
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

/// [`map_event_with`] with the parse buffers to use.
fn map_with(
    log_event: &[u8],
    delivery: &DeliveryFields,
    buffers: &mut parse::Buffers,
) -> Result<MappedEvent, MappingError> {
    let doc = parse::parse_object(log_event, buffers)
        .map_err(|e| MappingError {
            field: "event",
            problem: e.to_string(),
        })?
        .ok_or_else(|| MappingError {
            field: "event",
            problem: "not a JSON object".to_owned(),
        })?;
    record::map(doc.root(), delivery)
}
