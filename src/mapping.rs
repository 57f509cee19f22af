//! Mapping: one Okta LogEvent (JSON) plus its delivery context → the typed record.
//!
//! Pure functions, no I/O. Accepts every shape real Okta data takes (SPEC.md A.2.2, C, H);
//! rejects only what cannot be an event, with an error naming the field.

use std::collections::BTreeMap;

use crate::proto;

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
    /// The JSON path of the field, e.g. `published`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// Maps one LogEvent (the JSON of one element of `data.events[]`, or of one System Log API
/// result) to the record. The cursor is left 0 for the journal to assign.
pub fn map_event(log_event: &[u8], delivery: &Delivery) -> Result<proto::Event, MappingError> {
    let value: serde_json::Value = serde_json::from_slice(log_event).map_err(|e| MappingError {
        field: "event",
        problem: format!("not JSON: {e}"),
    })?;
    let object = value.as_object().ok_or_else(|| MappingError {
        field: "event",
        problem: "not a JSON object".to_owned(),
    })?;
    let uuid = object
        .get("uuid")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| MappingError {
            field: "uuid",
            problem: "missing or not a non-empty string".to_owned(),
        })?;
    Ok(proto::Event {
        uuid: uuid.to_owned(),
        event_type: object
            .get("eventType")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned(),
        event_id: delivery.event_id.clone(),
        event_time: delivery.event_time,
        headers: delivery.headers.clone().into_iter().collect(),
        source: Some(proto::Source {
            uri: delivery.source.clone(),
            ingest_source: delivery.ingest_source as i32,
        }),
        ingest_source: delivery.ingest_source as i32,
        received: delivery.received,
        ..Default::default()
    })
}

/// Copies HTTP request headers for the record (names lower-cased), replacing the values of
/// secret-bearing headers with `[REDACTED]`: `auth_header`, `authorization`,
/// `proxy-authorization`, `cookie`, `set-cookie`.
pub fn redact_headers(headers: &http::HeaderMap, auth_header: &str) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str().to_ascii_lowercase();
            let secret = name.eq_ignore_ascii_case(auth_header)
                || matches!(
                    name.as_str(),
                    "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
                );
            let value = if secret {
                "[REDACTED]".to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name, value)
        })
        .collect()
}

/// A hook delivery body split into its envelope fields and raw LogEvents.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// `eventId`.
    pub event_id: String,
    /// `eventTime`.
    pub event_time: Option<prost_types::Timestamp>,
    /// `source`.
    pub source: String,
    /// `data.events[]`, unparsed.
    pub events: Vec<&'a serde_json::value::RawValue>,
}

/// Why a body is not a hook envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvelopeError(pub String);

/// Splits a hook delivery body into envelope fields and raw events.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    #[derive(serde::Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        events: Vec<&'a serde_json::value::RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(default, rename = "eventId")]
        event_id: String,
        #[serde(default)]
        source: String,
        #[serde(borrow)]
        data: Data<'a>,
    }
    let body: Body<'_> = serde_json::from_slice(body)
        .map_err(|e| EnvelopeError(format!("not a hook envelope: {e}")))?;
    Ok(Envelope {
        event_id: body.event_id,
        event_time: None,
        source: body.source,
        events: body.data.events,
    })
}
