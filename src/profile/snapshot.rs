//! The last known profile of a user, as okta-stream keeps it: only allowed attributes,
//! redacted ones as hashes, stamped with the `lastUpdated` of the profile it was read from.
//!
//! Stored as a small JSON document (`{"v":1,"t":<ms>,"f":<rules>,"p":{...},"r":{...}}`):
//! plain values under `p`, redacted ones under `r`, so a plain object can never be mistaken
//! for a hash. A typical profile of a dozen attributes takes a few hundred bytes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::json::AttributeValue;
use super::rules::AttributeRules;

/// Format version written in every stored snapshot.
const FORMAT: u32 = 1;

/// The kept profile of one user at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The `lastUpdated` of the profile these values were read from.
    pub as_of: DateTime<Utc>,
    /// [`AttributeRules::fingerprint`] of the rules the values were kept under.
    pub rules: u64,
    /// Allowed attributes by Okta's name; absent attributes were unset in that profile.
    pub attributes: BTreeMap<String, AttributeValue>,
}

/// Why stored bytes are not a snapshot.
#[derive(Debug, thiserror::Error)]
#[error("stored profile snapshot does not decode: {0}")]
pub struct DecodeError(String);

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    v: u32,
    t: i64,
    f: u64,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    p: serde_json::Map<String, Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    r: BTreeMap<String, String>,
}

impl Snapshot {
    /// Keeps what `rules` allow of a profile read from Okta (`profile` of
    /// `GET /api/v1/users/{id}`, last updated at `as_of`), hashing redacted values.
    pub fn from_profile(
        rules: &AttributeRules,
        profile: &serde_json::Map<String, Value>,
        as_of: DateTime<Utc>,
    ) -> Self {
        let attributes = profile
            .iter()
            .filter(|(name, _)| rules.allows(name))
            .map(|(name, value)| (name.clone(), rules.render(name, value)))
            .collect();
        Self {
            as_of,
            rules: rules.fingerprint(),
            attributes,
        }
    }

