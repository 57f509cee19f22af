//! The field-by-field mapping from a parsed LogEvent to the encoded `okta.events.v1.Event`.
//!
//! Sources follow DESIGN.md "The record" and SPEC.md C/E. A sub-object Okta sent as an object
//! (even `{}`) becomes a set message; one that is absent or null stays unset. Scalars of an
//! unexpected type read as empty (see [`Obj::text`]). The record is written field by field as the
//! LogEvent is read ([`wire`]); the delivery's fields, the same for each of its events, are
//! appended as encoded once ([`DeliveryFields`]). Field numbers are those of `events.proto`.

use std::borrow::Cow;

use super::delivery::DeliveryFields;
use super::error::MappingError;
use super::json::{self, number_text, saturating_i64};
use super::parse::{Obj, Val};
use super::time::parse_rfc3339;
use super::wire::{self, bool_present, double, int, message, string, string_at};
use crate::journal::{EventFacts, Identity, TargetText, Text};
use crate::proto;

/// One LogEvent mapped: the record, and what the journal keeps of it to match filters.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedEvent {
    /// The record encoded as an `okta.events.v1.Event` without its cursor (the journal
    /// assigns it), with room left at the end for the cursor field.
    pub encoded: Vec<u8>,
    /// Where the fields filters, dedupe and the profile stage read lie in `encoded`.
    pub facts: EventFacts,
}

/// The LogEvent members the mapping reads, in byte order, read in one pass
/// ([`Obj::get_sorted`]).
const TOP_LEVEL: [&str; 16] = [
    "actor",
    "authenticationContext",
    "client",
    "debugContext",
    "displayMessage",
    "eventType",
    "legacyEventType",
    "outcome",
    "published",
    "request",
    "securityContext",
    "severity",
    "target",
    "transaction",
    "uuid",
    "version",
];

/// Room kept at the end of a record for the cursor field the journal appends, so committing
/// never copies the record.
const CURSOR_ROOM: usize = crate::journal::CURSOR_FIELD_MAX_BYTES;

/// Maps a parsed LogEvent object (a whole document, or one event of a parsed hook body) to
/// the record's encoding, without its cursor, and the facts the journal keeps beside it; the
/// whole of the object becomes `event_details`.
pub(super) fn map(object: Obj<'_>, delivery: &DeliveryFields) -> Result<MappedEvent, MappingError> {
    let [
        actor,
        authentication_member,
        client_member,
        debug_context,
        display_message,
        event_type,
        legacy_event_type,
        outcome,
        published,
        request,
        security_member,
        severity_member,
        target,
        transaction,
        uuid,
        version,
    ] = object.get_sorted(&TOP_LEVEL);
    let uuid = match uuid {
        Some(Val::Str(s)) => match super::uuid::check_uuid(s) {
            Ok(()) => s,
            Err(problem) => return Err(error("uuid", problem)),
        },
        Some(_) => return Err(error("uuid", "is not a string")),
        None => return Err(error("uuid", "is missing or null")),
    };
    let published = match published {
        Some(Val::Str(s)) => parse_rfc3339(s).ok_or_else(|| MappingError {
            field: "published",
            problem: format!("{s:?} is not an RFC 3339 date-time"),
        })?,
        Some(_) => return Err(error("published", "is not a string")),
        None => return Err(error("published", "is missing or null")),
    };

    // `event_details` holds the whole LogEvent again, so the typed fields take about half
    // as much besides.
    let details = object.encoded_len();
    let out = &mut Vec::with_capacity(details * 3 / 2 + delivery.len() + CURSOR_ROOM + 64);
    // Where each fact's string is written: top-level fields stay where they are written, and
    // those inside a message move with its body (see `wire::message`).
    let mut facts = EventFacts {
        published: Some(published),
        ingest_source: delivery.ingest_source(),
        ..EventFacts::default()
    };
    facts.uuid = Text::of(string_at(out, 2, uuid));
    wire::timestamp(out, 3, &published);
    string(out, 4, &json::text(display_message));
    facts.event_type = Text::of(string_at(out, 6, &json::text(event_type)));
    string(out, 7, &json::text(legacy_event_type));
    string(out, 9, &json::text(version));

    let severity_raw = json::text(severity_member);
    facts.severity = severity(&severity_raw) as i32;
    int(out, 10, facts.severity.into());
    facts.severity_raw = Text::of(string_at(out, 11, &severity_raw));
    let outcome = json::object(outcome);
    let result_raw = outcome.map(|o| o.text("result")).unwrap_or_default();
    facts.result = outcome_result(&result_raw) as i32;
    int(out, 12, facts.result.into());
    string(out, 13, &result_raw);
    if let Some(outcome) = outcome {
        string(out, 14, &outcome.text("reason"));
    }

    let debug_context = json::object(debug_context);
    let debug_data = debug_context.and_then(|d| d.object("debugData"));
    let changed_raw = changed_attributes(debug_data);
    for name in changed_raw.split(',').map(str::trim) {
        if !name.is_empty() {
            facts
                .changed_attributes
                .push(Text::of(string_at(out, 15, name)));
        }
    }
    string(out, 16, &changed_raw);

    if let Some(actor) = json::object(actor) {
        let mut written = Identity::default();
        let moved = message(out, 17, |out| {
            written = identity(out, actor);
            write_struct(out, 5, actor.object("detailEntry"));
        });
        facts.actor = Some(written.moved(moved));
    }
    let target_array = json::array(target);
    let targets = || {
        target_array
            .iter()
            .flat_map(|a| a.iter())
            .filter_map(as_object)
    };
    if let Some(user) = targets().find(|t| t.text("type").trim().eq_ignore_ascii_case("User")) {
        let mut written = Identity::default();
        let moved = message(out, 18, |out| written = identity(out, user));
        facts.okta_user = Some(written.moved(moved));
    }
    for target in targets() {
        let mut written = TargetText::default();
        let moved = message(out, 19, |out| {
            written = TargetText {
                id: Text::of(string_at(out, 1, &target.text("id"))),
                kind: Text::of(string_at(out, 2, &target.text("type"))),
                alternate_id: Text::of(string_at(out, 3, &target.text("alternateId"))),
            };
            string(out, 4, &target.text("displayName"));
            write_struct(out, 5, target.object("detailEntry"));
            write_struct(out, 6, target.object("changeDetails"));
        });
        facts.targets.push(written.moved(moved));
    }

    client(out, json::object(client_member), json::object(request));
    if let Some(transaction) = json::object(transaction) {
        message(out, 21, |out| {
            string(out, 1, &transaction.text("id"));
            string(out, 2, &transaction.text("type"));
            write_struct(out, 3, transaction.object("detail"));
        });
    }
    if debug_context.is_some() {
        message(out, 22, |out| write_struct(out, 1, debug_data));
    }
    if let Some(authentication) = json::object(authentication_member) {
        message(out, 23, |out| authentication_context(out, authentication));
    }
    if let Some(security) = json::object(security_member) {
        message(out, 24, |out| security_context(out, security));
    }
    object.write_field(25, out);
    // `event_id`, `event_time`, `headers`, `source`, `ingest_source`, `received`. The profile
    // fields (30-33) are attached after the journal commits the event, by the profile stage.
    out.extend_from_slice(delivery.as_bytes());
    // A no-op unless the estimate above fell short.
    out.reserve(CURSOR_ROOM);

    Ok(MappedEvent {
        encoded: std::mem::take(out),
        facts,
    })
}

