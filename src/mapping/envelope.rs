//! The hook delivery envelope: split a POST body into its LogEvents without mapping them.
//!
//! Okta wraps the LogEvents of a delivery in a CloudEvents 0.1 style envelope (SPEC.md A.2.2):
//! `{"eventType":"com.okta.event_hook","eventId":…,"eventTime":…,"source":…,"data":{"events":[…]}}`.
//! Splitting is kept apart from mapping on purpose: one LogEvent that cannot be mapped is
//! quarantined by the hook while the rest of the delivery is committed, so only a body that is
//! not an envelope at all is rejected here (the hook answers 400 naming what is wrong).

use std::borrow::Cow;
use std::collections::HashMap;

use prost_types::Timestamp;
use serde_json::value::RawValue;

use super::time::parse_rfc3339;

/// A delivery split into its parts. The events borrow from the body and are still JSON.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// Envelope `eventId` (or the early spelling `eventID`); empty when absent or not a string.
    pub event_id: String,
    /// Envelope `eventTime`. `None` when absent *or unparsable*: the delivery time is
    /// informational, so a malformed one must not cost the events of the delivery.
    pub event_time: Option<Timestamp>,
    /// Envelope `source` (`https://{org}/api/v1/eventHooks/{hookId}`); empty when absent.
    pub source: String,
    /// The elements of `data.events[]` (or of a bare body's `events[]`), in order, unparsed
    /// beyond checking that each is valid JSON.
    pub events: Vec<&'a RawValue>,
}

/// Why a body is not a hook delivery. The message names what is wrong; the hook sends it back
/// with status 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body does not parse as JSON.
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// The body is JSON, but not an object.
    #[error("body is not a JSON object")]
    NotAnObject,
    /// A member the envelope needs is missing or has the wrong type.
    #[error("{field}: {problem}")]
    Field {
        /// The JSON path of the member, e.g. `data.events`.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// The members of a JSON object, values left unparsed. Keys are `Cow` because a key written
/// with escapes cannot borrow from the body.
type Members<'a> = HashMap<Cow<'a, str>, &'a RawValue>;

/// Splits a hook POST body into envelope fields and raw LogEvents.
///
/// Accepts the CloudEvents envelope with `data.events[]`, the early spelling `eventID`, and a
/// bare `{"events":[…]}` body without an envelope. Envelope members of an unexpected type
/// (e.g. a numeric `eventId`) read as empty rather than failing the delivery; an unparsable
/// `eventTime` reads as `None`. Errors: the body is not JSON, not an object, or has no
/// `data.events` (nor `events`) array.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let top: Members<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => EnvelopeError::NotAnObject,
        _ => EnvelopeError::NotJson(e.to_string()),
    })?;

    let events_raw = match top.get("data") {
        Some(data) if !is_null(data) => {
            let data: Members<'_> =
                serde_json::from_str(data.get()).map_err(|_| EnvelopeError::Field {
                    field: "data",
                    problem: "not an object",
                })?;
            *data.get("events").ok_or(EnvelopeError::Field {
                field: "data.events",
                problem: "missing",
            })?
        }
        _ => *top.get("events").ok_or(EnvelopeError::Field {
            field: "data.events",
            problem: "missing (neither data.events nor events is present)",
        })?,
    };
    let events: Vec<&RawValue> =
        serde_json::from_str(events_raw.get()).map_err(|_| EnvelopeError::Field {
            field: "data.events",
            problem: "not an array",
        })?;

    let event_id = top
        .get("eventId")
        .or_else(|| top.get("eventID"))
        .and_then(|raw| string(raw))
        .unwrap_or_default();
    let event_time = top
        .get("eventTime")
        .and_then(|raw| string(raw))
        .and_then(|text| parse_rfc3339(&text));
    let source = top
        .get("source")
        .and_then(|raw| string(raw))
        .unwrap_or_default();

    Ok(Envelope {
        event_id,
        event_time,
        source,
        events,
    })
}

fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// The raw value as a string, if it is a JSON string.
fn string(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get()).ok()
}
