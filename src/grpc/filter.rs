//! `EventFilter` validated once into a [`Filter`] that matches committed events cheaply.
//!
//! Semantics (see `events.proto`): AND across fields, OR within a field, empty matches all.
//! Alternate ids, actors' alternate ids and attribute names compare case-insensitively; ids
//! and event types exactly.

use crate::error::ApiError;
use crate::journal::Facts;
use crate::proto::{self, EventFilter, IngestSource, Outcome, Severity};

/// Most values in one repeated filter field.
pub const MAX_VALUES: usize = 64;
/// Longest filter value, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;

/// Whether `candidate` lower-cases to `folded` (already lower case), without allocating: this
/// runs for every event and subscriber on the fan-out path.
fn eq_folded(candidate: &str, folded: &str) -> bool {
    candidate
        .chars()
        .flat_map(char::to_lowercase)
        .eq(folded.chars())
}

/// One id-or-alternate-id criterion value.
#[derive(Debug, Clone)]
struct Principal {
    exact: String,
    folded: String,
}

impl Principal {
    fn matches(&self, id: &str, alternate_id: &str) -> bool {
        id == self.exact || (!alternate_id.is_empty() && eq_folded(alternate_id, &self.folded))
    }
}

/// A validated filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    event_types: Vec<String>,
    event_type_prefixes: Vec<String>,
    okta_users: Vec<Principal>,
    actors: Vec<Principal>,
    changed_attributes: Vec<String>,
    min_severity: i32,
    results: Vec<i32>,
    ingest_sources: Vec<i32>,
    published_since: Option<prost_types::Timestamp>,
}

fn values<'a>(field: &str, values: &'a [String]) -> Result<&'a [String], ApiError> {
    if values.len() > MAX_VALUES {
        return Err(ApiError::invalid(
            field,
            format!(
                "at most {MAX_VALUES} values are allowed, got {}",
                values.len()
            ),
        ));
    }
    for value in values {
        if value.trim().is_empty() {
            return Err(ApiError::invalid(field, "values must not be empty"));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::invalid(
                field,
                format!("values must be at most {MAX_VALUE_BYTES} bytes"),
            ));
        }
    }
    Ok(values)
}

fn principals(field: &str, list: &[String]) -> Result<Vec<Principal>, ApiError> {
    Ok(values(field, list)?
        .iter()
        .map(|v| Principal {
            exact: v.trim().to_owned(),
            folded: v.trim().to_lowercase(),
        })
        .collect())
}

fn enums(field: &str, list: &[i32], known: impl Fn(i32) -> bool) -> Result<Vec<i32>, ApiError> {
    if list.len() > MAX_VALUES {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_VALUES} values are allowed"),
        ));
    }
    match list.iter().find(|v| !known(**v)) {
        Some(bad) => Err(ApiError::invalid(field, format!("unknown value {bad}"))),
        None => Ok(list.to_vec()),
    }
}

/// Checks a `google.protobuf.Timestamp` from a client.
pub fn valid_timestamp(field: &str, ts: &prost_types::Timestamp) -> Result<(), ApiError> {
    if !(0..1_000_000_000).contains(&ts.nanos)
        || ts.seconds < -62_135_596_800
        || ts.seconds > 253_402_300_799
    {
        return Err(ApiError::invalid(field, "is not a valid timestamp"));
    }
    Ok(())
}

impl Filter {
    /// Validates `filter`; an invalid one is `INVALID_ARGUMENT` naming the field.
    pub fn compile(filter: &EventFilter) -> Result<Filter, ApiError> {
        let mut event_types = Vec::new();
        let mut event_type_prefixes = Vec::new();
        for value in values("event_types", &filter.event_types)? {
            let value = value.trim().to_owned();
            if value.ends_with('.') {
                event_type_prefixes.push(value);
            } else {
                event_types.push(value);
            }
        }
        if Severity::try_from(filter.min_severity).is_err() {
            return Err(ApiError::invalid(
                "min_severity",
                format!("unknown value {}", filter.min_severity),
            ));
        }
        let published_since = match &filter.start {
            Some(proto::event_filter::Start::Since(ts)) => {
                valid_timestamp("since", ts)?;
                Some(*ts)
            }
            _ => None,
        };
        Ok(Filter {
            event_types,
            event_type_prefixes,
            okta_users: principals("okta_users", &filter.okta_users)?,
            actors: principals("actors", &filter.actors)?,
            changed_attributes: values("changed_attributes", &filter.changed_attributes)?
                .iter()
                .map(|v| v.trim().to_lowercase())
                .collect(),
            min_severity: filter.min_severity,
            results: enums("results", &filter.results, |v| Outcome::try_from(v).is_ok())?,
            ingest_sources: enums("ingest_sources", &filter.ingest_sources, |v| {
                IngestSource::try_from(v).is_ok()
            })?,
            published_since,
        })
    }

