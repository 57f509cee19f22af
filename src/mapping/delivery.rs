//! What the transport knew about a LogEvent (hook envelope and HTTP request, or the poll),
//! and the redaction of the delivery's headers before they enter the record.

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

/// Copies HTTP request headers for the record (names lower-cased), replacing the value of
/// every header [`is_secret_header`] names with `[REDACTED]`. A header sent several times
/// keeps every value, joined with `", "` as HTTP allows; values that are not UTF-8 are
/// converted lossily.
pub fn redact_headers(headers: &http::HeaderMap, auth_header: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        // `http` stores names in lower case already; the conversion only guards that.
        let name = name.as_str().to_ascii_lowercase();
        let secret = is_secret_header(&name, auth_header);
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

/// Parts of a header name that mark it as carrying a credential (compared ignoring case).
const SECRET_NAME_PARTS: [&str; 6] = ["token", "secret", "key", "auth", "signature", "password"];

/// The redaction rule of the record's `headers` (documented in `events.proto` and the README):
/// `authorization`, `proxy-authorization`, `cookie`, `set-cookie`, the configured hook auth
/// header, and any header whose name contains `token`, `secret`, `key`, `auth`, `signature` or
/// `password`, in any case.
pub fn is_secret_header(name: &str, auth_header: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.eq_ignore_ascii_case(auth_header.trim())
        || matches!(
            name.as_str(),
            "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
        )
        || SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
}

/// What a secret header's value is replaced by in the record.
pub const REDACTED: &str = "[REDACTED]";

/// The record fields a delivery gives each of its events (`event_id`, `event_time`,
/// `headers`, `source`, `ingest_source`, `received`), encoded once and appended to every
/// record of the delivery.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFields {
    encoded: Vec<u8>,
    ingest_source: i32,
}

impl DeliveryFields {
    /// Encodes what `delivery` knew.
    pub fn new(delivery: &Delivery) -> Self {
        let fields = proto::Event {
            event_id: delivery.event_id.clone(),
            event_time: delivery.event_time,
            headers: delivery
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            source: Some(proto::Source {
                uri: delivery.source.clone(),
                ingest_source: delivery.ingest_source as i32,
            }),
            ingest_source: delivery.ingest_source as i32,
            received: delivery.received,
            ..Default::default()
        };
        Self {
            encoded: prost::Message::encode_to_vec(&fields),
            ingest_source: delivery.ingest_source as i32,
        }
    }

    /// The encoded fields.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// `ingest_source`, which filters read.
    pub(super) fn ingest_source(&self) -> i32 {
        self.ingest_source
    }

    /// Their length in bytes.
    pub(super) fn len(&self) -> usize {
        self.encoded.len()
    }
}
