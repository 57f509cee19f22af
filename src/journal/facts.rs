//! [`EventFacts`]: where the few fields of an `okta.events.v1.Event` that the service itself
//! reads lie in the record's encoding.
//!
//! A committed event is held as its encoding, shared by every subscriber. Subscribe filters,
//! the journal's dedupe and the profile-values stage read only a dozen of its fields. Their
//! strings are already in the encoding, so the facts keep only where each one lies, found by
//! one pass over the record's top-level fields that steps over the rest (the nested `Struct`s
//! that make up most of a record are never read). The mapping notes the same places as it
//! writes the record, so it need not read it back. No string is copied: the facts of a mapped
//! record, or of a stored one read back, cost no allocation.
//! [`Facts`] reads them out of the bytes. Field numbers are those of `events.proto`.

use std::ops::Range;

use prost_types::Timestamp;
use smallvec::SmallVec;

/// Where a string field's bytes lie in a record (UTF-8: written from a `str`, or checked
/// when read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Text {
    start: u32,
    end: u32,
}

impl Text {
    /// Bytes `range` of a record (records are far below 4 GiB: at most 4 MiB are stored). An
    /// empty string is the default wherever it was, so facts compare equal however found.
    pub(crate) fn of(range: Range<usize>) -> Self {
        if range.is_empty() {
            return Self::default();
        }
        Self {
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    /// The same bytes once `by` bytes were inserted before them; an empty string stays the
    /// default, as [`Text::of`] makes it.
    fn moved(self, by: usize) -> Self {
        Self::of(self.start as usize + by..self.end as usize + by)
    }
}

/// The id and login of an `Actor` or `OktaUser` (fields 1 and 2 of both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) id: Text,
    pub(crate) alternate_id: Text,
}

impl Identity {
    /// The same fields once their message's body moved `by` bytes (see `wire::message`).
    pub(crate) fn moved(self, by: usize) -> Self {
        Self {
            id: self.id.moved(by),
            alternate_id: self.alternate_id.moved(by),
        }
    }
}

/// The id, type and login of a `Target` (fields 1, 2 and 3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TargetText {
    pub(crate) id: Text,
    pub(crate) kind: Text,
    pub(crate) alternate_id: Text,
}

impl TargetText {
    /// The same fields once their message's body moved `by` bytes (see `wire::message`).
    pub(crate) fn moved(self, by: usize) -> Self {
        Self {
            id: self.id.moved(by),
            kind: self.kind.moved(by),
            alternate_id: self.alternate_id.moved(by),
        }
    }
}

/// What filters, dedupe and the profile stage read of a record: its scalars, and where its
/// strings lie in the encoding it was read from (read them through [`Facts`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFacts {
    /// `Event.cursor`: 0 until the journal commits the event.
    pub cursor: u64,
    /// `Event.published`, for `since` filters and the profile stage's ordering.
    pub published: Option<Timestamp>,
    /// `Event.severity` (a `Severity` value).
    pub severity: i32,
    /// `Event.result` (an `Outcome` value).
    pub result: i32,
    /// `Event.ingest_source` (an `IngestSource` value).
    pub ingest_source: i32,
    pub(crate) uuid: Text,
    pub(crate) event_type: Text,
    pub(crate) severity_raw: Text,
    pub(crate) changed_attributes: SmallVec<[Text; 4]>,
    pub(crate) actor: Option<Identity>,
    pub(crate) okta_user: Option<Identity>,
    pub(crate) targets: SmallVec<[TargetText; 2]>,
}

/// Why bytes are not an encoded `okta.events.v1.Event`: what was wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem} at byte {at}")]
pub struct RecordError {
    /// What the reader found.
    pub problem: &'static str,
    /// Byte offset into the record.
    pub at: usize,
}