    /// Whether `event` passes every criterion.
    pub fn matches(&self, event: Facts<'_>) -> bool {
        self.matches_event_type(event.event_type())
            && self.matches_user(event)
            && self.matches_actor(event)
            && self.matches_attributes(event)
            && self.matches_severity(event)
            && (self.results.is_empty() || self.results.contains(&event.result()))
            && (self.ingest_sources.is_empty()
                || self.ingest_sources.contains(&event.ingest_source()))
            && self.matches_published(event)
    }

    fn matches_event_type(&self, event_type: &str) -> bool {
        (self.event_types.is_empty() && self.event_type_prefixes.is_empty())
            || self.event_types.iter().any(|t| t == event_type)
            || self
                .event_type_prefixes
                .iter()
                .any(|p| event_type.starts_with(p.as_str()))
    }

    fn matches_user(&self, event: Facts<'_>) -> bool {
        if self.okta_users.is_empty() {
            return true;
        }
        let user = event.okta_user().map(|u| (u.id, u.alternate_id));
        let targets = event
            .targets()
            .filter(|t| t.r#type.eq_ignore_ascii_case("user"))
            .map(|t| (t.id, t.alternate_id));
        let mut candidates = user.into_iter().chain(targets);
        candidates.any(|(id, alt)| self.okta_users.iter().any(|p| p.matches(id, alt)))
    }

    fn matches_actor(&self, event: Facts<'_>) -> bool {
        self.actors.is_empty()
            || event
                .actor()
                .is_some_and(|a| self.actors.iter().any(|p| p.matches(a.id, a.alternate_id)))
    }

    fn matches_attributes(&self, event: Facts<'_>) -> bool {
        self.changed_attributes.is_empty()
            || event.changed_attributes().any(|name| {
                self.changed_attributes
                    .iter()
                    .any(|wanted| eq_folded(name, wanted))
            })
    }

    fn matches_severity(&self, event: Facts<'_>) -> bool {
        let unrecognised =
            event.severity() == Severity::Unspecified as i32 && !event.severity_raw().is_empty();
        self.min_severity == Severity::Unspecified as i32
            || unrecognised
            || event.severity() >= self.min_severity
    }

    fn matches_published(&self, event: Facts<'_>) -> bool {
        match (&self.published_since, &event.published()) {
            (None, _) => true,
            (Some(since), Some(published)) => {
                (published.seconds, published.nanos) >= (since.seconds, since.nanos)
            }
            // An event without a time cannot be placed; replay by time includes it rather than hide it.
            (Some(_), None) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::NewEvent;

    fn record() -> proto::Event {
        proto::Event {
            uuid: "u1".into(),
            event_type: "user.account.update_profile".into(),
            severity: Severity::Info as i32,
            severity_raw: "INFO".into(),
            result: Outcome::Success as i32,
            changed_attributes: vec!["lastName".into(), "mobilePhone".into()],
            actor: Some(proto::Actor {
                id: "00uADMIN".into(),
                alternate_id: "Admin@Example.com".into(),
                ..Default::default()
            }),
            okta_user: Some(proto::OktaUser {
                id: "00uTHOR".into(),
                alternate_id: "Thor@Avengers.org".into(),
                ..Default::default()
            }),
            targets: vec![proto::Target {
                id: "00gGROUP".into(),
                r#type: "UserGroup".into(),
                ..Default::default()
            }],
            ingest_source: IngestSource::Hook as i32,
            published: Some(prost_types::Timestamp {
                seconds: 1_000,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn event() -> NewEvent {
        NewEvent::new(record())
    }

    fn filter(f: EventFilter) -> Filter {
        Filter::compile(&f).unwrap()
    }

    #[test]
    fn an_empty_filter_matches_everything() {
        assert!(filter(EventFilter::default()).matches(event().facts()));
        assert!(
            filter(EventFilter::default()).matches(NewEvent::new(proto::Event::default()).facts())
        );
    }

    #[test]
    fn event_types_match_exactly_or_by_prefix() {
        let ok = |types: &[&str]| {
            filter(EventFilter {
                event_types: types.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .matches(event().facts())
        };
        assert!(ok(&["user.account.update_profile"]));
        assert!(ok(&["user.session.start", "user.account."]));
        assert!(
            !ok(&["user.account"]),
            "without the trailing dot it is an exact match"
        );
        assert!(
            !ok(&["USER.ACCOUNT.UPDATE_PROFILE"]),
            "event types are case-sensitive"
        );
    }

    #[test]
    fn okta_user_matches_id_exactly_and_login_ignoring_case() {
        let ok = |users: &[&str]| {
            filter(EventFilter {
                okta_users: users.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .matches(event().facts())
        };
        assert!(ok(&["00uTHOR"]));
        assert!(ok(&["thor@avengers.org"]));
        assert!(!ok(&["00uthor"]), "ids are exact");
        assert!(!ok(&["00gGROUP"]), "only targets of type User count");
        assert!(!ok(&["loki@asgard.org"]));
    }

    #[test]
    fn actor_matches_id_or_alternate_id() {
        let ok = |actors: &[&str]| {
            filter(EventFilter {
                actors: actors.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .matches(event().facts())
        };
        assert!(ok(&["00uADMIN"]));
        assert!(ok(&["admin@example.com"]));
        assert!(!ok(&["00uTHOR"]));
    }

    #[test]
    fn changed_attributes_match_any_ignoring_case() {
        let ok = |attrs: &[&str]| {
            filter(EventFilter {
                changed_attributes: attrs.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .matches(event().facts())
        };
        assert!(ok(&["LASTNAME"]));
        assert!(ok(&["email", "mobilePhone"]));
        assert!(!ok(&["email"]));
    }

    #[test]
    fn severity_is_a_floor_and_unrecognised_severities_pass() {
        let floor = |s: Severity| {
            filter(EventFilter {
                min_severity: s as i32,
                ..Default::default()
            })
        };
        assert!(floor(Severity::Info).matches(event().facts()));
        assert!(!floor(Severity::Warn).matches(event().facts()));
        let critical = NewEvent::new(proto::Event {
            severity: Severity::Unspecified as i32,
            severity_raw: "CRITICAL".into(),
            ..record()
        });
        assert!(floor(Severity::Error).matches(critical.facts()));
    }

    #[test]
    fn results_and_ingest_sources_are_any_of() {
        let f = filter(EventFilter {
            results: vec![Outcome::Failure as i32, Outcome::Success as i32],
            ..Default::default()
        });
        assert!(f.matches(event().facts()));
        let f = filter(EventFilter {
            results: vec![Outcome::Deny as i32],
            ..Default::default()
        });
        assert!(!f.matches(event().facts()));
        let f = filter(EventFilter {
            ingest_sources: vec![IngestSource::Poller as i32],
            ..Default::default()
        });
        assert!(!f.matches(event().facts()));
    }

    #[test]
    fn fields_combine_with_and() {
        let f = filter(EventFilter {
            event_types: vec!["user.account.update_profile".into()],
            okta_users: vec!["00uNOBODY".into()],
            ..Default::default()
        });
        assert!(!f.matches(event().facts()));
    }

    #[test]
    fn since_filters_on_published() {
        let since = |s| {
            filter(EventFilter {
                start: Some(proto::event_filter::Start::Since(prost_types::Timestamp {
                    seconds: s,
                    nanos: 0,
                })),
                ..Default::default()
            })
        };
        assert!(since(1_000).matches(event().facts()));
        assert!(!since(1_001).matches(event().facts()));
    }

    #[test]
    fn bad_filters_name_the_field() {
        let err = |f: EventFilter| Filter::compile(&f).unwrap_err().message;
        assert!(
            err(EventFilter {
                okta_users: vec!["".into()],
                ..Default::default()
            })
            .starts_with("okta_users:")
        );
        assert!(
            err(EventFilter {
                event_types: vec!["x".repeat(300)],
                ..Default::default()
            })
            .starts_with("event_types:")
        );
        assert!(
            err(EventFilter {
                actors: vec!["a".into(); 65],
                ..Default::default()
            })
            .starts_with("actors:")
        );
        assert!(
            err(EventFilter {
                min_severity: 42,
                ..Default::default()
            })
            .starts_with("min_severity:")
        );
        assert!(
            err(EventFilter {
                results: vec![99],
                ..Default::default()
            })
            .starts_with("results:")
        );
        assert!(
            err(EventFilter {
                ingest_sources: vec![-1],
                ..Default::default()
            })
            .starts_with("ingest_sources:")
        );
        let bad_time = EventFilter {
            start: Some(proto::event_filter::Start::Since(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            })),
            ..Default::default()
        };
        assert!(err(bad_time).starts_with("since:"));
    }
}
