//! Old → new values of the changed attributes of `user.account.update_profile` events: pure,
//! no I/O, so every rule of the statuses is tested here.
//!
//! Input: the stored snapshot of a user (or none), the snapshot of the profile just read from
//! Okta, and the user's pending update events in cursor order (one fetch serves them all).
//! Output: per event the changes and their status, and the snapshot to store next.
//!
//! The rules, per event with `published` time P and changed attributes C:
//! - a change per name of C the rules allow, in C's order (a name repeated in C counts once);
//!   the new value is the read profile's (null when unset there);
//! - the old value comes from the stored snapshot, but only if that snapshot was read before P
//!   (one read at or after P may already hold this change), and only for attributes no earlier
//!   event of the same batch changed (their value in between was never read);
//! - status: NO_BASELINE if any change lacks an old value; else NEWER_THAN_EVENT if the read
//!   profile's `lastUpdated` is after P; else COMPLETE.
//!
//! A snapshot kept under other attribute rules is still used for what it can tell: an attribute
//! it holds plain but that is now redacted is hashed now; one it holds hashed but that is now
//! shown has no old value; one it does not hold has no old value either (it may just not have
//! been kept), where under the same rules its absence means it was unset (old value null).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::json::AttributeValue;
use super::rules::AttributeRules;
use super::snapshot::Snapshot;
use crate::journal::{Cursor, SharedEvent};
use crate::proto;

/// The event type whose events get profile values.
pub const UPDATE_PROFILE: &str = "user.account.update_profile";

/// The cursors of `events` that can have stored values (update events), ascending.
pub fn update_cursors(events: &[SharedEvent]) -> Vec<Cursor> {
    let mut cursors: Vec<Cursor> = events
        .iter()
        .filter(|e| e.facts().event_type() == UPDATE_PROFILE)
        .map(|e| e.cursor())
        .collect();
    cursors.sort_unstable();
    cursors
}

/// One pending `user.account.update_profile` event of the user.
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    /// The event's `published` time.
    pub published: DateTime<Utc>,
    /// The event's `changed_attributes`, as mapped.
    pub changed_attributes: &'a [String],
}

/// What one event carries: its changes, their status, and the profile time.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    /// One per allowed changed attribute, in the order of `changed_attributes`.
    pub changes: Vec<proto::ProfileChange>,
    /// How far the changes can be trusted.
    pub status: proto::ProfileValuesStatus,
    /// Why there are no values (UNAVAILABLE only).
    pub reason: String,
    /// `lastUpdated` of the profile the new values come from (none when UNAVAILABLE).
    pub as_of: Option<DateTime<Utc>>,
}

impl Values {
    /// The values of an event whose user's profile could not be read in time.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            changes: Vec::new(),
            status: proto::ProfileValuesStatus::Unavailable,
            reason: reason.into(),
            as_of: None,
        }
    }

    /// Writes these values into the event's profile fields.
    pub fn attach(self, event: &mut proto::Event) {
        event.profile_changes = self.changes;
        event.profile_values_status = self.status as i32;
        event.profile_values_reason = self.reason;
        event.profile_as_of = self.as_of.map(|t| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
        });
    }
}

/// The outcome of one read of a user's profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// Per update, in the order given.
    pub values: Vec<Values>,
    /// The snapshot to store, when the read profile is newer than the stored one (or the
    /// stored one was kept under other rules); `None` keeps the stored one.
    pub store: Option<Snapshot>,
}

