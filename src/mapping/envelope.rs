//! The hook delivery envelope: a POST body parsed once, split into its LogEvents.
//!
//! Okta wraps the LogEvents of a delivery in a CloudEvents 0.1 style envelope (SPEC.md A.2.2):
//! `{"eventType":"com.okta.event_hook","eventId":…,"eventTime":…,"source":…,"data":{"events":[…]}}`.
//! The whole body is parsed once (`parse::parse_body`); the envelope members are read from that
//! document, and each event is mapped from it by [`Envelope::map`] with no second scan of its
//! bytes. Splitting is kept apart from mapping on purpose: one LogEvent that cannot be mapped
//! (or nests too deep) is quarantined while the rest of the delivery is committed, so only a
//! body that is not an envelope at all is rejected here (the hook answers 400 naming what is
//! wrong).

use prost_types::Timestamp;

use super::delivery::DeliveryFields;
use super::error::MappingError;
use super::parse::{self, Buffers, Doc, EventItem, ParseError, Val};
use super::record::{self, MappedEvent};
use super::time::parse_rfc3339;

/// A delivery parsed and split into its parts. The events borrow from the body.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// Envelope `eventId` (or the early spelling `eventID`); empty when absent or not a string.
    pub event_id: String,
    /// Envelope `eventTime`. `None` when absent *or unparsable*: the delivery time is
    /// informational, so a malformed one must not cost the events of the delivery.
    pub event_time: Option<Timestamp>,
    /// Envelope `source` (`https://{org}/api/v1/eventHooks/{hookId}`); empty when absent.
    pub source: String,
    /// The elements of `data.events[]` (or of a bare body's `events[]`), in order.
    pub events: Vec<LogEvent<'a>>,
    /// The parsed body the events are read from.
    doc: Doc<'a>,
}

/// One element of the envelope's events: its text, a slice of the body, and its parse.
#[derive(Debug, Clone)]
pub struct LogEvent<'a> {
    raw: &'a str,
    item: EventItem,
}

impl<'a> LogEvent<'a> {
    /// The event's JSON exactly as it is in the body (what is quarantined if it does not map).
    pub fn get(&self) -> &'a str {
        self.raw
    }

    /// The byte range of the event in the body.
    pub fn span(&self) -> std::ops::Range<usize> {
        self.item.span.clone()
    }
}

impl Envelope<'_> {
    /// Maps one of [`Envelope::events`] from the parsed body. Errors as
    /// `map_event`: `event` when it is not an object or nests deeper than
    /// [`MAX_DEPTH`](parse::MAX_DEPTH) levels counted from itself, `uuid`, `published`.
    pub fn map(
        &self,
        event: &LogEvent<'_>,
        delivery: &DeliveryFields,
    ) -> Result<MappedEvent, MappingError> {
        if event.item.too_deep {
            return Err(MappingError {
                field: "event",
                problem: ParseError::TooDeep {
                    limit: parse::MAX_DEPTH,
                }
                .to_string(),
            });
        }
        match self.doc.event_value(&event.item) {
            Some(Val::Object(object)) => record::map(object, delivery),
            _ => Err(MappingError {
                field: "event",
                problem: "not a JSON object".to_owned(),
            }),
        }
    }
}

/// Why a body is not a hook delivery. The message names what is wrong; the hook sends it back
/// with status 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body does not parse as JSON (or nests deeper than
    /// [`MAX_BODY_DEPTH`](parse::MAX_BODY_DEPTH) levels).
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

/// Parses a hook POST body once, into `buffers`, and splits it into envelope fields and
/// LogEvents.
///
/// Accepts the CloudEvents envelope with `data.events[]`, the early spelling `eventID`, and a
/// bare `{"events":[…]}` body without an envelope. Envelope members of an unexpected type
/// (e.g. a numeric `eventId`) read as empty rather than failing the delivery; an unparsable
/// `eventTime` reads as `None`. Errors: the body is not JSON, not an object, or has no
/// `data.events` (nor `events`) array.
pub fn parse_envelope<'a>(
    body: &'a [u8],
    buffers: &'a mut Buffers,
) -> Result<Envelope<'a>, EnvelopeError> {
    let doc = parse::parse_body(body, buffers)
        .map_err(|e| EnvelopeError::NotJson(e.to_string()))?
        .ok_or(EnvelopeError::NotAnObject)?;
    let top = doc.root();

    let events = match top.get("data") {
        Some(Val::Object(data)) => data.get("events").ok_or(EnvelopeError::Field {
            field: "data.events",
            problem: "missing",
        })?,
        Some(_) => {
            return Err(EnvelopeError::Field {
                field: "data",
                problem: "not an object",
            });
        }
        None => top.get("events").ok_or(EnvelopeError::Field {
            field: "data.events",
            problem: "missing (neither data.events nor events is present)",
        })?,
    };
    let not_an_array = EnvelopeError::Field {
        field: "data.events",
        problem: "not an array",
    };
    let Val::Array(array) = events else {
        return Err(not_an_array);
    };
    let text = doc.text();
    let events: Vec<LogEvent<'a>> = doc
        .event_items(array)
        .ok_or(not_an_array)?
        .map(|item| LogEvent {
            raw: text.get(item.span.clone()).unwrap_or_default(),
            item,
        })
        .collect();

    let string = |key: &str| match top.get(key) {
        Some(Val::Str(s)) => Some(s),
        _ => None,
    };
    let event_id = string("eventId")
        .or_else(|| string("eventID"))
        .unwrap_or_default()
        .to_owned();
    let event_time = string("eventTime").and_then(parse_rfc3339);
    let source = string("source").unwrap_or_default().to_owned();

    Ok(Envelope {
        event_id,
        event_time,
        source,
        events,
        doc,
    })
}