    /// The kept value of `attribute`: by Okta's exact name, else ignoring ASCII case.
    pub fn get(&self, attribute: &str) -> Option<&AttributeValue> {
        self.attributes.get(attribute).or_else(|| {
            self.attributes
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(attribute))
                .map(|(_, value)| value)
        })
    }

    /// Names of the attributes whose values differ between `self` and `newer` (compared as
    /// JSON, arrays and nested objects included; an attribute present in one only counts
    /// unless its value there is null), sorted.
    pub fn changed_attributes(&self, newer: &Snapshot) -> Vec<String> {
        let null = AttributeValue::Plain(Value::Null);
        let mut names: Vec<&String> = self
            .attributes
            .keys()
            .chain(newer.attributes.keys())
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|name| {
                let old = self.attributes.get(*name).unwrap_or(&null);
                let new = newer.attributes.get(*name).unwrap_or(&null);
                !old.same_as(new)
            })
            .cloned()
            .collect()
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut stored = Stored {
            v: FORMAT,
            t: self.as_of.timestamp_millis(),
            f: self.rules,
            p: serde_json::Map::new(),
            r: BTreeMap::new(),
        };
        for (name, value) in &self.attributes {
            match value {
                AttributeValue::Plain(v) => {
                    stored.p.insert(name.clone(), v.clone());
                }
                AttributeValue::Redacted(h) => {
                    stored.r.insert(name.clone(), h.clone());
                }
            }
        }
        // Serialising a map of JSON values cannot fail.
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let stored: Stored =
            serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))?;
        if stored.v != FORMAT {
            return Err(DecodeError(format!("unknown format version {}", stored.v)));
        }
        let as_of = DateTime::from_timestamp_millis(stored.t)
            .ok_or_else(|| DecodeError(format!("time {} out of range", stored.t)))?;
        let mut attributes: BTreeMap<String, AttributeValue> = stored
            .p
            .into_iter()
            .map(|(k, v)| (k, AttributeValue::Plain(v)))
            .collect();
        for (name, hash) in stored.r {
            attributes.insert(name, AttributeValue::Redacted(hash));
        }
        Ok(Self {
            as_of,
            rules: stored.f,
            attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::json::{canonical_json, json_equal};
    use crate::profile::rules::RedactionKey;
    use proptest::prelude::*;
    use serde_json::json;

    fn rules(allow: &[&str], redact: &[&str]) -> AttributeRules {
        let owned = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        AttributeRules::new(
            &owned(allow),
            &owned(redact),
            RedactionKey::from_bytes([3; 32]),
        )
        .unwrap()
    }

    fn time(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn profile(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_snapshot_keeps_only_allowed_attributes_and_hashes_redacted_ones() {
        let rules = rules(&["title", "mobilePhone", "manager"], &["mobilePhone"]);
        let snap = Snapshot::from_profile(
            &rules,
            &profile(
                json!({"title": "Engineer", "mobilePhone": "+1 555", "ssn": "123", "manager": null}),
            ),
            time(1_000),
        );
        assert_eq!(snap.attributes.len(), 3);
        assert!(snap.get("ssn").is_none());
        assert_eq!(
            snap.get("TITLE"),
            Some(&AttributeValue::Plain(json!("Engineer")))
        );
        assert_eq!(
            snap.get("manager"),
            Some(&AttributeValue::Plain(Value::Null))
        );
        assert!(
            matches!(snap.get("mobilePhone"), Some(AttributeValue::Redacted(h)) if h.starts_with("sha256:"))
        );
        assert!(!String::from_utf8(snap.encode()).unwrap().contains("555"));
    }

    #[test]
    fn the_stored_form_round_trips_and_garbage_is_an_error() {
        let rules = rules(&[], &["secret"]);
        let snap = Snapshot::from_profile(
            &rules,
            &profile(json!({"a": {"nested": [1, 2.5, "x"]}, "secret": "s", "n": null})),
            time(1_764_583_200_123),
        );
        let decoded = Snapshot::decode(&snap.encode()).unwrap();
        assert_eq!(decoded, snap);
        assert!(Snapshot::decode(b"not json").is_err());
        assert!(Snapshot::decode(br#"{"v":2,"t":0,"f":0}"#).is_err());
    }

    #[test]
    fn changed_attributes_compare_values_including_arrays_and_nested_objects() {
        let rules = rules(&[], &[]);
        let old = Snapshot::from_profile(
            &rules,
            &profile(
                json!({"groups": ["a", "b"], "address": {"city": "Oslo", "zip": 150}, "title": "E", "gone": "x", "unset": null}),
            ),
            time(1),
        );
        let new = Snapshot::from_profile(
            &rules,
            &profile(
                json!({"groups": ["b", "a"], "address": {"zip": 150.0, "city": "Oslo"}, "title": "E", "added": 1}),
            ),
            time(2),
        );
        assert_eq!(
            old.changed_attributes(&new),
            vec!["added", "gone", "groups"]
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|i| json!(i)),
            "[a-z]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn equal_json_has_equal_canonical_text_and_round_trips(v in json_value()) {
            let text = canonical_json(&v);
            let back: Value = serde_json::from_str(&text).unwrap();
            prop_assert!(json_equal(&v, &back));
            prop_assert_eq!(canonical_json(&back), text);
        }

        #[test]
        fn canonical_text_tells_unequal_values_apart(a in json_value(), b in json_value()) {
            prop_assert_eq!(json_equal(&a, &b), canonical_json(&a) == canonical_json(&b));
        }

        #[test]
        fn any_snapshot_round_trips_through_its_stored_form(
            attrs in prop::collection::btree_map("[a-zA-Z]{1,8}", json_value(), 0..8),
            ms in 0i64..4_000_000_000_000,
        ) {
            let rules = rules(&[], &[]);
            let snap = Snapshot::from_profile(&rules, &attrs.into_iter().collect(), time(ms));
            prop_assert_eq!(Snapshot::decode(&snap.encode()).unwrap(), snap);
        }
    }
}