/// Resolves `updates` (one user's pending update events, in cursor order) against the
/// `stored` snapshot and the profile just read (`current`, a [`Snapshot::from_profile`] under
/// `rules`). See the module docs for the rules.
pub fn resolve(
    rules: &AttributeRules,
    stored: Option<&Snapshot>,
    current: &Snapshot,
    updates: &[Update<'_>],
) -> Resolution {
    let same_rules = stored.is_some_and(|s| s.rules == rules.fingerprint());
    // Lower-case names changed by earlier events of this batch.
    let mut changed_earlier: HashSet<String> = HashSet::new();
    let mut values = Vec::with_capacity(updates.len());
    for update in updates {
        let baseline = stored.filter(|s| s.as_of < update.published);
        let mut seen = HashSet::new();
        let mut changes = Vec::new();
        let mut missing_old = false;
        for name in update.changed_attributes {
            let lower = name.to_ascii_lowercase();
            if !rules.allows(name) || !seen.insert(lower.clone()) {
                continue;
            }
            let new = current
                .get(name)
                .cloned()
                .unwrap_or(AttributeValue::Plain(Value::Null));
            let old = if changed_earlier.contains(&lower) {
                None
            } else {
                baseline.and_then(|b| old_value(rules, b, name, same_rules))
            };
            missing_old |= old.is_none();
            changes.push(proto::ProfileChange {
                attribute: name.clone(),
                old_value: old.map(|v| v.to_proto()),
                new_value: Some(new.to_proto()),
            });
        }
        changed_earlier.extend(
            update
                .changed_attributes
                .iter()
                .map(|n| n.to_ascii_lowercase()),
        );
        let status = if missing_old {
            proto::ProfileValuesStatus::NoBaseline
        } else if current.as_of > update.published {
            proto::ProfileValuesStatus::NewerThanEvent
        } else {
            proto::ProfileValuesStatus::Complete
        };
        values.push(Values {
            changes,
            status,
            reason: String::new(),
            as_of: Some(current.as_of),
        });
    }
    let store = match stored {
        None => Some(current.clone()),
        Some(s) if current.as_of > s.as_of || (current.as_of == s.as_of && !same_rules) => {
            Some(current.clone())
        }
        Some(_) => None,
    };
    Resolution { values, store }
}

/// The old value of `name` that `baseline` can vouch for under today's `rules`.
fn old_value(
    rules: &AttributeRules,
    baseline: &Snapshot,
    name: &str,
    same_rules: bool,
) -> Option<AttributeValue> {
    match baseline.get(name) {
        None if same_rules => Some(AttributeValue::Plain(Value::Null)),
        None => None,
        Some(AttributeValue::Plain(value)) => Some(rules.render(name, value)),
        Some(AttributeValue::Redacted(hash)) => rules
            .redacts(name)
            .then(|| AttributeValue::Redacted(hash.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::rules::RedactionKey;
    use proptest::prelude::*;
    use proto::ProfileValuesStatus as Status;
    use serde_json::json;

    const T0: i64 = 1_764_580_000_000;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(T0 + seconds * 1000).unwrap()
    }

    fn rules(allow: &[&str], redact: &[&str]) -> AttributeRules {
        let owned = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        AttributeRules::new(
            &owned(allow),
            &owned(redact),
            RedactionKey::from_bytes([9; 32]),
        )
        .unwrap()
    }

    fn snap(rules: &AttributeRules, seconds: i64, profile: Value) -> Snapshot {
        Snapshot::from_profile(rules, profile.as_object().unwrap(), at(seconds))
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn pv(value: Value) -> Option<prost_types::Value> {
        Some(crate::profile::json::json_to_proto(&value))
    }

    fn change(attribute: &str, old: Option<Value>, new: Value) -> proto::ProfileChange {
        proto::ProfileChange {
            attribute: attribute.to_owned(),
            old_value: old.and_then(pv),
            new_value: pv(new),
        }
    }

    #[test]
    fn a_user_never_seen_before_gets_new_values_only_and_becomes_the_baseline() {
        let rules = rules(&[], &[]);
        let current = snap(
            &rules,
            10,
            json!({"title": "Manager", "department": "Sales"}),
        );
        let changed = names(&["title"]);
        let out = resolve(
            &rules,
            None,
            &current,
            &[Update {
                published: at(10),
                changed_attributes: &changed,
            }],
        );
        assert_eq!(out.values[0].status, Status::NoBaseline);
        assert_eq!(
            out.values[0].changes,
            vec![change("title", None, json!("Manager"))]
        );
        assert_eq!(out.values[0].as_of, Some(at(10)));
        assert_eq!(out.store, Some(current));
    }

    #[test]
    fn old_values_from_a_snapshot_read_before_the_event_and_new_from_a_profile_not_updated_after_it_are_complete()
     {
        let rules = rules(&[], &[]);
        let stored = snap(
            &rules,
            0,
            json!({"title": "Engineer", "mobilePhone": "1", "nickName": null}),
        );
        let current = snap(
            &rules,
            10,
            json!({"title": "Manager", "nickName": "Jo", "costCenter": 7}),
        );
        // Okta's order is kept; removed (mobilePhone) and newly set (costCenter) attributes are nulls.
        let changed = names(&["title", "mobilePhone", "nickName", "costCenter"]);
        let out = resolve(
            &rules,
            Some(&stored),
            &current,
            &[Update {
                published: at(10),
                changed_attributes: &changed,
            }],
        );
        assert_eq!(out.values[0].status, Status::Complete);
        assert_eq!(
            out.values[0].changes,
            vec![
                change("title", Some(json!("Engineer")), json!("Manager")),
                change("mobilePhone", Some(json!("1")), Value::Null),
                change("nickName", Some(Value::Null), json!("Jo")),
                change("costCenter", Some(Value::Null), json!(7)),
            ]
        );
        assert_eq!(out.store, Some(current));
    }

    #[test]
    fn a_profile_updated_after_the_event_makes_the_values_newer_than_the_event() {
        let rules = rules(&[], &[]);
        let stored = snap(&rules, 0, json!({"title": "Engineer"}));
        let current = snap(&rules, 11, json!({"title": "Director"}));
        let changed = names(&["title"]);
        let out = resolve(
            &rules,
            Some(&stored),
            &current,
            &[Update {
                published: at(10),
                changed_attributes: &changed,
            }],
        );
        assert_eq!(out.values[0].status, Status::NewerThanEvent);
        assert_eq!(
            out.values[0].changes,
            vec![change("title", Some(json!("Engineer")), json!("Director"))]
        );
        assert_eq!(out.values[0].as_of, Some(at(11)));
    }

    #[test]
    fn two_updates_in_quick_succession_served_by_one_read() {
        let rules = rules(&[], &[]);
        let stored = snap(&rules, 0, json!({"title": "Engineer", "department": "R&D"}));
        let current = snap(
            &rules,
            11,
            json!({"title": "Director", "department": "Sales"}),
        );
        let (first, second) = (names(&["title"]), names(&["title", "department"]));
        let out = resolve(
            &rules,
            Some(&stored),
            &current,
            &[
                Update {
                    published: at(10),
                    changed_attributes: &first,
                },
                Update {
                    published: at(11),
                    changed_attributes: &second,
                },
            ],
        );
        // The first event's new title may be the second's.
        assert_eq!(out.values[0].status, Status::NewerThanEvent);
        assert_eq!(
            out.values[0].changes,
            vec![change("title", Some(json!("Engineer")), json!("Director"))]
        );
        // The title between the two events was never read: no old value for it.
        assert_eq!(out.values[1].status, Status::NoBaseline);
        assert_eq!(
            out.values[1].changes,
            vec![
                change("title", None, json!("Director")),
                change("department", Some(json!("R&D")), json!("Sales")),
            ]
        );
    }

    #[test]
    fn a_snapshot_read_at_or_after_the_event_is_no_baseline_for_it() {
        let rules = rules(&[], &[]);
        // A sweep or an earlier fetch already read the profile this event produced.
        let stored = snap(&rules, 11, json!({"title": "Director"}));
        let current = snap(&rules, 11, json!({"title": "Director"}));
        let changed = names(&["title"]);
        let out = resolve(
            &rules,
            Some(&stored),
            &current,
            &[Update {
                published: at(11),
                changed_attributes: &changed,
            }],
        );
        assert_eq!(out.values[0].status, Status::NoBaseline);
        assert_eq!(
            out.values[0].changes,
            vec![change("title", None, json!("Director"))]
        );
        assert_eq!(out.store, None, "nothing newer to store");
    }

    #[test]
    fn only_allowed_attributes_are_shown_and_redacted_ones_as_matching_hashes() {
        let rules = rules(
            &["title", "mobilePhone", "email"],
            &["mobilePhone", "email"],
        );
        let stored = snap(
            &rules,
            0,
            json!({"title": "E", "mobilePhone": "555-0100", "email": "a@x", "ssn": "1"}),
        );
        let current = snap(
            &rules,
            5,
            json!({"title": "M", "mobilePhone": "555-0199", "email": "a@x", "ssn": "2"}),
        );
        let changed = names(&["ssn", "mobilePhone", "email", "title"]);
        let out = resolve(
            &rules,
            Some(&stored),
            &current,
            &[Update {
                published: at(5),
                changed_attributes: &changed,
            }],
        );
        let shown: Vec<&str> = out.values[0]
            .changes
            .iter()
            .map(|c| c.attribute.as_str())
            .collect();
        assert_eq!(shown, ["mobilePhone", "email", "title"]);
        let text = |v: &Option<prost_types::Value>| match v.as_ref().and_then(|v| v.kind.clone()) {
            Some(prost_types::value::Kind::StringValue(s)) => s,
            other => panic!("not a string: {other:?}"),
        };
        let phone = &out.values[0].changes[0];
        assert!(text(&phone.old_value).starts_with("sha256:"));
        assert_ne!(text(&phone.old_value), text(&phone.new_value));
        let email = &out.values[0].changes[1];
        assert_eq!(
            text(&email.old_value),
            text(&email.new_value),
            "equal values, equal hashes"
        );
        let stored_bytes = String::from_utf8(out.store.unwrap().encode()).unwrap();
        assert!(
            !stored_bytes.contains("555") && !stored_bytes.contains("ssn"),
            "{stored_bytes}"
        );
    }

    #[test]
    fn an_older_read_never_replaces_a_newer_snapshot() {
        let rules = rules(&[], &[]);
        let stored = snap(&rules, 20, json!({"title": "Director"}));
        let current = snap(&rules, 10, json!({"title": "Manager"}));
        let out = resolve(&rules, Some(&stored), &current, &[]);
        assert!(out.values.is_empty());
        assert_eq!(out.store, None);
    }

    #[test]
    fn a_snapshot_kept_under_other_rules_vouches_only_for_what_it_can() {
        let before = rules(&["title", "mobilePhone"], &[]);
        let now = rules(&["title", "mobilePhone", "department"], &["mobilePhone"]);
        let stored = snap(
            &before,
            0,
            json!({"title": "E", "mobilePhone": "555", "department": "R&D"}),
        );
        let current = snap(
            &now,
            10,
            json!({"title": "M", "mobilePhone": "556", "department": "Sales"}),
        );
        let changed = names(&["title", "mobilePhone", "department"]);
        let out = resolve(
            &now,
            Some(&stored),
            &current,
            &[Update {
                published: at(10),
                changed_attributes: &changed,
            }],
        );
        let changes = &out.values[0].changes;
        assert_eq!(changes[0], change("title", Some(json!("E")), json!("M")));
        // Kept plain before, redacted now: hashed now, comparable with the new hash.
        assert_eq!(
            changes[1].old_value,
            Some(now.render("mobilePhone", &json!("555")).to_proto())
        );
        // Not kept before: its absence says nothing.
        assert_eq!(changes[2], change("department", None, json!("Sales")));
        assert_eq!(out.values[0].status, Status::NoBaseline);
        assert_eq!(out.store, Some(current));
    }

    #[test]
    fn unavailable_values_carry_the_reason_and_nothing_else() {
        let mut event = proto::Event::default();
        Values::unavailable("Okta Users API: HTTP 503").attach(&mut event);
        assert_eq!(event.profile_values_status, Status::Unavailable as i32);
        assert_eq!(event.profile_values_reason, "Okta Users API: HTTP 503");
        assert!(event.profile_changes.is_empty() && event.profile_as_of.is_none());
    }

    #[test]
    fn attached_values_survive_the_record_encoding() {
        let rules = rules(&[], &[]);
        let current = snap(&rules, 3, json!({"tags": ["a", {"b": 1.5}]}));
        let changed = names(&["tags"]);
        let mut out = resolve(
            &rules,
            None,
            &current,
            &[Update {
                published: at(3),
                changed_attributes: &changed,
            }],
        );
        let mut event = proto::Event {
            uuid: "u1".into(),
            ..Default::default()
        };
        out.values.remove(0).attach(&mut event);
        let bytes = prost::Message::encode_to_vec(&event);
        let back = <proto::Event as prost::Message>::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.profile_as_of.unwrap().seconds, at(3).timestamp());
    }

    fn profile_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            "[a-c]{0,2}".prop_map(Value::String),
            (0i32..3).prop_map(|i| json!(i))
        ]
    }

    proptest! {
        /// Whatever the inputs: one change per distinct allowed name, in Okta's order, every new
        /// value present, and the status says exactly whether an old value is missing or the
        /// read is newer than the event.
        #[test]
        fn every_resolution_keeps_the_promises_of_its_status(
            old in prop::collection::btree_map("[a-e]", profile_value(), 0..5),
            new in prop::collection::btree_map("[a-e]", profile_value(), 0..5),
            stored_at in prop::option::of(0i64..20),
            read_at in 0i64..20,
            events in prop::collection::vec((0i64..20, prop::collection::vec("[a-fA-F]", 0..5)), 1..4),
            allow in prop::collection::vec("[a-e]", 0..3),
        ) {
            let allow: Vec<&str> = allow.iter().map(String::as_str).collect();
            let rules = rules(&allow, &[]);
            let stored = stored_at.map(|t| Snapshot::from_profile(&rules, &old.clone().into_iter().collect(), at(t)));
            let current = Snapshot::from_profile(&rules, &new.clone().into_iter().collect(), at(read_at));
            let updates: Vec<Update<'_>> = events.iter().map(|(t, c)| Update { published: at(*t), changed_attributes: c }).collect();
            let out = resolve(&rules, stored.as_ref(), &current, &updates);
            prop_assert_eq!(out.values.len(), updates.len());
            for (update, values) in updates.iter().zip(&out.values) {
                let mut expected: Vec<String> = Vec::new();
                for name in update.changed_attributes {
                    if rules.allows(name) && !expected.iter().any(|e| e.eq_ignore_ascii_case(name)) {
                        expected.push(name.clone());
                    }
                }
                let shown: Vec<String> = values.changes.iter().map(|c| c.attribute.clone()).collect();
                prop_assert_eq!(shown, expected);
                prop_assert!(values.changes.iter().all(|c| c.new_value.is_some()));
                let missing = values.changes.iter().any(|c| c.old_value.is_none());
                let expected_status = if missing {
                    Status::NoBaseline
                } else if at(read_at) > update.published {
                    Status::NewerThanEvent
                } else {
                    Status::Complete
                };
                prop_assert_eq!(values.status, expected_status);
                if stored.as_ref().is_none_or(|s| s.as_of >= update.published) {
                    prop_assert!(values.changes.iter().all(|c| c.old_value.is_none()));
                }
            }
            match &stored {
                None => prop_assert_eq!(out.store.as_ref(), Some(&current)),
                Some(s) if s.as_of < current.as_of => prop_assert_eq!(out.store.as_ref(), Some(&current)),
                Some(_) => prop_assert_eq!(out.store, None),
            }
        }
    }
}
