//! One readable line per event for `okta-stream tail` on a terminal: who changed what for whom.
//!
//! `2026-11-22 18:07:13Z  user.account.update_profile  admin@example.com → thor@avengers.org
//! lastName: Odinson → Thor, title: Engineer → Manager  SUCCESS`
//!
//! It reads the decoded event through its descriptor (prost-reflect), by field name, so the
//! old → new values of `profile_changes` print as soon as the proto carries them, and a field
//! this build does not know is simply left out.

use prost_reflect::{DynamicMessage, ReflectMessage as _, Value};

/// The separator between an actor and the user the event is about.
const ARROW: &str = "→";

/// The event as one line (no trailing newline).
pub fn event_line(event: &DynamicMessage) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(5);
    parts.push(timestamp(event, "published").unwrap_or_else(|| "-".to_owned()));
    parts.push(non_empty(string(event, "event_type")).unwrap_or_else(|| "-".to_owned()));
    parts.push(who(event));
    if let Some(changes) = changes(event) {
        parts.push(changes);
    }
    parts.push(result(event));
    parts.join("  ")
}

/// `actor → user`, each by alternate id (login), else display name, else id.
fn who(event: &DynamicMessage) -> String {
    let name = |field: &str| {
        sub_message(event, field).and_then(|m| {
            ["alternate_id", "display_name", "id"]
                .iter()
                .find_map(|f| non_empty(string(&m, f)))
        })
    };
    match (name("actor"), name("okta_user")) {
        (Some(actor), Some(user)) => format!("{actor} {ARROW} {user}"),
        (Some(actor), None) => actor,
        (None, Some(user)) => format!("? {ARROW} {user}"),
        (None, None) => "-".to_owned(),
    }
}

