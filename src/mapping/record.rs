//! The field-by-field mapping from a parsed LogEvent to `proto::Event`.
//!
//! Sources follow DESIGN.md "The record" and SPEC.md C/E. A sub-object Okta sent as an object
//! (even `{}`) becomes a set message; one that is absent or null stays unset. Scalars of an
//! unexpected type read as empty (see [`Read`]).

use super::delivery::Delivery;
use super::error::MappingError;
use super::json::{number_text, saturating_i64};
use super::parse::{Obj, Val};
use super::time::parse_rfc3339;
use crate::proto;

/// Maps a parsed LogEvent object (a whole document, or one event of a parsed hook body); the
/// whole of it becomes `event_details`.
pub(super) fn map(object: Obj<'_>, delivery: &Delivery) -> Result<proto::Event, MappingError> {
    let uuid = match object.get("uuid") {
        Some(Val::Str(s)) => match super::uuid::check_uuid(s) {
            Ok(()) => s.to_owned(),
            Err(problem) => return Err(error("uuid", problem)),
        },
        Some(_) => return Err(error("uuid", "is not a string")),
        None => return Err(error("uuid", "is missing or null")),
    };
    let published = match object.get("published") {
        Some(Val::Str(s)) => parse_rfc3339(s).ok_or_else(|| MappingError {
            field: "published",
            problem: format!("{s:?} is not an RFC 3339 date-time"),
        })?,
        Some(_) => return Err(error("published", "is not a string")),
        None => return Err(error("published", "is missing or null")),
    };

    let severity_raw = object.text("severity");
    let outcome = object.object("outcome");
    let result_raw = outcome.map(|o| o.text("result")).unwrap_or_default();
    let debug_context = object.object("debugContext");
    let debug_data = debug_context.and_then(|d| d.object("debugData"));
    let (changed_attributes, changed_attributes_raw) = changed_attributes(debug_data);
    let targets: Vec<proto::Target> = object
        .array("target")
        .map(|a| a.iter().filter_map(as_object).map(target).collect())
        .unwrap_or_default();
    let okta_user = targets
        .iter()
        .find(|t| t.r#type.trim().eq_ignore_ascii_case("User"))
        .map(|t| proto::OktaUser {
            id: t.id.clone(),
            alternate_id: t.alternate_id.clone(),
            display_name: t.display_name.clone(),
            r#type: t.r#type.clone(),
        });

    let event = proto::Event {
        cursor: 0,
        uuid,
        published: Some(published),
        message: object.text("displayMessage"),
        event_id: delivery.event_id.clone(),
        event_type: object.text("eventType"),
        legacy_event_type: object.text("legacyEventType"),
        event_time: delivery.event_time,
        version: object.text("version"),
        severity: severity(&severity_raw) as i32,
        severity_raw,
        result: outcome_result(&result_raw) as i32,
        result_raw,
        result_reason: outcome.map(|o| o.text("reason")).unwrap_or_default(),
        changed_attributes,
        changed_attributes_raw,
        actor: object.object("actor").map(actor),
        okta_user,
        targets,
        client: client(object.object("client"), object.object("request")),
        transaction: object.object("transaction").map(transaction),
        debug_context: debug_context.map(|_| proto::DebugContext {
            debug_data: debug_data.map(|d| d.encode()),
        }),
        authentication_context: object
            .object("authenticationContext")
            .map(authentication_context),
        security_context: object.object("securityContext").map(security_context),
        event_details: Some(object.encode()),
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
        // Attached after the journal commits the event, by the profile-values stage.
        profile_changes: Vec::new(),
        profile_values_status: proto::ProfileValuesStatus::Unspecified as i32,
        profile_values_reason: String::new(),
        profile_as_of: None,
    };
    Ok(event)
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

/// `debugData.changedAttributes`: the names (split on commas, trimmed, empty names dropped)
/// and the value as sent. Okta sends a string; an array of names is accepted too.
fn changed_attributes(debug_data: Option<Obj<'_>>) -> (Vec<String>, String) {
    let split = |raw: &str| -> Vec<String> {
        raw.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match debug_data.and_then(|d| d.get("changedAttributes")) {
        Some(Val::Str(raw)) => (split(raw), raw.to_owned()),
        Some(Val::Array(list)) => {
            let raw = list
                .iter()
                .filter_map(|v| match v {
                    Val::Str(s) => Some(s),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(",");
            (split(&raw), raw)
        }
        Some(Val::Number(n)) => {
            let raw = number_text(n);
            (split(&raw), raw)
        }
        _ => (Vec::new(), String::new()),
    }
}

fn actor(a: Obj<'_>) -> proto::Actor {
    proto::Actor {
        id: a.text("id"),
        alternate_id: a.text("alternateId"),
        display_name: a.text("displayName"),
        r#type: a.text("type"),
        detail_entry: a.object("detailEntry").map(|o| o.encode()),
    }
}

fn target(t: Obj<'_>) -> proto::Target {
    proto::Target {
        id: t.text("id"),
        r#type: t.text("type"),
        alternate_id: t.text("alternateId"),
        display_name: t.text("displayName"),
        detail_entry: t.object("detailEntry").map(|o| o.encode()),
        change_details: t.object("changeDetails").map(|o| o.encode()),
    }
}

/// `client`, with the IP chain from `client.ipChain` (hook deliveries) or, when that is absent
/// or empty, `request.ipChain` (System Log API). A client is set when either object exists.
fn client(client: Option<Obj<'_>>, request: Option<Obj<'_>>) -> Option<proto::Client> {
    let chain = client
        .and_then(|c| c.array("ipChain"))
        .filter(|chain| !chain.is_empty())
        .or_else(|| request.and_then(|r| r.array("ipChain")));
    let ip_chain: Vec<proto::IpAddress> = chain
        .map(|a| a.iter().filter_map(as_object).map(ip_address).collect())
        .unwrap_or_default();
    let Some(c) = client else {
        return (!ip_chain.is_empty()).then(|| proto::Client {
            ip_chain,
            ..Default::default()
        });
    };
    Some(proto::Client {
        user_agent: c.object("userAgent").map(|u| proto::UserAgent {
            raw_user_agent: u.text("rawUserAgent"),
            os: u.text("os"),
            browser: u.text("browser"),
        }),
        zone: c.text_not_null("zone"),
        ip_address: c.text_not_null("ipAddress"),
        device: c.text("device"),
        id: c.text("id"),
        geographical_context: c.object("geographicalContext").map(geographical_context),
        ip_chain,
    })
}

fn geographical_context(g: Obj<'_>) -> proto::GeographicalContext {
    proto::GeographicalContext {
        city: g.text("city"),
        state: g.text("state"),
        country: g.text("country"),
        postal_code: g.text("postalCode"),
        geolocation: g.object("geolocation").map(|l| proto::Geolocation {
            lat: l.number("lat").unwrap_or_default(),
            lon: l.number("lon").unwrap_or_default(),
        }),
    }
}

fn ip_address(a: Obj<'_>) -> proto::IpAddress {
    proto::IpAddress {
        ip: a.text_not_null("ip"),
        geographical_context: a.object("geographicalContext").map(geographical_context),
        version: a.text("version"),
        source: a.text("source"),
        ip_details: a.object("ipDetails").map(|o| o.encode()),
    }
}

fn transaction(t: Obj<'_>) -> proto::Transaction {
    proto::Transaction {
        id: t.text("id"),
        r#type: t.text("type"),
        detail: t.object("detail").map(|o| o.encode()),
    }
}

fn authentication_context(a: Obj<'_>) -> proto::AuthenticationContext {
    proto::AuthenticationContext {
        authentication_provider: a.text("authenticationProvider"),
        credential_provider: a.text("credentialProvider"),
        credential_type: a.text("credentialType"),
        issuer: a.object("issuer").map(|i| proto::Issuer {
            id: i.text("id"),
            r#type: i.text("type"),
        }),
        external_session_id: a.text("externalSessionId"),
        interface: a.text("interface"),
        authentication_step: a
            .number("authenticationStep")
            .map(|n| saturating_i64(n).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
            .unwrap_or_default(),
        root_session_id: a.text("rootSessionId"),
    }
}

fn security_context(s: Obj<'_>) -> proto::SecurityContext {
    proto::SecurityContext {
        as_number: s.number("asNumber").map(saturating_i64).unwrap_or_default(),
        as_org: s.text("asOrg"),
        isp: s.text("isp"),
        domain: s.text("domain"),
        is_proxy: s.bool("isProxy"),
        ip_details: s.object("ipDetails").map(|o| o.encode()),
        risk: s.object("risk").map(|o| o.encode()),
        bot_protection: s.object("botProtection").map(|o| o.encode()),
        user_behaviors: s
            .array("userBehaviors")
            .map(|a| a.iter().filter_map(as_object).map(|o| o.encode()).collect())
            .unwrap_or_default(),
    }
}