impl EventFacts {
    /// Reads the facts of an encoded record, as a protobuf decoder would: a later occurrence
    /// of a field replaces a scalar or string and merges into a message; unknown fields are
    /// stepped over. Records longer than 4 GiB are refused (no record comes near: the largest
    /// allowed is 4 MiB).
    pub fn read(record: &[u8]) -> Result<Self, RecordError> {
        if u32::try_from(record.len()).is_err() {
            return Err(RecordError {
                problem: "record longer than 4 GiB",
                at: 0,
            });
        }
        let mut facts = Self::default();
        for field in Fields::new(record, 0..record.len()) {
            let (number, value) = field?;
            match number {
                1 => facts.cursor = value.varint()?,
                2 => facts.uuid = value.text(record)?,
                3 => {
                    let range = value.message()?;
                    let mut time = facts.published.unwrap_or_default();
                    for field in Fields::new(record, range) {
                        match field? {
                            (1, v) => time.seconds = v.varint()? as i64,
                            (2, v) => time.nanos = v.varint()? as i32,
                            _ => {}
                        }
                    }
                    facts.published = Some(time);
                }
                6 => facts.event_type = value.text(record)?,
                10 => facts.severity = value.varint()? as i32,
                11 => facts.severity_raw = value.text(record)?,
                12 => facts.result = value.varint()? as i32,
                15 => facts.changed_attributes.push(value.text(record)?),
                17 => facts.actor = Some(identity(record, value, facts.actor)?),
                18 => facts.okta_user = Some(identity(record, value, facts.okta_user)?),
                19 => {
                    let mut target = TargetText::default();
                    for field in Fields::new(record, value.message()?) {
                        match field? {
                            (1, v) => target.id = v.text(record)?,
                            (2, v) => target.kind = v.text(record)?,
                            (3, v) => target.alternate_id = v.text(record)?,
                            _ => {}
                        }
                    }
                    facts.targets.push(target);
                }
                28 => facts.ingest_source = value.varint()? as i32,
                _ => {}
            }
        }
        Ok(facts)
    }

    /// The facts read out of `record`, the encoding they were read from (or that encoding
    /// with fields appended after it, as the cursor and profile values are).
    pub fn of<'a>(&'a self, record: &'a [u8]) -> Facts<'a> {
        Facts {
            facts: self,
            record,
        }
    }
}

/// Reads an `Actor` or `OktaUser` message, merged into what an earlier occurrence gave.
fn identity(
    record: &[u8],
    value: Value,
    earlier: Option<Identity>,
) -> Result<Identity, RecordError> {
    let mut identity = earlier.unwrap_or_default();
    for field in Fields::new(record, value.message()?) {
        match field? {
            (1, v) => identity.id = v.text(record)?,
            (2, v) => identity.alternate_id = v.text(record)?,
            _ => {}
        }
    }
    Ok(identity)
}

/// The facts of one record, read out of its encoding.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    facts: &'a EventFacts,
    record: &'a [u8],
}

/// The id and login of an event's actor or Okta user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    /// Okta id.
    pub id: &'a str,
    /// Login (`alternateId`).
    pub alternate_id: &'a str,
}

/// The id, type and login of one of an event's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetFacts<'a> {
    /// `Target.id`.
    pub id: &'a str,
    /// `Target.type`, e.g. `User`.
    pub r#type: &'a str,
    /// `Target.alternate_id`.
    pub alternate_id: &'a str,
}

impl<'a> Facts<'a> {
    fn str(&self, text: Text) -> &'a str {
        // Checked when the facts were read; a record that changed since reads as empty.
        self.record
            .get(text.start as usize..text.end as usize)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or_default()
    }

    fn principal(&self, identity: Identity) -> Principal<'a> {
        Principal {
            id: self.str(identity.id),
            alternate_id: self.str(identity.alternate_id),
        }
    }

    /// `Event.cursor`: 0 until the journal commits the event.
    pub fn cursor(&self) -> u64 {
        self.facts.cursor
    }

    /// `Event.uuid`, the dedupe key.
    pub fn uuid(&self) -> &'a str {
        self.str(self.facts.uuid)
    }

    /// `Event.published`.
    pub fn published(&self) -> Option<Timestamp> {
        self.facts.published
    }

    /// `Event.event_type`.
    pub fn event_type(&self) -> &'a str {
        self.str(self.facts.event_type)
    }

    /// `Event.severity` (a `Severity` value).
    pub fn severity(&self) -> i32 {
        self.facts.severity
    }

    /// `Event.severity_raw`: an unrecognised severity passes every `min_severity`.
    pub fn severity_raw(&self) -> &'a str {
        self.str(self.facts.severity_raw)
    }

    /// `Event.result` (an `Outcome` value).
    pub fn result(&self) -> i32 {
        self.facts.result
    }

    /// `Event.ingest_source` (an `IngestSource` value).
    pub fn ingest_source(&self) -> i32 {
        self.facts.ingest_source
    }

    /// `Event.changed_attributes`, in order.
    pub fn changed_attributes(&self) -> impl Iterator<Item = &'a str> + Clone + use<'a> {
        let this = *self;
        self.facts
            .changed_attributes
            .iter()
            .map(move |&text| this.str(text))
    }

    /// `Event.actor`'s id and login, when the record has an actor.
    pub fn actor(&self) -> Option<Principal<'a>> {
        self.facts.actor.map(|identity| self.principal(identity))
    }

    /// `Event.okta_user`'s id and login, when the record has one.
    pub fn okta_user(&self) -> Option<Principal<'a>> {
        self.facts
            .okta_user
            .map(|identity| self.principal(identity))
    }

    /// `Event.targets`: id, type and login of each, in order.
    pub fn targets(&self) -> impl Iterator<Item = TargetFacts<'a>> + Clone + use<'a> {
        let this = *self;
        self.facts.targets.iter().map(move |target| TargetFacts {
            id: this.str(target.id),
            r#type: this.str(target.kind),
            alternate_id: this.str(target.alternate_id),
        })
    }
}