/// Writes the fields `Actor` and `OktaUser` share (`id`, `alternate_id`, `display_name`,
/// `type`: 1-4) and returns where the id and login the facts keep were written.
fn identity(out: &mut Vec<u8>, o: Obj<'_>) -> Identity {
    let id = Text::of(string_at(out, 1, &o.text("id")));
    let alternate_id = Text::of(string_at(out, 2, &o.text("alternateId")));
    string(out, 3, &o.text("displayName"));
    string(out, 4, &o.text("type"));
    Identity { id, alternate_id }
}

/// Appends a free-form sub-object as a `google.protobuf.Struct` field, when it is an object.
fn write_struct(out: &mut Vec<u8>, field: u32, object: Option<Obj<'_>>) {
    if let Some(object) = object {
        object.write_field(field, out);
    }
}

fn error(field: &'static str, problem: &str) -> MappingError {
    MappingError {
        field,
        problem: problem.to_owned(),
    }
}

fn as_object(v: Val<'_>) -> Option<Obj<'_>> {
    match v {
        Val::Object(o) => Some(o),
        _ => None,
    }
}

/// LogEvent `severity`, matched ignoring case; unknown values are UNSPECIFIED (raw kept).
fn severity(raw: &str) -> proto::Severity {
    use proto::Severity as S;
    const KNOWN: [(&str, S); 4] = [
        ("DEBUG", S::Debug),
        ("INFO", S::Info),
        ("WARN", S::Warn),
        ("ERROR", S::Error),
    ];
    let raw = raw.trim();
    KNOWN
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(raw))
        .map_or(S::Unspecified, |(_, s)| *s)
}

/// LogEvent `outcome.result`, matched ignoring case (`"Success"` is seen in preview
/// deliveries); unknown values are UNSPECIFIED (raw kept).
fn outcome_result(raw: &str) -> proto::Outcome {
    use proto::Outcome as O;
    const KNOWN: [(&str, O); 12] = [
        ("SUCCESS", O::Success),
        ("FAILURE", O::Failure),
        ("SKIPPED", O::Skipped),
        ("ALLOW", O::Allow),
        ("DENY", O::Deny),
        ("CHALLENGE", O::Challenge),
        ("UNKNOWN", O::Unknown),
        ("RATE_LIMIT", O::RateLimit),
        ("DEFERRED", O::Deferred),
        ("SCHEDULED", O::Scheduled),
        ("ABANDONED", O::Abandoned),
        ("UNANSWERED", O::Unanswered),
    ];
    let raw = raw.trim();
    KNOWN
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(raw))
        .map_or(O::Unspecified, |(_, o)| *o)
}

