//! [`EventFacts`]: the few fields of an `okta.events.v1.Event` that the service itself reads.
//!
//! A committed event is held as its encoding, shared by every subscriber. Subscribe filters,
//! the journal's dedupe and the profile-values stage read only a dozen of its fields, so those
//! are kept beside it: the mapping fills them as it writes the record, and a stored record is
//! decoded into them by this partial message (protobuf skips the fields a message does not
//! name), so the nested `Struct`s that make up most of a record are never decoded to be
//! streamed or matched. Field numbers are those of `events.proto`.

use crate::proto::{Event, Target};

/// What filters, dedupe and the profile stage read of a record: filled by the mapping, or
/// decoded from a stored encoding, the rest of which is stepped over.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventFacts {
    /// `Event.cursor`: 0 until the journal commits the event.
    #[prost(uint64, tag = "1")]
    pub cursor: u64,
    /// `Event.uuid`, the dedupe key.
    #[prost(string, tag = "2")]
    pub uuid: String,
    /// `Event.published`, for `since` filters and the profile stage's ordering.
    #[prost(message, optional, tag = "3")]
    pub published: Option<prost_types::Timestamp>,
    /// `Event.event_type`.
    #[prost(string, tag = "6")]
    pub event_type: String,
    /// `Event.severity` (a `Severity` value).
    #[prost(int32, tag = "10")]
    pub severity: i32,
    /// `Event.severity_raw`: an unrecognised severity passes every `min_severity`.
    #[prost(string, tag = "11")]
    pub severity_raw: String,
    /// `Event.result` (an `Outcome` value).
    #[prost(int32, tag = "12")]
    pub result: i32,
    /// `Event.changed_attributes`.
    #[prost(string, repeated, tag = "15")]
    pub changed_attributes: Vec<String>,
    /// `Event.actor`'s id and login.
    #[prost(message, optional, tag = "17")]
    pub actor: Option<Principal>,
    /// `Event.okta_user`'s id and login.
    #[prost(message, optional, tag = "18")]
    pub okta_user: Option<Principal>,
    /// `Event.targets`: type, id and login of each.
    #[prost(message, repeated, tag = "19")]
    pub targets: Vec<TargetFacts>,
    /// `Event.ingest_source` (an `IngestSource` value).
    #[prost(int32, tag = "28")]
    pub ingest_source: i32,
}

/// The id and login of an `Actor` or `OktaUser` (fields 1 and 2 of both).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Principal {
    /// Okta id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Login (`alternateId`).
    #[prost(string, tag = "2")]
    pub alternate_id: String,
}

/// The id, type and login of a `Target`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TargetFacts {
    /// `Target.id`.
    #[prost(string, tag = "1")]
    pub id: String,
    /// `Target.type`, e.g. `User`.
    #[prost(string, tag = "2")]
    pub r#type: String,
    /// `Target.alternate_id`.
    #[prost(string, tag = "3")]
    pub alternate_id: String,
}

impl EventFacts {
    /// The facts of a record held decoded (records built by hand, in tests and tools).
    pub fn of(event: &Event) -> Self {
        let principal = |id: &str, alternate_id: &str| Principal {
            id: id.to_owned(),
            alternate_id: alternate_id.to_owned(),
        };
        Self {
            cursor: event.cursor,
            uuid: event.uuid.clone(),
            published: event.published,
            event_type: event.event_type.clone(),
            severity: event.severity,
            severity_raw: event.severity_raw.clone(),
            result: event.result,
            changed_attributes: event.changed_attributes.clone(),
            actor: event
                .actor
                .as_ref()
                .map(|a| principal(&a.id, &a.alternate_id)),
            okta_user: event
                .okta_user
                .as_ref()
                .map(|u| principal(&u.id, &u.alternate_id)),
            targets: event.targets.iter().map(TargetFacts::of).collect(),
            ingest_source: event.ingest_source,
        }
    }
}

impl TargetFacts {
    fn of(target: &Target) -> Self {
        Self {
            id: target.id.clone(),
            r#type: target.r#type.clone(),
            alternate_id: target.alternate_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::{Actor, OktaUser, Target};

    fn record() -> Event {
        Event {
            cursor: 7,
            uuid: "u-1".into(),
            published: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            message: "User update Okta profile".into(),
            event_type: "user.account.update_profile".into(),
            severity: 2,
            severity_raw: "INFO".into(),
            result: 1,
            changed_attributes: vec!["title".into(), "department".into()],
            actor: Some(Actor {
                id: "00uA".into(),
                alternate_id: "admin@example.com".into(),
                display_name: "Admin".into(),
                ..Default::default()
            }),
            okta_user: Some(OktaUser {
                id: "00uB".into(),
                alternate_id: "bo@example.com".into(),
                ..Default::default()
            }),
            targets: vec![Target {
                id: "00uB".into(),
                r#type: "User".into(),
                alternate_id: "bo@example.com".into(),
                display_name: "Bo".into(),
                ..Default::default()
            }],
            ingest_source: 1,
            ..Default::default()
        }
    }

    #[test]
    fn decoding_a_record_reads_the_same_facts_as_the_record_holds() {
        let record = record();
        let decoded = EventFacts::decode(record.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, EventFacts::of(&record));
        assert_eq!(decoded.cursor, 7);
        assert_eq!(decoded.changed_attributes, ["title", "department"]);
        assert_eq!(decoded.targets[0].r#type, "User");
    }

    #[test]
    fn fields_appended_later_are_merged_as_a_full_decode_would() {
        // The journal appends the cursor to an encoded record; the last value wins.
        let mut record = record();
        record.cursor = 0;
        let mut bytes = record.encode_to_vec();
        bytes.extend_from_slice(&[0x08, 42]);
        assert_eq!(
            EventFacts::decode(bytes.as_slice())
                .expect("decodes")
                .cursor,
            42
        );
    }
}