/// Changed attributes: `name: old → new` for those with values (`profile_changes`), then the
/// remaining names from `changed_attributes`.
fn changes(event: &DynamicMessage) -> Option<String> {
    let mut shown: Vec<String> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    for change in list(event, "profile_changes") {
        let Value::Message(change) = change else {
            continue;
        };
        let Some(attribute) = non_empty(string(&change, "attribute")) else {
            continue;
        };
        let old = json_value(&change, "old_value");
        let new = json_value(&change, "new_value");
        parts.push(format!("{attribute}: {old} {ARROW} {new}"));
        shown.push(attribute);
    }
    for attribute in list(event, "changed_attributes") {
        if let Value::String(attribute) = attribute
            && !shown.iter().any(|s| s.eq_ignore_ascii_case(&attribute))
        {
            parts.push(attribute);
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The outcome without its enum prefix (`SUCCESS`), or Okta's raw word when the enum does not
/// know it.
fn result(event: &DynamicMessage) -> String {
    let named = enum_name(event, "result")
        .map(|name| name.trim_start_matches("OUTCOME_").to_owned())
        .filter(|name| name != "UNSPECIFIED");
    named
        .or_else(|| non_empty(string(event, "result_raw")))
        .unwrap_or_else(|| "-".to_owned())
}

/// A `google.protobuf.Value` field as a reader writes it: a non-empty string bare
/// (`Manager`), anything else as compact JSON (`null`, `""`, `["a","b"]`); `∅` when absent
/// (no earlier value known).
fn json_value(message: &DynamicMessage, field: &str) -> String {
    match field_value(message, field) {
        Some(Value::Message(value)) => match serde_json::to_value(&value) {
            Ok(serde_json::Value::String(text)) if !text.trim().is_empty() => text,
            Ok(other) => other.to_string(),
            Err(_) => "?".to_owned(),
        },
        _ => "∅".to_owned(),
    }
}

/// A Timestamp field as `YYYY-MM-DD HH:MM:SS[.mmm]Z`.
fn timestamp(message: &DynamicMessage, field: &str) -> Option<String> {
    let time = sub_message(message, field)?;
    let seconds = time.get_field_by_name("seconds")?.as_i64()?;
    let nanos = time.get_field_by_name("nanos")?.as_i32()?;
    let at = chrono::DateTime::from_timestamp(seconds, u32::try_from(nanos).ok()?)?;
    let format = if nanos == 0 {
        "%Y-%m-%d %H:%M:%SZ"
    } else {
        "%Y-%m-%d %H:%M:%S%.3fZ"
    };
    Some(at.format(format).to_string())
}

/// The field's value when this message's descriptor has it and it is set.
fn field_value(message: &DynamicMessage, field: &str) -> Option<Value> {
    let descriptor = message.descriptor().get_field_by_name(field)?;
    message
        .has_field(&descriptor)
        .then(|| message.get_field(&descriptor).into_owned())
}

fn sub_message(message: &DynamicMessage, field: &str) -> Option<DynamicMessage> {
    match field_value(message, field)? {
        Value::Message(inner) => Some(inner),
        _ => None,
    }
}

fn string(message: &DynamicMessage, field: &str) -> Option<String> {
    match field_value(message, field)? {
        Value::String(text) => Some(text),
        _ => None,
    }
}

fn list(message: &DynamicMessage, field: &str) -> Vec<Value> {
    match field_value(message, field) {
        Some(Value::List(values)) => values,
        _ => Vec::new(),
    }
}

fn enum_name(message: &DynamicMessage, field: &str) -> Option<String> {
    let descriptor = message.descriptor().get_field_by_name(field)?;
    let number = message.get_field(&descriptor).as_enum_number()?;
    let kind = descriptor.kind();
    let values = kind.as_enum()?;
    values.get_value(number).map(|v| v.name().to_owned())
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use prost::Message as _;
    use prost_reflect::DescriptorPool;

    fn event() -> proto::Event {
        proto::Event {
            uuid: "u-1".to_owned(),
            event_type: "user.account.update_profile".to_owned(),
            published: Some(prost_types::Timestamp {
                seconds: 1_795_370_833,
                nanos: 125_000_000,
            }),
            actor: Some(proto::Actor {
                alternate_id: "admin@example.com".to_owned(),
                ..Default::default()
            }),
            okta_user: Some(proto::OktaUser {
                alternate_id: "thor@avengers.org".to_owned(),
                ..Default::default()
            }),
            changed_attributes: vec!["lastName".to_owned(), "title".to_owned()],
            result: proto::Outcome::Success as i32,
            ..Default::default()
        }
    }

    fn decode(pool: &DescriptorPool, bytes: &[u8]) -> DynamicMessage {
        let descriptor = pool.get_message_by_name("okta.events.v1.Event").unwrap();
        DynamicMessage::decode(descriptor, bytes).unwrap()
    }

    #[test]
    fn a_line_says_when_what_who_for_whom_and_the_result() {
        let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let line = event_line(&decode(&pool, &event().encode_to_vec()));
        assert_eq!(
            line,
            "2026-11-22 18:07:13.125Z  user.account.update_profile  \
             admin@example.com → thor@avengers.org  lastName, title  SUCCESS"
        );
    }

    #[test]
    fn an_unknown_outcome_prints_okta_s_word_and_missing_parts_print_a_dash() {
        let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let bare = proto::Event {
            result_raw: "PARTIAL".to_owned(),
            ..Default::default()
        };
        assert_eq!(
            event_line(&decode(&pool, &bare.encode_to_vec())),
            "-  -  -  PARTIAL"
        );
    }

    #[test]
    fn profile_changes_print_old_and_new_values_before_the_other_names() {
        use prost_types::value::Kind;
        let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let value = |kind: Kind| Some(prost_types::Value { kind: Some(kind) });
        let event = proto::Event {
            profile_changes: vec![
                proto::ProfileChange {
                    attribute: "lastName".to_owned(),
                    old_value: value(Kind::StringValue("Odinson".to_owned())),
                    new_value: value(Kind::StringValue("Thor".to_owned())),
                },
                proto::ProfileChange {
                    attribute: "title".to_owned(),
                    old_value: None,
                    new_value: value(Kind::NullValue(0)),
                },
            ],
            ..event()
        };
        let bytes = event.encode_to_vec();
        let line = event_line(&decode(&pool, &bytes));
        assert!(
            line.contains(
                "admin@example.com → thor@avengers.org  \
                 lastName: Odinson → Thor, title: ∅ → null  SUCCESS"
            ),
            "{line}"
        );
    }
}