/// `debugData.changedAttributes` as sent: the record's names are this split on commas,
/// trimmed, empty names dropped. Okta sends a string; an array of names is accepted too.
fn changed_attributes(debug_data: Option<Obj<'_>>) -> Cow<'_, str> {
    match debug_data.and_then(|d| d.get("changedAttributes")) {
        Some(Val::Str(raw)) => Cow::Borrowed(raw),
        Some(Val::Array(list)) => Cow::Owned(
            list.iter()
                .filter_map(|v| match v {
                    Val::Str(s) => Some(s),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        Some(Val::Number(n)) => Cow::Owned(number_text(n)),
        _ => Cow::Borrowed(""),
    }
}

/// `client` (20), with the IP chain from `client.ipChain` (hook deliveries) or, when that is
/// absent or empty, `request.ipChain` (System Log API). A client is set when either object
/// exists.
fn client(out: &mut Vec<u8>, client: Option<Obj<'_>>, request: Option<Obj<'_>>) {
    let chain = client
        .and_then(|c| c.array("ipChain"))
        .filter(|chain| !chain.is_empty())
        .or_else(|| request.and_then(|r| r.array("ipChain")));
    let ip_chain = || chain.iter().flat_map(|a| a.iter()).filter_map(as_object);
    let write_chain = |out: &mut Vec<u8>| {
        for address in ip_chain() {
            message(out, 7, |out| ip_address(out, address));
        }
    };
    let Some(c) = client else {
        if ip_chain().next().is_some() {
            message(out, 20, write_chain);
        }
        return;
    };
    message(out, 20, |out| {
        if let Some(agent) = c.object("userAgent") {
            message(out, 1, |out| {
                string(out, 1, &agent.text("rawUserAgent"));
                string(out, 2, &agent.text("os"));
                string(out, 3, &agent.text("browser"));
            });
        }
        string(out, 2, &c.text_not_null("zone"));
        string(out, 3, &c.text_not_null("ipAddress"));
        string(out, 4, &c.text("device"));
        string(out, 5, &c.text("id"));
        if let Some(geo) = c.object("geographicalContext") {
            message(out, 6, |out| geographical_context(out, geo));
        }
        write_chain(out);
    });
}

fn geographical_context(out: &mut Vec<u8>, g: Obj<'_>) {
    string(out, 1, &g.text("city"));
    string(out, 2, &g.text("state"));
    string(out, 3, &g.text("country"));
    string(out, 4, &g.text("postalCode"));
    if let Some(location) = g.object("geolocation") {
        message(out, 5, |out| {
            double(out, 1, location.number("lat").unwrap_or_default());
            double(out, 2, location.number("lon").unwrap_or_default());
        });
    }
}

fn ip_address(out: &mut Vec<u8>, a: Obj<'_>) {
    string(out, 1, &a.text_not_null("ip"));
    if let Some(geo) = a.object("geographicalContext") {
        message(out, 2, |out| geographical_context(out, geo));
    }
    string(out, 3, &a.text("version"));
    string(out, 4, &a.text("source"));
    write_struct(out, 5, a.object("ipDetails"));
}

fn authentication_context(out: &mut Vec<u8>, a: Obj<'_>) {
    string(out, 1, &a.text("authenticationProvider"));
    string(out, 2, &a.text("credentialProvider"));
    string(out, 3, &a.text("credentialType"));
    if let Some(issuer) = a.object("issuer") {
        message(out, 4, |out| {
            string(out, 1, &issuer.text("id"));
            string(out, 2, &issuer.text("type"));
        });
    }
    string(out, 5, &a.text("externalSessionId"));
    string(out, 6, &a.text("interface"));
    let step = a
        .number("authenticationStep")
        .map(|n| saturating_i64(n).clamp(i64::from(i32::MIN), i64::from(i32::MAX)))
        .unwrap_or_default();
    int(out, 7, step);
    string(out, 8, &a.text("rootSessionId"));
}

fn security_context(out: &mut Vec<u8>, s: Obj<'_>) {
    int(
        out,
        1,
        s.number("asNumber").map(saturating_i64).unwrap_or_default(),
    );
    string(out, 2, &s.text("asOrg"));
    string(out, 3, &s.text("isp"));
    string(out, 4, &s.text("domain"));
    if let Some(is_proxy) = s.bool("isProxy") {
        bool_present(out, 5, is_proxy);
    }
    write_struct(out, 6, s.object("ipDetails"));
    write_struct(out, 7, s.object("risk"));
    write_struct(out, 8, s.object("botProtection"));
    if let Some(behaviors) = s.array("userBehaviors") {
        for behavior in behaviors.iter().filter_map(as_object) {
            behavior.write_field(9, out);
        }
    }
}