/// One field's value, and where the field starts.
#[derive(Debug, Clone)]
struct Value {
    wire: Wire,
    at: usize,
}

/// A field's value, by wire type.
#[derive(Debug, Clone)]
enum Wire {
    Varint(u64),
    Fixed,
    Bytes(Range<usize>),
}

impl Value {
    fn error(&self, problem: &'static str) -> RecordError {
        RecordError {
            problem,
            at: self.at,
        }
    }

    fn varint(&self) -> Result<u64, RecordError> {
        match self.wire {
            Wire::Varint(n) => Ok(n),
            Wire::Fixed | Wire::Bytes(_) => Err(self.error("a known number field is not a varint")),
        }
    }

    fn message(&self) -> Result<Range<usize>, RecordError> {
        match &self.wire {
            Wire::Bytes(range) => Ok(range.clone()),
            Wire::Varint(_) | Wire::Fixed => {
                Err(self.error("a known message field is not length-delimited"))
            }
        }
    }

    fn text(&self, record: &[u8]) -> Result<Text, RecordError> {
        let Wire::Bytes(range) = self.wire.clone() else {
            return Err(self.error("a known string field is not length-delimited"));
        };
        match std::str::from_utf8(&record[range.clone()]) {
            Ok(_) => Ok(Text::of(range)),
            Err(e) => Err(RecordError {
                problem: "a string field is not valid UTF-8",
                at: range.start + e.valid_up_to(),
            }),
        }
    }
}

/// The fields of the message at `record[range]`, in order.
struct Fields<'a> {
    record: &'a [u8],
    at: usize,
    end: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(record: &'a [u8], range: Range<usize>) -> Self {
        Self {
            record,
            at: range.start,
            end: range.end,
            failed: false,
        }
    }

    fn error(&mut self, problem: &'static str) -> RecordError {
        self.failed = true;
        RecordError {
            problem,
            at: self.at,
        }
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut n = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(&byte) = self.record[..self.end].get(self.at) else {
                return Err(self.error("truncated varint"));
            };
            self.at += 1;
            n |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(n);
            }
        }
        Err(self.error("varint longer than ten bytes"))
    }

    fn skip(&mut self, len: usize) -> Result<Range<usize>, RecordError> {
        let start = self.at;
        match start.checked_add(len).filter(|&end| end <= self.end) {
            Some(end) => {
                self.at = end;
                Ok(start..end)
            }
            None => Err(self.error("field runs past the end of its message")),
        }
    }

    fn field(&mut self) -> Result<(u32, Value), RecordError> {
        let at = self.at;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).unwrap_or(0);
        if number == 0 || number > (1 << 29) - 1 {
            return Err(self.error("invalid field number"));
        }
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Wire::Fixed
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| self.error("length too large"))?;
                Wire::Bytes(self.skip(len)?)
            }
            5 => {
                self.skip(4)?;
                Wire::Fixed
            }
            _ => return Err(self.error("unsupported wire type")),
        };
        Ok((number, Value { wire, at }))
    }
}

