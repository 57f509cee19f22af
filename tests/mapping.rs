//! The mapping from Okta's JSON to the record, as a specification.
//!
//! - every card output, checked on the real samples in `tests/fixtures/` (copied from
//!   `shared/okta/samples/`);
//! - every irregular shape of SPEC.md H and issue 2, applied to a real event;
//! - what is rejected, and that the error names the field;
//! - hook envelope splitting, header redaction;
//! - properties: no input panics the mapper or the envelope parser, and every mapped record
//!   encodes to bytes that decode back to the same record.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use okta_stream::journal::EventFacts;
use okta_stream::mapping::{
    Buffers, Delivery, DeliveryFields, EncodedStruct, EnvelopeError, MAX_BODY_DEPTH, MAX_DEPTH,
    MAX_INPUT_BYTES, MappedEvent, MappingError, REDACTED, map_event, parse_envelope,
    redact_headers,
};
use okta_stream::proto::{self, Event, IngestSource, Outcome, Severity};
use proptest::prelude::*;
use prost::Message;
use prost_types::value::Kind;
use prost_types::{Struct, Timestamp};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Harness

/// Runs `test` on its own thread and fails if it takes longer than `secs`, so a hang fails
/// instead of stalling CI.
fn within(secs: u64, test: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        test();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => handle.join().expect("test thread"),
        // The thread ended without sending: it panicked; re-raise its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic)
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {secs} s"),
    }
}

const UPDATE_PROFILE_2021: &str =
    include_str!("fixtures/cruglobal-okta-hooks__event_hook_update_profile_2021.json");
const LIFECYCLE_CREATE_2019: &str =
    include_str!("fixtures/cruglobal-okta-hooks__event_hook_lifecycle_create_2019.json");
const DOCS_DELIVERY_2019: &str =
    include_str!("fixtures/okta-developer-docs__event_hook_delivery_2019.json");
const DOCS_DELIVERY_2026: &str =
    include_str!("fixtures/okta-developer-docs__event_hook_delivery_2026.json");
const DOCS_LOGEVENTS: &str = include_str!("fixtures/okta-developer-docs__logevent_examples.ndjson");
const OPENAPI_LIST_LOGS: &str =
    include_str!("fixtures/okta-management-openapi-spec__ListLogs_examples.ndjson");

/// The delivery context the hook builds from an envelope and its request.
fn hook_delivery(body: &str) -> Delivery {
    let mut buffers = Buffers::default();
    let envelope = parse_envelope(body.as_bytes(), &mut buffers).expect("fixture is an envelope");
    Delivery {
        event_id: envelope.event_id,
        event_time: envelope.event_time,
        source: envelope.source,
        headers: BTreeMap::from([
            ("accept".to_owned(), "application/json".to_owned()),
            ("authorization".to_owned(), REDACTED.to_owned()),
        ]),
        ingest_source: IngestSource::Hook,
        received: Some(ts("2021-11-29T17:18:17.5Z")),
    }
}

/// The delivery context the poller builds for a page.
fn poll_delivery() -> Delivery {
    Delivery {
        event_id: String::new(),
        event_time: Some(ts("2024-08-13T16:00:00Z")),
        source: "https://example.okta.com".to_owned(),
        headers: BTreeMap::new(),
        ingest_source: IngestSource::Poller,
        received: Some(ts("2024-08-13T16:00:00.25Z")),
    }
}

