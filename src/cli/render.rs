//! One readable line per event for `okta-stream tail` on a terminal: who changed what for whom.
//!
//! `2026-11-22 18:07:13Z  user.account.update_profile  admin@example.com → thor@avengers.org
//! lastName "Odinson" → "Thor", title  SUCCESS`
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

/// Changed attributes: `name old → new` for those with values (`profile_changes`), then the
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
        parts.push(format!("{attribute} {old} {ARROW} {new}"));
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

/// A `google.protobuf.Value` field as compact JSON; `∅` when absent (not known).
fn json_value(message: &DynamicMessage, field: &str) -> String {
    match field_value(message, field) {
        Some(Value::Message(value)) => {
            serde_json::to_string(&value).unwrap_or_else(|_| "?".to_owned())
        }
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
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};

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

    /// The embedded descriptors plus `ProfileChange` and `Event.profile_changes` as issue 13
    /// defines them, so the line is checked against the shape the proto is getting.
    fn pool_with_profile_changes() -> (DescriptorPool, u32) {
        let mut set = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let file = set
            .file
            .iter_mut()
            .find(|f| f.package() == "okta.events.v1")
            .unwrap();
        let field =
            |name: &str, number: i32, kind: Type, type_name: Option<&str>| FieldDescriptorProto {
                name: Some(name.to_owned()),
                json_name: None,
                number: Some(number),
                label: Some(Label::Optional as i32),
                r#type: Some(kind as i32),
                type_name: type_name.map(str::to_owned),
                ..Default::default()
            };
        file.message_type.push(DescriptorProto {
            name: Some("ProfileChange".to_owned()),
            field: vec![
                field("attribute", 1, Type::String, None),
                field(
                    "old_value",
                    2,
                    Type::Message,
                    Some(".google.protobuf.Value"),
                ),
                field(
                    "new_value",
                    3,
                    Type::Message,
                    Some(".google.protobuf.Value"),
                ),
            ],
            ..Default::default()
        });
        let event = file
            .message_type
            .iter_mut()
            .find(|m| m.name() == "Event")
            .unwrap();
        let number = event.field.iter().filter_map(|f| f.number).max().unwrap() as u32 + 100;
        event.field.push(FieldDescriptorProto {
            label: Some(Label::Repeated as i32),
            ..field(
                "profile_changes",
                number as i32,
                Type::Message,
                Some(".okta.events.v1.ProfileChange"),
            )
        });
        if !file
            .dependency
            .iter()
            .any(|d| d == "google/protobuf/struct.proto")
        {
            file.dependency
                .push("google/protobuf/struct.proto".to_owned());
        }
        (
            DescriptorPool::from_file_descriptor_set(set).unwrap(),
            number,
        )
    }

    #[test]
    fn profile_changes_print_old_and_new_values_before_the_other_names() {
        let (pool, number) = pool_with_profile_changes();
        let change = |attribute: &str, old: Option<prost_types::value::Kind>, new| {
            let value = |kind: Option<prost_types::value::Kind>| {
                kind.map(|kind| prost_types::Value { kind: Some(kind) })
            };
            #[derive(Clone, PartialEq, prost::Message)]
            struct Change {
                #[prost(string, tag = "1")]
                attribute: String,
                #[prost(message, optional, tag = "2")]
                old_value: Option<prost_types::Value>,
                #[prost(message, optional, tag = "3")]
                new_value: Option<prost_types::Value>,
            }
            Change {
                attribute: attribute.to_owned(),
                old_value: value(old),
                new_value: value(new),
            }
            .encode_to_vec()
        };
        use prost_types::value::Kind;
        let mut bytes = event().encode_to_vec();
        for encoded in [
            change(
                "lastName",
                Some(Kind::StringValue("Odinson".to_owned())),
                Some(Kind::StringValue("Thor".to_owned())),
            ),
            change("title", None, Some(Kind::NullValue(0))),
        ] {
            prost::encoding::encode_key(
                number,
                prost::encoding::WireType::LengthDelimited,
                &mut bytes,
            );
            prost::encoding::encode_varint(encoded.len() as u64, &mut bytes);
            bytes.extend_from_slice(&encoded);
        }
        let line = event_line(&decode(&pool, &bytes));
        assert!(
            line.contains(
                "admin@example.com → thor@avengers.org  \
                 lastName \"Odinson\" → \"Thor\", title ∅ → null  SUCCESS"
            ),
            "{line}"
        );
    }
}