impl Iterator for Fields<'_> {
    type Item = Result<(u32, Value), RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        (!self.failed && self.at < self.end).then(|| self.field())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::{Actor, Event, OktaUser, Target};

    fn record() -> Event {
        Event {
            cursor: 7,
            uuid: "u-1".into(),
            published: Some(Timestamp {
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
            targets: vec![
                Target {
                    id: "00uB".into(),
                    r#type: "User".into(),
                    alternate_id: "bo@example.com".into(),
                    display_name: "Bo".into(),
                    ..Default::default()
                },
                Target {
                    id: "0oa1".into(),
                    r#type: "AppInstance".into(),
                    ..Default::default()
                },
            ],
            ingest_source: 1,
            ..Default::default()
        }
    }

    #[test]
    fn reading_a_record_finds_every_fact_it_holds() {
        let bytes = record().encode_to_vec();
        let read = EventFacts::read(&bytes).expect("reads");
        let facts = read.of(&bytes);
        assert_eq!(facts.cursor(), 7);
        assert_eq!(facts.uuid(), "u-1");
        assert_eq!(facts.published(), record().published);
        assert_eq!(facts.event_type(), "user.account.update_profile");
        assert_eq!((facts.severity(), facts.severity_raw()), (2, "INFO"));
        assert_eq!((facts.result(), facts.ingest_source()), (1, 1));
        assert_eq!(
            facts.changed_attributes().collect::<Vec<_>>(),
            ["title", "department"]
        );
        assert_eq!(
            facts.actor(),
            Some(Principal {
                id: "00uA",
                alternate_id: "admin@example.com"
            })
        );
        assert_eq!(facts.okta_user().map(|u| u.id), Some("00uB"));
        let targets: Vec<_> = facts.targets().collect();
        assert_eq!(targets.len(), 2);
        assert_eq!(
            (targets[0].r#type, targets[0].alternate_id),
            ("User", "bo@example.com")
        );
        assert_eq!((targets[1].id, targets[1].alternate_id), ("0oa1", ""));
    }

    #[test]
    fn an_empty_record_has_empty_facts() {
        let read = EventFacts::read(&[]).expect("reads");
        let facts = read.of(&[]);
        assert_eq!((facts.uuid(), facts.cursor()), ("", 0));
        assert!(facts.actor().is_none() && facts.published().is_none());
        assert_eq!(facts.targets().count(), 0);
    }

    #[test]
    fn fields_appended_later_are_merged_as_a_full_decode_would() {
        // The journal appends the cursor to an encoded record; the last value wins, and a
        // message field given twice is merged.
        let mut record = record();
        record.cursor = 0;
        let mut bytes = record.encode_to_vec();
        bytes.extend_from_slice(&[0x08, 42]);
        let later = Event {
            actor: Some(Actor {
                alternate_id: "other@example.com".into(),
                ..Default::default()
            }),
            changed_attributes: vec!["city".into()],
            ..Default::default()
        };
        bytes.extend_from_slice(&later.encode_to_vec());
        let merged = Event::decode(bytes.as_slice()).expect("decodes");
        let read = EventFacts::read(&bytes).expect("reads");
        let facts = read.of(&bytes);
        assert_eq!(facts.cursor(), 42);
        let actor = facts.actor().expect("an actor");
        let want = merged.actor.expect("an actor");
        assert_eq!(
            (actor.id, actor.alternate_id),
            (&*want.id, &*want.alternate_id)
        );
        assert_eq!(
            facts.changed_attributes().collect::<Vec<_>>(),
            merged.changed_attributes
        );
    }

    #[test]
    fn damaged_records_are_refused_saying_what_was_wrong() {
        let bytes = record().encode_to_vec();
        let cases: [(&str, Vec<u8>, &str); 6] = [
            ("a string cut short", vec![0x12, 0x05, b'a'], "past the end"),
            (
                "cut in a varint",
                bytes[..bytes.len() - 1].to_vec(),
                "truncated varint",
            ),
            ("field number 0", vec![0x00, 0x01], "invalid field number"),
            ("a group", vec![0x0b], "unsupported wire type"),
            ("uuid as a varint", vec![0x10, 0x01], "string field"),
            (
                "uuid not UTF-8",
                vec![0x12, 0x02, 0xff, 0xfe],
                "not valid UTF-8",
            ),
        ];
        for (what, bytes, want) in cases {
            let error = EventFacts::read(&bytes).expect_err(what);
            assert!(error.to_string().contains(want), "{what}: {error}");
            assert!(
                Event::decode(bytes.as_slice()).is_err(),
                "{what}: prost agrees"
            );
        }
    }
}