/// Every LogEvent of a fixture: the events of an envelope, or the lines of an NDJSON file.
fn events_of(fixture: &str) -> Vec<String> {
    match parse_envelope(fixture.as_bytes(), &mut Buffers::default()) {
        Ok(envelope) => envelope.events.iter().map(|e| e.get().to_owned()).collect(),
        Err(_) => fixture
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

/// Maps event `index` of `fixture`: envelopes with their hook context, NDJSON as polled.
fn mapped(fixture: &str, index: usize) -> Event {
    let events = events_of(fixture);
    let delivery = if parse_envelope(fixture.as_bytes(), &mut Buffers::default()).is_ok() {
        hook_delivery(fixture)
    } else {
        poll_delivery()
    };
    record(map_event(events[index].as_bytes(), &delivery).expect("sample maps"))
}

/// The record the mapping wrote, decoded as a subscriber decodes it. The facts the mapping
/// keeps beside it (what filters match on) must read exactly what that decode reads.
fn record(mapped: MappedEvent) -> Event {
    let event = Event::decode(mapped.encoded.as_slice()).expect("the record decodes");
    // The same facts as the record gives when read back from the journal.
    let read = EventFacts::read(&mapped.encoded).expect("the facts read back");
    assert_eq!(mapped.facts, read, "the facts noted are the record's");
    let facts = mapped.facts.of(&mapped.encoded);
    assert_eq!(facts.cursor(), event.cursor);
    assert_eq!(facts.uuid(), event.uuid);
    assert_eq!(facts.published(), event.published);
    assert_eq!(facts.event_type(), event.event_type);
    assert_eq!(facts.severity(), event.severity);
    assert_eq!(facts.severity_raw(), event.severity_raw);
    assert_eq!(facts.result(), event.result);
    assert_eq!(facts.ingest_source(), event.ingest_source);
    let changed: Vec<&str> = facts.changed_attributes().collect();
    assert_eq!(changed, event.changed_attributes);
    let actor = facts.actor().map(|a| (a.id, a.alternate_id));
    let want = event.actor.as_ref();
    assert_eq!(actor, want.map(|a| (&*a.id, &*a.alternate_id)));
    let user = facts.okta_user().map(|u| (u.id, u.alternate_id));
    let want = event.okta_user.as_ref();
    assert_eq!(user, want.map(|u| (&*u.id, &*u.alternate_id)));
    let targets: Vec<_> = facts
        .targets()
        .map(|t| (t.id, t.r#type, t.alternate_id))
        .collect();
    let want: Vec<_> = event
        .targets
        .iter()
        .map(|t| (&*t.id, &*t.r#type, &*t.alternate_id))
        .collect();
    assert_eq!(targets, want);
    event
}

fn ts(text: &str) -> Timestamp {
    text.parse().expect("test timestamp")
}

/// A `Struct` field of a record, decoded from the bytes the mapping wrote.
fn tree(s: Option<&EncodedStruct>) -> Option<Struct> {
    s.map(|s| {
        s.to_struct()
            .expect("the mapping writes a decodable Struct")
    })
}

/// A JSON value as `google.protobuf.Struct`, converted independently of the mapper.
fn to_struct(value: &Value) -> Struct {
    fn to_value(value: &Value) -> prost_types::Value {
        let kind = match value {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().expect("finite")),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.iter().map(to_value).collect(),
            }),
            Value::Object(_) => Kind::StructValue(to_struct(value)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    Struct {
        fields: value
            .as_object()
            .expect("object")
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect(),
    }
}

/// One card output (or stream field) of a record, written as text so a table can hold it.
/// Messages that are unset read as `<unset>`; lists are joined with `|`.
fn field(e: &Event, name: &str) -> String {
    fn time(t: Option<Timestamp>) -> String {
        t.map_or("<unset>".to_owned(), |t| t.to_string())
    }
    fn opt<T>(m: Option<&T>, f: impl FnOnce(&T) -> String) -> String {
        m.map_or("<unset>".to_owned(), f)
    }
    fn keys(s: Option<&EncodedStruct>) -> String {
        opt(tree(s).as_ref(), |s| {
            s.fields.keys().cloned().collect::<Vec<_>>().join("|")
        })
    }
    let client = e.client.as_ref();
    let geo = client.and_then(|c| c.geographical_context.as_ref());
    let auth = e.authentication_context.as_ref();
    let sec = e.security_context.as_ref();
    match name {
        "uuid" => e.uuid.clone(),
        "published" => time(e.published),
        "message" => e.message.clone(),
        "event_id" => e.event_id.clone(),
        "event_type" => e.event_type.clone(),
        "legacy_event_type" => e.legacy_event_type.clone(),
        "event_time" => time(e.event_time),
        "version" => e.version.clone(),
        "severity" => format!("{:?} {:?}", e.severity(), e.severity_raw),
        "result" => format!("{:?} {:?}", e.result(), e.result_raw),
        "result_reason" => e.result_reason.clone(),
        "changed_attributes" => e.changed_attributes.join("|"),
        "changed_attributes_raw" => e.changed_attributes_raw.clone(),
        "actor" => opt(e.actor.as_ref(), |a| {
            format!(
                "{}|{}|{}|{}",
                a.id, a.alternate_id, a.display_name, a.r#type
            )
        }),
        "okta_user" => opt(e.okta_user.as_ref(), |u| {
            format!(
                "{}|{}|{}|{}",
                u.id, u.alternate_id, u.display_name, u.r#type
            )
        }),
        "targets" => e
            .targets
            .iter()
            .map(|t| format!("{}:{}", t.r#type, t.id))
            .collect::<Vec<_>>()
            .join("|"),
        "client" => opt(client, |_| "set".to_owned()),
        "client.user_agent" => opt(client.and_then(|c| c.user_agent.as_ref()), |u| {
            format!("{}|{}|{}", u.os, u.browser, u.raw_user_agent)
        }),
        "client.zone" => opt(client, |c| c.zone.clone()),
        "client.ip_address" => opt(client, |c| c.ip_address.clone()),
        "client.device" => opt(client, |c| c.device.clone()),
        "client.id" => opt(client, |c| c.id.clone()),
        "client.geo" => opt(geo, |g| {
            format!("{}|{}|{}|{}", g.city, g.state, g.country, g.postal_code)
        }),
        "client.geolocation" => opt(geo.and_then(|g| g.geolocation.as_ref()), |l| {
            format!("{},{}", l.lat, l.lon)
        }),
        "client.ip_chain" => opt(client, |c| {
            c.ip_chain
                .iter()
                .map(|ip| format!("{}/{}", ip.ip, ip.version))
                .collect::<Vec<_>>()
                .join("|")
        }),
        "actor.detail_entry" => opt(e.actor.as_ref(), |a| keys(a.detail_entry.as_ref())),
        "targets.details" => e
            .targets
            .iter()
            .map(|t| {
                format!(
                    "detail={} change={}",
                    keys(t.detail_entry.as_ref()),
                    keys(t.change_details.as_ref())
                )
            })
            .collect::<Vec<_>>()
            .join("|"),
        "client.ip_chain.ip_details" => opt(client, |c| {
            c.ip_chain
                .iter()
                .map(|ip| keys(ip.ip_details.as_ref()))
                .collect::<Vec<_>>()
                .join("|")
        }),
        "authentication_context.issuer" => opt(auth.and_then(|a| a.issuer.as_ref()), |i| {
            format!("{}|{}", i.id, i.r#type)
        }),
        "transaction" => opt(e.transaction.as_ref(), |t| {
            format!("{}|{}|detail={}", t.id, t.r#type, keys(t.detail.as_ref()))
        }),
        "debug_data" => opt(e.debug_context.as_ref(), |d| keys(d.debug_data.as_ref())),
        "authentication_context" => opt(auth, |a| {
            format!(
                "{}|{}|{}|step={}|{}|{}|{}",
                a.authentication_provider,
                a.credential_provider,
                a.credential_type,
                a.authentication_step,
                a.external_session_id,
                a.root_session_id,
                a.interface
            )
        }),
        "security_context" => opt(sec, |s| {
            format!(
                "{}|{}|{}|{}|proxy={:?}",
                s.as_number, s.as_org, s.isp, s.domain, s.is_proxy
            )
        }),
        "security_context.extras" => opt(sec, |s| {
            format!(
                "ip_details={} risk={} bot={} behaviors={}",
                keys(s.ip_details.as_ref()),
                keys(s.risk.as_ref()),
                keys(s.bot_protection.as_ref()),
                s.user_behaviors.len()
            )
        }),
        "headers" => {
            let sorted: BTreeMap<_, _> = e.headers.iter().collect();
            sorted
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("|")
        }
        "source" => opt(e.source.as_ref(), |s| {
            format!("{}|{:?}", s.uri, s.ingest_source())
        }),
        "ingest_source" => format!("{:?}", e.ingest_source()),
        "received" => time(e.received),
        "cursor" => e.cursor.to_string(),
        other => panic!("no such field in the table: {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Card outputs on the real samples

/// (fixture, event index, field, expected text)
type Row = (&'static str, usize, &'static str, &'static str);

fn fixture(name: &str) -> &'static str {
    match name {
        "update_profile_2021" => UPDATE_PROFILE_2021,
        "lifecycle_create_2019" => LIFECYCLE_CREATE_2019,
        "docs_delivery_2019" => DOCS_DELIVERY_2019,
        "docs_delivery_2026" => DOCS_DELIVERY_2026,
        "docs_logevents" => DOCS_LOGEVENTS,
        "openapi_list_logs" => OPENAPI_LIST_LOGS,
        other => panic!("no fixture {other}"),
    }
}

#[rustfmt::skip]
const CARD_ROWS: &[Row] = &[
    // The card's own event: a real user.account.update_profile hook delivery (CruGlobal, 2021).
    ("update_profile_2021", 0, "uuid", "04b1f1d4-4bbf-11ec-82ee-e73dada86765"),
    ("update_profile_2021", 0, "published", "2021-11-22T18:07:13.125Z"),
    ("update_profile_2021", 0, "message", "Update user profile for Okta"),
    ("update_profile_2021", 0, "event_id", "c0ce732a-4933-4141-bcd5-a11e761cf90b"),
    ("update_profile_2021", 0, "event_type", "user.account.update_profile"),
    ("update_profile_2021", 0, "legacy_event_type", "core.user.config.profile_update.success"),
    ("update_profile_2021", 0, "event_time", "2021-11-29T17:18:17.410Z"),
    ("update_profile_2021", 0, "version", "0"),
    ("update_profile_2021", 0, "severity", "Info \"INFO\""),
    ("update_profile_2021", 0, "result", "Success \"SUCCESS\""),
    ("update_profile_2021", 0, "result_reason", ""),
    ("update_profile_2021", 0, "changed_attributes", "usDesignationNumber"),
    ("update_profile_2021", 0, "changed_attributes_raw", "usDesignationNumber"),
    ("update_profile_2021", 0, "actor", "badactor|loki.laufeyson@example.com|Loki|User"),
    ("update_profile_2021", 0, "okta_user", "00u1hnx4oekfTHgqY0h8|thor.odinson@avengers.org|Thor Odinson|User"),
    ("update_profile_2021", 0, "targets", "User:00u1hnx4oekfTHgqY0h8"),
    ("update_profile_2021", 0, "client.user_agent", "Windows 10|CHROME|Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/96.0.4664.45 Safari/537.36"),
    ("update_profile_2021", 0, "client.zone", ""),
    ("update_profile_2021", 0, "client.ip_address", "50.89.143.182"),
    ("update_profile_2021", 0, "client.device", "Computer"),
    ("update_profile_2021", 0, "client.id", ""),
    ("update_profile_2021", 0, "client.geo", "Orlando|Florida|United States|32832"),
    ("update_profile_2021", 0, "client.geolocation", "28.3774,-81.1888"),
    ("update_profile_2021", 0, "client.ip_chain", "50.89.143.182/V4"),
    ("update_profile_2021", 0, "transaction", "YZvcUWlrybfJE38ty-heiAAACpQ|WEB|detail="),
    ("update_profile_2021", 0, "debug_data", "changedAttributes|requestId|requestUri|targetEventHookIds|url"),
    ("update_profile_2021", 0, "authentication_context", "|||step=0|102RqNWJJbrQqGF6QmEinChDw||"),
    ("update_profile_2021", 0, "security_context", "33363|bright house networks - cfl division|charter communications  inc|spectrum.com|proxy=Some(false)"),
    ("update_profile_2021", 0, "headers", "accept=application/json|authorization=[REDACTED]"),
    ("update_profile_2021", 0, "source", "https://signon.okta.com/api/v1/eventHooks/who1hzk33c2pxL1Yl0h8|Hook"),
    ("update_profile_2021", 0, "ingest_source", "Hook"),
    ("update_profile_2021", 0, "received", "2021-11-29T17:18:17.500Z"),
    ("update_profile_2021", 0, "cursor", "0"),
    // A sparse real delivery: SystemPrincipal actor, client with only an empty ipChain,
    // transaction without a type, empty securityContext.
    ("lifecycle_create_2019", 0, "actor", "sprnatyt09a3WRgoL0h7|system@okta.com|Okta System|SystemPrincipal"),
    ("lifecycle_create_2019", 0, "okta_user", "00uo1r94r6jIYXcjy0h7|ironman@stark.com|Iron Man|User"),
    ("lifecycle_create_2019", 0, "client", "set"),
    ("lifecycle_create_2019", 0, "client.ip_chain", ""),
    ("lifecycle_create_2019", 0, "client.user_agent", "<unset>"),
    ("lifecycle_create_2019", 0, "transaction", "unknown||detail="),
    ("lifecycle_create_2019", 0, "security_context", "0||||proxy=None"),
    ("lifecycle_create_2019", 0, "authentication_context", "|||step=0|trslQYwh4qUTBOPe97OKdcQZw||"),
    ("lifecycle_create_2019", 0, "result", "Success \"SUCCESS\""),
    ("lifecycle_create_2019", 0, "changed_attributes", ""),
    ("lifecycle_create_2019", 0, "debug_data", "requestUri|targetEventHookIds"),
    ("lifecycle_create_2019", 0, "event_time", "2019-10-24T14:21:37.009Z"),
    // Okta's classic doc delivery: no target, no securityContext, no debugContext.
    ("docs_delivery_2019", 0, "okta_user", "<unset>"),
    ("docs_delivery_2019", 0, "targets", ""),
    ("docs_delivery_2019", 0, "client.zone", "OFF_NETWORK"),
    ("docs_delivery_2019", 0, "client.geo", "<unset>"),
    ("docs_delivery_2019", 0, "security_context", "<unset>"),
    ("docs_delivery_2019", 0, "debug_data", "<unset>"),
    ("docs_delivery_2019", 0, "transaction", "V04Oy4ubUOc5UuG6s9DyNQAABtc|WEB|detail=<unset>"),
    // Okta's current doc delivery: several targets, none a User; all-null securityContext.
    ("docs_delivery_2026", 0, "okta_user", "<unset>"),
    ("docs_delivery_2026", 0, "targets", "AuthenticatorEnrollment:lae42mkdc9i9cbw3U1d6|AppInstance:0oaz9fj21WKqTeaqs1d6"),
    ("docs_delivery_2026", 0, "security_context", "0||||proxy=None"),
    ("docs_delivery_2026", 0, "client.ip_chain", "142.126.158.61/V4"),
    ("docs_delivery_2026", 0, "client.geo", "Toronto|Ontario|Canada|M4M"),
    // System Log API events (polled): ipChain under request, nulls everywhere.
    ("docs_logevents", 0, "client.ip_chain", "127.0.0.1/V4"),
    ("docs_logevents", 0, "client.geo", "|||"),
    ("docs_logevents", 0, "client.geolocation", "37.74,-122.39999999999999"),
    ("docs_logevents", 0, "severity", "Warn \"WARN\""),
    ("docs_logevents", 0, "result", "Deny \"DENY\""),
    ("docs_logevents", 0, "result_reason", "Too many enrollment attempts for SMS factor"),
    ("docs_logevents", 0, "legacy_event_type", ""),
    ("docs_logevents", 0, "targets", "Factor Type:SMS|URL Pattern:/api/v1/authn/factors"),
    ("docs_logevents", 0, "okta_user", "<unset>"),
    ("docs_logevents", 0, "event_id", ""),
    ("docs_logevents", 0, "event_time", "2024-08-13T16:00:00Z"),
    ("docs_logevents", 0, "source", "https://example.okta.com|Poller"),
    ("docs_logevents", 0, "headers", ""),
    ("docs_logevents", 2, "okta_user", "00u1ngpFSRLFie7vT0g4|john.smith@example.com|John Smith|User"),
    ("docs_logevents", 3, "result", "Unspecified \"\""),
    ("docs_logevents", 3, "targets", ""),
    // The OpenAPI ListLogs examples: version and postalCode as numbers, zone null, newer
    // authenticationContext and securityContext keys.
    ("openapi_list_logs", 0, "version", "0"),
    ("openapi_list_logs", 0, "client.geo", "New York|New York|United States|10013"),
    ("openapi_list_logs", 0, "client.zone", ""),
    ("openapi_list_logs", 0, "client.ip_chain", "10.0.0.1/V4"),
    ("openapi_list_logs", 0, "authentication_context", "|||step=0|idxBager62CSveUkTxvgRtonA|idxBager62CSveUkTxvgRtonA|"),
    ("openapi_list_logs", 0, "transaction", "ab609228fe84ce59cdcbfa690bgce016|WEB|detail=<unset>"),
    ("openapi_list_logs", 0, "security_context", "394089|ASN 0000|google||proxy=Some(false)"),
    ("openapi_list_logs", 1, "security_context.extras", "ip_details=asNumber|asOrg|isp risk=detectionName|level|reasons bot=level behaviors=2"),
    ("openapi_list_logs", 1, "client.ip_chain.ip_details", "asNumber|asOrg|isp"),
    ("update_profile_2021", 0, "actor.detail_entry", "<unset>"),
    ("update_profile_2021", 0, "targets.details", "detail=<unset> change=<unset>"),
    ("update_profile_2021", 0, "authentication_context.issuer", "<unset>"),
];

#[test]
fn every_card_output_is_filled_from_the_real_samples() {
    within(10, || {
        let mut failures = Vec::new();
        for &(name, index, field_name, want) in CARD_ROWS {
            let got = field(&mapped(fixture(name), index), field_name);
            if got != want {
                failures.push(format!(
                    "{name}[{index}].{field_name}: got {got:?}, want {want:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}

#[test]
fn event_details_is_the_whole_log_event_as_received() {
    within(10, || {
        for name in [
            "update_profile_2021",
            "lifecycle_create_2019",
            "docs_delivery_2026",
            "openapi_list_logs",
        ] {
            for (index, text) in events_of(fixture(name)).iter().enumerate() {
                let event = mapped(fixture(name), index);
                let want = to_struct(&serde_json::from_str(text).expect("json"));
                // Byte for byte what prost writes for the tree: entries in key order.
                assert_eq!(
                    event.event_details.as_ref().map(EncodedStruct::as_bytes),
                    Some(EncodedStruct::from_struct(&want).as_bytes()),
                    "{name}[{index}]"
                );
                assert_eq!(
                    tree(event.event_details.as_ref()),
                    Some(want),
                    "{name}[{index}]"
                );
            }
        }
    });
}

#[test]
fn the_debug_context_carries_debug_data_with_its_values() {
    within(10, || {
        let event = mapped(UPDATE_PROFILE_2021, 0);
        let data = event
            .debug_context
            .and_then(|d| tree(d.debug_data.as_ref()))
            .expect("debug data");
        let want = to_struct(&json!({
            "requestId": "YZvcUWlrybfJE38ty-heiAAACpQ",
            "requestUri": "/api/v1/users/00u1hnx4oekfTHgqY0h8",
            "changedAttributes": "usDesignationNumber",
            "targetEventHookIds": "who1hzk33c2pxL1Yl0h8,who1mpwgrxrsCR23M0h8",
            "url": "/api/v1/users/00u1hnx4oekfTHgqY0h8?"
        }));
        assert_eq!(data, want);
    });
}

#[test]
fn every_sample_event_maps_except_the_doc_sample_with_an_impossible_date() {
    within(10, || {
        let mut mapped_count = 0;
        for name in [
            "update_profile_2021",
            "lifecycle_create_2019",
            "docs_delivery_2019",
            "docs_delivery_2026",
            "docs_logevents",
            "openapi_list_logs",
        ] {
            for text in events_of(fixture(name)) {
                match map_event(text.as_bytes(), &poll_delivery()) {
                    Ok(_) => mapped_count += 1,
                    Err(e) => {
                        assert_eq!(e.field, "published", "{name}: {e}");
                        assert!(text.contains("2017-09-31T"), "{name}: {e}");
                    }
                }
            }
        }
        assert_eq!(mapped_count, 14);
    });
}

// ---------------------------------------------------------------------------------------------
// Irregular shapes (SPEC.md H, issue 2)

/// The real update_profile LogEvent, to be bent into each irregular shape.
fn base_event() -> Value {
    serde_json::from_str(&events_of(UPDATE_PROFILE_2021)[0]).expect("json")
}

/// Sets the member at `path` (dot-separated) of `event` to `value`; `None` removes it.
fn with(mut event: Value, path: &str, value: Option<Value>) -> Value {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().expect("path");
    let mut at = &mut event;
    for part in parts {
        at = at.get_mut(part).expect("path exists in the base event");
    }
    let object = at.as_object_mut().expect("object");
    match value {
        Some(v) => {
            object.insert(last.to_owned(), v);
        }
        None => {
            object.remove(last);
        }
    }
    event
}

fn map_value(event: &Value) -> Result<Event, MappingError> {
    map_event(event.to_string().as_bytes(), &poll_delivery()).map(record)
}

/// (what, path, new value or None to remove, field, expected text)
type Shape = (
    &'static str,
    &'static str,
    Option<Value>,
    &'static str,
    &'static str,
);

#[rustfmt::skip]
fn irregular_shapes() -> Vec<Shape> {
    let user =
        |id: &str, ty: &str| json!({"id": id, "type": ty, "alternateId": "a", "displayName": "d"});
    vec![
        ("actor null", "actor", Some(Value::Null), "actor", "<unset>"),
        ("actor absent", "actor", None, "actor", "<unset>"),
        ("actor without detailEntry", "actor.detailEntry", None, "actor", "badactor|loki.laufeyson@example.com|Loki|User"),
        ("target null", "target", Some(Value::Null), "okta_user", "<unset>"),
        ("target absent", "target", None, "targets", ""),
        ("target empty", "target", Some(json!([])), "okta_user", "<unset>"),
        ("okta user is the first target of type User, not the first target", "target", Some(json!([user("0oa1", "AppInstance"), user("00u2", "User"), user("00u3", "User")])), "okta_user", "00u2|a|d|User"),
        ("all targets are kept in order", "target", Some(json!([user("0oa1", "AppInstance"), user("00g1", "UserGroup"), user("00u2", "User"), user("0ua1", "AppUser")])), "targets", "AppInstance:0oa1|UserGroup:00g1|User:00u2|AppUser:0ua1"),
        ("AppUser is not a User", "target", Some(json!([user("0ua1", "AppUser")])), "okta_user", "<unset>"),
        ("target type compared ignoring case", "target", Some(json!([user("00u9", "user")])), "okta_user", "00u9|a|d|user"),
        ("target entries that are not objects are skipped", "target", Some(json!([null, 3, user("00u2", "User")])), "targets", "User:00u2"),
        ("ipChain under request", "client.ipChain", None, "client.ip_chain", ""),
        ("client empty", "client", Some(json!({})), "client.ip_address", ""),
        ("client null", "client", Some(Value::Null), "client", "<unset>"),
        ("client with all members null", "client", Some(json!({"userAgent": null, "zone": null, "device": null, "id": null, "ipAddress": null, "geographicalContext": null})), "client.geo", "<unset>"),
        ("client only an empty ipChain", "client", Some(json!({"ipChain": []})), "client.ip_chain", ""),
        ("zone string null", "client.zone", Some(json!("null")), "client.zone", ""),
        ("zone JSON null", "client.zone", Some(Value::Null), "client.zone", ""),
        ("zone named", "client.zone", Some(json!("LAN")), "client.zone", "LAN"),
        ("ipAddress string null", "client.ipAddress", Some(json!("null")), "client.ip_address", ""),
        ("geographicalContext null", "client.geographicalContext", Some(Value::Null), "client.geo", "<unset>"),
        ("geographicalContext empty", "client.geographicalContext", Some(json!({})), "client.geo", "|||"),
        ("geographicalContext all null with a geolocation", "client.geographicalContext", Some(json!({"city": null, "state": null, "country": null, "postalCode": null, "geolocation": {"lat": 37.74, "lon": -122.39999999999999}})), "client.geolocation", "37.74,-122.39999999999999"),
        ("postalCode as a number", "client.geographicalContext.postalCode", Some(json!(10013)), "client.geo", "Orlando|Florida|United States|10013"),
        ("outcome null", "outcome", Some(Value::Null), "result", "Unspecified \"\""),
        ("outcome result only", "outcome", Some(json!({"result": "FAILURE"})), "result", "Failure \"FAILURE\""),
        ("result in mixed case", "outcome.result", Some(json!("Success")), "result", "Success \"Success\""),
        ("result unknown to this version", "outcome.result", Some(json!("PARTIAL_SUCCESS")), "result", "Unspecified \"PARTIAL_SUCCESS\""),
        ("result added in v5.1.0", "outcome.result", Some(json!("RATE_LIMIT")), "result", "RateLimit \"RATE_LIMIT\""),
        ("reason kept", "outcome.reason", Some(json!("INVALID_CREDENTIALS")), "result_reason", "INVALID_CREDENTIALS"),
        ("severity in lower case", "severity", Some(json!("warn")), "severity", "Warn \"warn\""),
        ("severity unknown to this version", "severity", Some(json!("CRITICAL")), "severity", "Unspecified \"CRITICAL\""),
        ("severity absent", "severity", None, "severity", "Unspecified \"\""),
        ("version as the number 0", "version", Some(json!(0)), "version", "0"),
        ("legacyEventType null", "legacyEventType", Some(Value::Null), "legacy_event_type", ""),
        ("displayMessage absent", "displayMessage", None, "message", ""),
        ("debugContext null", "debugContext", Some(Value::Null), "debug_data", "<unset>"),
        ("debugContext empty", "debugContext", Some(json!({})), "debug_data", "<unset>"),
        ("debugData empty", "debugContext.debugData", Some(json!({})), "debug_data", ""),
        ("changedAttributes trimmed, empty names dropped", "debugContext.debugData.changedAttributes", Some(json!(" CIS_Number, lastName ,,firstName,mobilePhone, ")), "changed_attributes", "CIS_Number|lastName|firstName|mobilePhone"),
        ("changedAttributes raw kept as sent", "debugContext.debugData.changedAttributes", Some(json!(" CIS_Number, lastName ,,")), "changed_attributes_raw", " CIS_Number, lastName ,,"),
        ("changedAttributes empty", "debugContext.debugData.changedAttributes", Some(json!("")), "changed_attributes", ""),
        ("changedAttributes null", "debugContext.debugData.changedAttributes", Some(Value::Null), "changed_attributes_raw", ""),
        ("debugData values of every JSON type", "debugContext.debugData", Some(json!({"threshold": "50", "count": 3, "flag": true, "none": null, "originalPrincipal": {"id": "x"}, "list": [1, "a"]})), "debug_data", "count|flag|list|none|originalPrincipal|threshold"),
        ("transaction type missing", "transaction.type", None, "transaction", "YZvcUWlrybfJE38ty-heiAAACpQ||detail="),
        ("transaction detail null", "transaction.detail", Some(Value::Null), "transaction", "YZvcUWlrybfJE38ty-heiAAACpQ|WEB|detail=<unset>"),
        ("transaction detail with a token id", "transaction.detail", Some(json!({"requestApiTokenId": "00T1"})), "transaction", "YZvcUWlrybfJE38ty-heiAAACpQ|WEB|detail=requestApiTokenId"),
        ("securityContext empty", "securityContext", Some(json!({})), "security_context", "0||||proxy=None"),
        ("securityContext null", "securityContext", Some(Value::Null), "security_context", "<unset>"),
        ("securityContext newer keys", "securityContext", Some(json!({"ipDetails": {"asNumber": 1}, "risk": {"level": "LOW"}, "userBehaviors": [{"id": "b"}], "botProtection": {"level": "NONE"}})), "security_context.extras", "ip_details=asNumber risk=level bot=level behaviors=1"),
        ("authenticationContext with only externalSessionId", "authenticationContext", Some(json!({"externalSessionId": "trs1"})), "authentication_context", "|||step=0|trs1||"),
        ("authenticationContext with nine keys", "authenticationContext", Some(json!({"authenticationProvider": "ACTIVE_DIRECTORY", "credentialProvider": "GOOGLE", "credentialType": "OAuth 2.0", "issuer": {"id": "i", "type": "t"}, "externalSessionId": "102x", "interface": "Outlook", "authenticationStep": 0, "rootSessionId": "idx1", "authenticatorContext": {"x": 1}})), "authentication_context", "ACTIVE_DIRECTORY|GOOGLE|OAuth 2.0|step=0|102x|idx1|Outlook"),
        ("unknown member at the top", "fooBar", Some(json!({"nested": [1, 2]})), "message", "Update user profile for Okta"),
        ("unknown member inside client", "client.newThing", Some(json!(1)), "client.ip_address", "50.89.143.182"),
        ("non-ASCII and commas in names", "actor.displayName", Some(json!("Ōtani, Shōhei 大谷翔平 🚀")), "actor", "badactor|loki.laufeyson@example.com|Ōtani, Shōhei 大谷翔平 🚀|User"),
        ("published without a fraction", "published", Some(json!("2021-11-22T13:29:21Z")), "published", "2021-11-22T13:29:21Z"),
        ("published with two fraction digits", "published", Some(json!("2021-11-22T13:29:03.49Z")), "published", "2021-11-22T13:29:03.490Z"),
        ("published with microseconds", "published", Some(json!("2021-11-22T13:29:03.123456Z")), "published", "2021-11-22T13:29:03.123456Z"),
        ("published with nanoseconds", "published", Some(json!("2021-11-22T13:29:03.123456789Z")), "published", "2021-11-22T13:29:03.123456789Z"),
        ("published with an offset", "published", Some(json!("2021-11-22T15:29:21+02:00")), "published", "2021-11-22T13:29:21Z"),
        ("uuid that is not a UUID", "uuid", Some(json!("ABC123")), "uuid", "ABC123"),
        ("actor detailEntry as an object", "actor.detailEntry", Some(json!({"methodTypeUsed": "Password", "n": 1})), "actor.detail_entry", "methodTypeUsed|n"),
        ("target detailEntry and changeDetails", "target", Some(json!([{"id": "00u1", "type": "User", "detailEntry": {"a": null}, "changeDetails": {"from": {"x": 1}, "to": {"x": 2}}}])), "targets.details", "detail=a change=from|to"),
        ("issuer object", "authenticationContext.issuer", Some(json!({"id": "aus1", "type": "AuthorizationServer"})), "authentication_context.issuer", "aus1|AuthorizationServer"),
    ]
}

#[test]
fn every_irregular_shape_okta_sends_maps() {
    within(10, || {
        let mut failures = Vec::new();
        for (what, path, value, field_name, want) in irregular_shapes() {
            let event = with(base_event(), path, value);
            match map_value(&event) {
                Ok(record) => {
                    let got = field(&record, field_name);
                    if got != want {
                        failures.push(format!("{what}: {field_name} = {got:?}, want {want:?}"));
                    }
                    // Whatever the shape, the event is kept whole.
                    assert_eq!(
                        tree(record.event_details.as_ref()),
                        Some(to_struct(&event)),
                        "{what}"
                    );
                }
                Err(e) => failures.push(format!("{what}: rejected: {e}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}

#[test]
fn ip_chain_comes_from_request_when_the_client_has_none() {
    within(10, || {
        let event = base_event();
        let chain = event["client"]["ipChain"].clone();
        let moved = with(
            with(event, "client.ipChain", None),
            "request",
            Some(json!({"ipChain": chain})),
        );
        assert_eq!(
            field(&map_value(&moved).unwrap(), "client.ip_chain"),
            "50.89.143.182/V4"
        );

        // No client at all, but a request chain: the chain is still reported.
        let no_client = with(moved, "client", None);
        let record = map_value(&no_client).unwrap();
        assert_eq!(field(&record, "client.ip_chain"), "50.89.143.182/V4");
        assert_eq!(field(&record, "client.user_agent"), "<unset>");
    });
}

// ---------------------------------------------------------------------------------------------
// Rejected: what cannot be an event

#[test]
fn only_what_cannot_be_an_event_is_rejected_and_the_error_names_the_field() {
    within(10, || {
        let base = base_event();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("not JSON", b"{\"uuid\": ".to_vec(), "event"),
            ("trailing garbage", b"{} x".to_vec(), "event"),
            ("an array", b"[{}]".to_vec(), "event"),
            ("a string", b"\"event\"".to_vec(), "event"),
            ("null", b"null".to_vec(), "event"),
            ("empty input", Vec::new(), "event"),
            (
                "uuid missing",
                with(base.clone(), "uuid", None).to_string().into_bytes(),
                "uuid",
            ),
            (
                "uuid null",
                with(base.clone(), "uuid", Some(Value::Null))
                    .to_string()
                    .into_bytes(),
                "uuid",
            ),
            (
                "uuid empty",
                with(base.clone(), "uuid", Some(json!("")))
                    .to_string()
                    .into_bytes(),
                "uuid",
            ),
            (
                "uuid a number",
                with(base.clone(), "uuid", Some(json!(42)))
                    .to_string()
                    .into_bytes(),
                "uuid",
            ),
            (
                "published missing",
                with(base.clone(), "published", None)
                    .to_string()
                    .into_bytes(),
                "published",
            ),
            (
                "published impossible",
                with(
                    base.clone(),
                    "published",
                    Some(json!("2017-09-31T22:23:07.777Z")),
                )
                .to_string()
                .into_bytes(),
                "published",
            ),
            (
                "published without offset",
                with(
                    base.clone(),
                    "published",
                    Some(json!("2021-11-22T18:07:13")),
                )
                .to_string()
                .into_bytes(),
                "published",
            ),
            (
                "published a number",
                with(base.clone(), "published", Some(json!(1637604433)))
                    .to_string()
                    .into_bytes(),
                "published",
            ),
        ];
        for (what, bytes, want_field) in cases {
            match map_event(&bytes, &poll_delivery()) {
                Ok(_) => panic!("{what}: accepted"),
                Err(e) => {
                    assert_eq!(e.field, want_field, "{what}: {e}");
                    assert!(e.to_string().starts_with(want_field), "{what}: {e}");
                }
            }
        }
    });
}

#[test]
fn nesting_is_limited_so_every_stored_record_can_be_decoded() {
    within(10, || {
        // `depth` levels of objects in total, the LogEvent itself included.
        let nested = |depth: u32| {
            let mut inner = json!("leaf");
            for _ in 1..depth {
                inner = json!({ "n": inner });
            }
            with(base_event(), "deep", Some(inner))
        };
        let record = map_value(&nested(MAX_DEPTH)).expect("MAX_DEPTH levels map");
        let decoded = Event::decode(record.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, record);
        // Also inside the messages that carry events to clients.
        let page = proto::ListEventsResponse {
            events: vec![record],
            next_page_token: String::new(),
        };
        proto::ListEventsResponse::decode(page.encode_to_vec().as_slice()).expect("page decodes");

        let too_deep = map_value(&nested(MAX_DEPTH + 1)).expect_err("one level more is rejected");
        assert_eq!(too_deep.field, "event");
        assert!(too_deep.problem.contains("nested deeper"), "{too_deep}");

        // Hostile nesting far beyond any limit is an error, not a stack overflow.
        let hostile = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        let e = map_event(hostile.as_bytes(), &Delivery::default()).expect_err("too deep");
        assert_eq!(e.field, "event");
        // A whole hook body has a hard cap too: past it the body is not JSON the hook takes.
        let body = format!(r#"{{"data":{{"events":[{hostile}]}}}}"#);
        let e = parse_envelope(body.as_bytes(), &mut Buffers::default()).expect_err("capped");
        assert!(
            matches!(&e, EnvelopeError::NotJson(m) if m.contains(&format!("nested deeper than {MAX_BODY_DEPTH} levels"))),
            "{e}"
        );
    });
}

#[test]
fn what_filters_match_on_is_read_right_from_long_actors_and_targets() {
    within(10, || {
        // Sub-messages of 128 bytes or more take a longer length prefix, written after their
        // body: the ids and logins inside them must still be found (`record` checks every fact
        // against a full decode).
        for size in [10, 100, 200, 20_000] {
            let long = "x".repeat(size);
            let event = with(
                base_event(),
                "actor",
                Some(json!({
                    "id": "00uADMIN", "type": "User", "alternateId": "admin@example.com",
                    "displayName": long, "detailEntry": {"note": long},
                })),
            );
            let event = with(
                event,
                "target",
                Some(json!([
                    {"id": "0oaAPP", "type": "AppInstance", "alternateId": "app",
                     "displayName": long, "detailEntry": {"note": long}},
                    {"id": "00uTHOR", "type": "User", "alternateId": "thor@example.com",
                     "displayName": long, "changeDetails": {"from": {"a": long}, "to": {}}},
                    // Empty strings in a message that moves are empty facts still.
                    {"id": "", "type": "Group", "alternateId": "",
                     "displayName": long, "detailEntry": {"note": long}},
                ])),
            );
            let record = map_value(&event).expect("maps");
            assert_eq!(record.okta_user.expect("a user").id, "00uTHOR", "{size}");
            assert_eq!(record.targets.len(), 3, "{size}");
        }
    });
}

#[test]
fn an_input_longer_than_the_parser_reads_is_refused_by_its_length() {
    within(10, || {
        // Whitespace around an empty object: valid JSON, one byte too long.
        let mut body = vec![b' '; MAX_INPUT_BYTES + 1];
        body[0] = b'{';
        body[1] = b'}';
        let e = parse_envelope(&body, &mut Buffers::default()).expect_err("too long");
        let want = format!(
            "{} bytes is more than the {MAX_INPUT_BYTES}",
            MAX_INPUT_BYTES + 1
        );
        assert!(
            matches!(&e, EnvelopeError::NotJson(m) if m.contains(&want)),
            "{e}"
        );
        let e = map_event(&body, &Delivery::default()).expect_err("too long");
        assert_eq!(e.field, "event");
        assert!(e.problem.contains(&want), "{e}");
        // At the limit, the same bytes are read (and found not to be an envelope).
        body.pop();
        let e = parse_envelope(&body, &mut Buffers::default()).expect_err("no events");
        assert!(!matches!(e, EnvelopeError::NotJson(_)), "{e}");
    });
}

#[test]
fn in_a_hook_body_the_depth_limit_counts_from_each_event() {
    within(10, || {
        let nested = |uuid: &str, depth: u32| {
            let mut inner = json!("leaf");
            for _ in 1..depth {
                inner = json!({ "n": inner });
            }
            json!({"uuid": uuid, "published": "2021-11-22T18:07:13.125Z", "deep": inner})
        };
        // Written by hand with whitespace around the events: each one's text is its exact slice.
        let body = format!(
            "{{\"eventId\": \"e\", \"data\": {{\"events\": [ {} ,\n {} ,\t{} ]}}}}",
            nested("at-limit", MAX_DEPTH),
            nested("too-deep", MAX_DEPTH + 1),
            nested("after", 3),
        );
        let mut buffers = Buffers::default();
        let envelope = parse_envelope(body.as_bytes(), &mut buffers).expect("the body is fine");
        let results: Vec<Result<String, String>> = envelope
            .events
            .iter()
            .map(|e| {
                envelope
                    .map(e, &DeliveryFields::new(&Delivery::default()))
                    .map(|r| record(r).uuid)
                    .map_err(|e| e.to_string())
            })
            .collect();
        assert_eq!(
            results,
            vec![
                Ok("at-limit".to_owned()),
                Err(format!("event: nested deeper than {MAX_DEPTH} levels")),
                Ok("after".to_owned()),
            ]
        );
        for event in &envelope.events {
            let slice = &body[event.span()];
            assert_eq!(event.get(), slice);
            assert_eq!(
                event.get().as_ptr(),
                slice.as_ptr(),
                "a slice of the body, not a copy"
            );
            assert!(slice.starts_with('{') && slice.ends_with('}'), "{slice:?}");
        }
        // The same event on its own (as the poller maps it) fails the same way.
        let alone = map_event(envelope.events[1].get().as_bytes(), &Delivery::default());
        assert_eq!(
            alone.map_err(|e| e.to_string()),
            Err(format!("event: nested deeper than {MAX_DEPTH} levels"))
        );
    });
}

// ---------------------------------------------------------------------------------------------
// The hook envelope

#[test]
fn the_cloudevents_envelope_is_split_into_its_log_events() {
    within(10, || {
        let mut buffers = Buffers::default();
        let envelope = parse_envelope(UPDATE_PROFILE_2021.as_bytes(), &mut buffers).unwrap();
        assert_eq!(envelope.event_id, "c0ce732a-4933-4141-bcd5-a11e761cf90b");
        assert_eq!(envelope.event_time, Some(ts("2021-11-29T17:18:17.410Z")));
        assert_eq!(
            envelope.source,
            "https://signon.okta.com/api/v1/eventHooks/who1hzk33c2pxL1Yl0h8"
        );
        assert_eq!(envelope.events.len(), 1);
        let event: Value = serde_json::from_str(envelope.events[0].get()).unwrap();
        assert_eq!(event["uuid"], "04b1f1d4-4bbf-11ec-82ee-e73dada86765");
    });
}

/// (what, body, event_id, event_time, source, uuids of the events in order)
type EnvelopeCase = (
    &'static str,
    Value,
    &'static str,
    Option<Timestamp>,
    &'static str,
    Vec<&'static str>,
);

#[test]
fn envelope_variants_seen_in_the_wild_are_accepted() {
    within(10, || {
        let event = |uuid: &str| json!({"uuid": uuid, "published": "2021-11-22T18:07:13.125Z"});
        // (what, body, event_id, event_time, source, uuids)
        let cases: Vec<EnvelopeCase> = vec![
            (
                "several events in one delivery, in order",
                json!({"eventId": "e1", "eventTime": "2021-11-29T17:18:17.410Z", "source": "s", "data": {"events": [event("a"), event("b"), event("c")]}}),
                "e1",
                Some(ts("2021-11-29T17:18:17.410Z")),
                "s",
                vec!["a", "b", "c"],
            ),
            (
                "the early spelling eventID",
                json!({"eventID": "e2", "data": {"events": [event("a")]}}),
                "e2",
                None,
                "",
                vec!["a"],
            ),
            (
                "a bare events body",
                json!({"events": [event("a"), event("b")]}),
                "",
                None,
                "",
                vec!["a", "b"],
            ),
            (
                "no events",
                json!({"eventId": "e3", "data": {"events": []}}),
                "e3",
                None,
                "",
                vec![],
            ),
            (
                "an unparsable eventTime does not reject the delivery",
                json!({"eventId": "e4", "eventTime": "2017-09-31T00:00:00Z", "data": {"events": [event("a")]}}),
                "e4",
                None,
                "",
                vec!["a"],
            ),
            (
                "eventTime with nanoseconds",
                json!({"eventTime": "2021-11-29T17:18:17.123456789Z", "data": {"events": []}}),
                "",
                Some(ts("2021-11-29T17:18:17.123456789Z")),
                "",
                vec![],
            ),
            (
                "envelope members of unexpected types read as empty",
                json!({"eventId": 7, "eventTime": 1, "source": null, "data": {"events": [event("a")]}}),
                "",
                None,
                "",
                vec!["a"],
            ),
        ];
        for (what, body, event_id, event_time, source, uuids) in cases {
            let text = body.to_string();
            let mut buffers = Buffers::default();
            let envelope = parse_envelope(text.as_bytes(), &mut buffers)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(envelope.event_id, event_id, "{what}");
            assert_eq!(envelope.event_time, event_time, "{what}");
            assert_eq!(envelope.source, source, "{what}");
            let got: Vec<String> = envelope
                .events
                .iter()
                .map(|e| record(map_event(e.get().as_bytes(), &Delivery::default()).unwrap()).uuid)
                .collect();
            assert_eq!(got, uuids, "{what}");
        }
    });
}

#[test]
fn an_event_that_cannot_be_mapped_does_not_fail_its_envelope() {
    within(10, || {
        let body = json!({"eventId": "e", "data": {"events": [
            {"uuid": "good", "published": "2021-11-22T18:07:13.125Z"},
            {"uuid": "bad", "published": "2017-09-31T22:23:07.777Z"},
            "not an object",
            {"published": "2021-11-22T18:07:13.125Z"}
        ]}})
        .to_string();
        let mut buffers = Buffers::default();
        let envelope =
            parse_envelope(body.as_bytes(), &mut buffers).expect("the envelope itself is fine");
        let results: Vec<Result<String, &'static str>> = envelope
            .events
            .iter()
            .map(|e| {
                map_event(e.get().as_bytes(), &Delivery::default())
                    .map(|r| record(r).uuid)
                    .map_err(|e| e.field)
            })
            .collect();
        assert_eq!(
            results,
            vec![
                Ok("good".to_owned()),
                Err("published"),
                Err("event"),
                Err("uuid")
            ]
        );
    });
}

#[test]
fn a_body_that_is_not_an_envelope_is_rejected_naming_what_is_wrong() {
    within(10, || {
        // (what, body, the error: "not JSON", "not a JSON object", or the member named)
        #[rustfmt::skip]
        let cases = [
            ("not JSON", "{\"data\": ", "not JSON"),
            ("empty body", "", "not JSON"),
            ("an array", "[]", "not a JSON object"),
            ("a number", "12", "not a JSON object"),
            ("no data, no events", r#"{"eventId": "e"}"#, "data.events"),
            ("data without events", r#"{"data": {}}"#, "data.events"),
            ("data not an object", r#"{"data": [1]}"#, "data"),
            ("events not an array", r#"{"data": {"events": {}}}"#, "data.events"),
            ("events null", r#"{"data": {"events": null}}"#, "data.events"),
            ("bare events not an array", r#"{"events": "x"}"#, "data.events"),
        ];
        for (what, body, want) in cases {
            let error = match parse_envelope(body.as_bytes(), &mut Buffers::default()) {
                Ok(_) => panic!("{what}: accepted"),
                Err(e) => e,
            };
            let got = match &error {
                EnvelopeError::NotJson(_) => "not JSON",
                EnvelopeError::NotAnObject => "not a JSON object",
                EnvelopeError::Field { field, .. } => field,
            };
            assert_eq!(got, want, "{what}: {error}");
            assert!(
                error.to_string().contains(want),
                "{what}: the message names it: {error}"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Headers

#[test]
fn secret_headers_are_redacted_and_the_rest_kept() {
    within(10, || {
        let mut headers = http::HeaderMap::new();
        let mut add = |name: &'static str, value: &str| {
            headers.append(name, http::HeaderValue::from_str(value).unwrap());
        };
        add("Authorization", "Basic YWRtaW46c3VwZXJzZWNyZXQ=");
        add("X-Okta-Secret", "hook-secret");
        add("Proxy-Authorization", "Basic cHJveHk=");
        add("Cookie", "session=abc");
        add("Cookie", "other=def");
        add("Set-Cookie", "x=y");
        add("Accept", "application/json");
        add(
            "User-Agent",
            "Okta Hook Service v1.0.0 - who1hzk33c2pxL1Yl0h8",
        );
        add("X-Forwarded-For", "10.0.0.1");
        add("X-Forwarded-For", "10.0.0.2");

        let redacted = redact_headers(&headers, "x-okta-SECRET");
        let want: BTreeMap<String, String> = [
            ("authorization", REDACTED),
            ("x-okta-secret", REDACTED),
            ("proxy-authorization", REDACTED),
            ("cookie", REDACTED),
            ("set-cookie", REDACTED),
            ("accept", "application/json"),
            (
                "user-agent",
                "Okta Hook Service v1.0.0 - who1hzk33c2pxL1Yl0h8",
            ),
            ("x-forwarded-for", "10.0.0.1, 10.0.0.2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(redacted, want);
        let all = format!("{redacted:?}");
        for secret in ["YWRtaW46", "hook-secret", "cHJveHk", "session=abc", "x=y"] {
            assert!(!all.contains(secret), "{secret} leaked");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Any JSON value, biased towards the keys and shapes of a LogEvent so the mapper's typed
/// paths are reached, not just its rejections.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("uuid".to_owned()),
        Just("published".to_owned()),
        Just("actor".to_owned()),
        Just("target".to_owned()),
        Just("type".to_owned()),
        Just("client".to_owned()),
        Just("ipChain".to_owned()),
        Just("request".to_owned()),
        Just("zone".to_owned()),
        Just("outcome".to_owned()),
        Just("result".to_owned()),
        Just("severity".to_owned()),
        Just("debugContext".to_owned()),
        Just("debugData".to_owned()),
        Just("changedAttributes".to_owned()),
        Just("geographicalContext".to_owned()),
        Just("geolocation".to_owned()),
        Just("securityContext".to_owned()),
        Just("authenticationContext".to_owned()),
        Just("authenticationStep".to_owned()),
        Just("asNumber".to_owned()),
        Just("isProxy".to_owned()),
        Just("version".to_owned()),
        ".{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!("User")),
        Just(json!("null")),
        Just(json!("2021-11-22T18:07:13.125Z")),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics_the_mapper(value in arb_json()) {
        let text = value.to_string();
        within(10, move || {
            let _ = map_event(text.as_bytes(), &poll_delivery());
            let _ = parse_envelope(text.as_bytes(), &mut Buffers::default());
        });
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_mapper(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        within(10, move || {
            let _ = map_event(&bytes, &poll_delivery());
            let _ = parse_envelope(&bytes, &mut Buffers::default());
        });
    }

    #[test]
    fn any_object_with_uuid_and_published_maps_and_round_trips(value in arb_json()) {
        let mut object = match value {
            Value::Object(o) => o,
            other => [("payload".to_owned(), other)].into_iter().collect(),
        };
        object.insert("uuid".to_owned(), json!("u-1"));
        object.insert("published".to_owned(), json!("2021-11-22T18:07:13.125Z"));
        let event = Value::Object(object);
        within(10, move || {
            let record = map_value(&event).expect("maps");
            assert_eq!(tree(record.event_details.as_ref()), Some(to_struct(&event)));
            let decoded = Event::decode(record.encode_to_vec().as_slice()).expect("decodes");
            assert_eq!(decoded, record);
        });
    }

    #[test]
    fn arbitrary_envelopes_split_without_panicking(events in prop::collection::vec(arb_json(), 0..4)) {
        let body = json!({"eventId": "e", "data": {"events": events.clone()}}).to_string();
        within(10, move || {
            let mut buffers = Buffers::default();
            let envelope = parse_envelope(body.as_bytes(), &mut buffers).expect("an envelope");
            assert_eq!(envelope.events.len(), events.len());
            for raw in &envelope.events {
                // Mapped from the one parse of the body, as from the event's own bytes.
                let once = envelope.map(raw, &DeliveryFields::new(&Delivery::default()));
                assert_eq!(once, map_event(raw.get().as_bytes(), &Delivery::default()));
            }
        });
    }
}

#[test]
fn enums_map_exactly_the_documented_values() {
    within(10, || {
        let severities = [
            ("DEBUG", Severity::Debug),
            ("INFO", Severity::Info),
            ("WARN", Severity::Warn),
            ("ERROR", Severity::Error),
            ("Info", Severity::Info),
            ("", Severity::Unspecified),
            ("FATAL", Severity::Unspecified),
        ];
        for (raw, want) in severities {
            let record = map_value(&with(base_event(), "severity", Some(json!(raw)))).unwrap();
            assert_eq!(
                (record.severity(), record.severity_raw.as_str()),
                (want, raw)
            );
        }
        let results = [
            ("SUCCESS", Outcome::Success),
            ("FAILURE", Outcome::Failure),
            ("SKIPPED", Outcome::Skipped),
            ("ALLOW", Outcome::Allow),
            ("DENY", Outcome::Deny),
            ("CHALLENGE", Outcome::Challenge),
            ("UNKNOWN", Outcome::Unknown),
            ("RATE_LIMIT", Outcome::RateLimit),
            ("DEFERRED", Outcome::Deferred),
            ("SCHEDULED", Outcome::Scheduled),
            ("ABANDONED", Outcome::Abandoned),
            ("UNANSWERED", Outcome::Unanswered),
            ("deny", Outcome::Deny),
            ("OUTCOME_SUCCESS", Outcome::Unspecified),
        ];
        for (raw, want) in results {
            let record =
                map_value(&with(base_event(), "outcome.result", Some(json!(raw)))).unwrap();
            assert_eq!((record.result(), record.result_raw.as_str()), (want, raw));
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The JSON parser accepts exactly what serde_json accepts, and reads it the same way

/// Wraps `member` as a member of an otherwise valid LogEvent.
fn event_with_member(member: &str) -> String {
    format!(r#"{{"uuid":"u-1","published":"2021-11-22T18:07:13.125Z","x":{member}}}"#)
}

/// Maps `text` and parses it with serde_json; both must agree on accepting it and, when they
/// accept it, on its contents.
fn agrees_with_serde_json(text: &str) -> Result<(), String> {
    let ours = map_event(text.as_bytes(), &Delivery::default()).map(record);
    match (serde_json::from_str::<Value>(text), ours) {
        (Ok(value), Ok(record))
            if tree(record.event_details.as_ref()) == Some(to_struct(&value)) =>
        {
            Ok(())
        }
        (Ok(_), Ok(_)) => Err(format!("{text:?}: contents differ")),
        (Err(_), Err(e)) if e.field == "event" => Ok(()),
        (Ok(_), Err(e)) => Err(format!("{text:?}: serde_json accepts, the mapper says {e}")),
        (Err(e), Ok(_)) => Err(format!(
            "{text:?}: serde_json rejects ({e}), the mapper accepts"
        )),
        (Err(_), Err(e)) => Err(format!("{text:?}: rejected for the wrong reason: {e}")),
    }
}

/// Whatever order members arrive in, and with duplicate keys, `event_details` is byte for byte
/// what prost writes for the same `Struct` (entries in key order, the last of equal keys), so
/// stored bytes do not depend on how Okta ordered the JSON.
#[test]
fn struct_bytes_are_canonical_whatever_the_member_order() {
    within(10, || {
        let text = r#"{"published":"2021-11-22T18:07:13.125Z","abcdefgh_b":1,"abcdefgh_a":[{"z":1,"y":{"q":null,"p":true}}],"abcdefgh_b":"last","abcdefgh":4,"abc":5,"uuid":"u-1","b":6,"abcdefgh\u0000":7,"":8}"#;
        let record = record(map_event(text.as_bytes(), &Delivery::default()).expect("maps"));
        let want = to_struct(&serde_json::from_str(text).expect("json"));
        assert_eq!(
            record.event_details.as_ref().map(EncodedStruct::as_bytes),
            Some(EncodedStruct::from_struct(&want).as_bytes())
        );
    });
}

#[test]
fn json_edge_cases_are_read_as_serde_json_reads_them() {
    within(10, || {
        #[rustfmt::skip]
        let members = [
            // accepted
            r#""plain""#,
            r#""esc \" \\ \/ \b \f \n \r \t""#,
            r#""\u00e9\u4e2d\ud83d\ude80""#,
            r#""é中🚀""#,
            "\"\u{7f}\"",
            "0",
            "-0",
            "12",
            "-12",
            "1.5",
            "-0.25",
            "1e3",
            "1E+3",
            "2.5e-3",
            "123456789012345678901234567890",
            "9007199254740993",
            "-122.39999999999999",
            "1e-400",
            "true",
            "false",
            "null",
            "[]",
            "{}",
            " [ 1 , [ 2 ] , { } ] ",
            r#"{"a":1,"a":2}"#,
            // Keys sharing their first 8 bytes, out of order, one of them twice.
            r#"{"abcdefgh_b":1,"abcdefgh_a":2,"abcdefgh_b":3,"abcdefgh":4,"abc":5,"b":6,"abcdefgh\u0000":7}"#,
            "\t\r\n 1 \n",
            r#""long plain text, then an escape\n at byte 33, then more text""#,
            r#""0123456789abcdef\"0123456789abcdef\\0123456789abcdef""#,
            "\"non-ASCII ééééééé中中中中 then a quote\"",
            // rejected
            "",
            "01",
            "1.",
            ".5",
            "-",
            "+1",
            "1e",
            "1e+",
            "0x10",
            "1e400",
            "NaN",
            "Infinity",
            "tru",
            "nul",
            "True",
            "[1,]",
            "[,1]",
            "{,}",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            "'a'",
            r#""unterminated"#,
            "\"tab\there\"",
            "\"a long string with a raw tab\there\"",
            "\"0123456789abcdef0123456\u{1}\"",
            "\"ééééééééééééé\nraw newline\"",
            r#""\x""#,
            r#""\u12""#,
            r#""\u12zz""#,
            r#""\ud800""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            r#""\ud800x""#,
            "[1 2]",
            "1 2",
            "\u{feff}1",
            "/* c */ 1",
        ];
        let failures: Vec<String> = members
            .iter()
            .filter_map(|m| agrees_with_serde_json(&event_with_member(m)).err())
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // Bytes that are not UTF-8, inside and outside strings.
        for bytes in [
            &b"{\"uuid\":\"\xff\"}"[..],
            b"\xfe{}",
            b"{\"a\":\"\xc3\x28\"}",
        ] {
            let e = map_event(bytes, &Delivery::default()).expect_err("not UTF-8");
            assert_eq!(e.field, "event");
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Strings over JSON's own alphabet hit the parser's corners far more often than random
    /// bytes do.
    #[test]
    fn json_like_text_is_accepted_and_read_exactly_as_serde_json_does(
        member in r#"[\[\]{}",:0-9eE+\-. \\utrfalsn\x00\x1f\u{e9}d8c]{0,24}"#
    ) {
        let text = event_with_member(&member);
        within(10, move || {
            if let Err(e) = agrees_with_serde_json(&text) {
                panic!("{e}");
            }
        });
    }

    /// Long strings of any characters (escaped by serde_json where JSON needs it), and raw
    /// bytes put between quotes, so every position of the parser's 8-byte string scan is hit.
    #[test]
    fn long_strings_are_read_exactly_as_serde_json_does(
        text in ".{0,80}",
        raw in prop::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..0x7f], 0..40),
    ) {
        let escaped = event_with_member(&serde_json::to_string(&text).unwrap());
        let raw = event_with_member(&format!("\"{}\"", String::from_utf8_lossy(&raw)));
        within(10, move || {
            for text in [escaped, raw] {
                if let Err(e) = agrees_with_serde_json(&text) {
                    panic!("{e}");
                }
            }
        });
    }

    #[test]
    fn generated_json_is_read_exactly_as_serde_json_does(value in arb_json()) {
        let text = event_with_member(&serde_json::to_string_pretty(&value).unwrap());
        within(10, move || {
            if let Err(e) = agrees_with_serde_json(&text) {
                panic!("{e}");
            }
        });
    }
}
