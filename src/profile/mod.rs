//! Old → new profile values for `user.account.update_profile` events (issue 13).
//!
//! Okta's event names the changed attributes but carries no values; the values live in Okta's
//! Users API (SPEC.md I). okta-stream keeps the last known profile of each user and, for each
//! update event, reads the profile again and reports per changed attribute the value before
//! and after, with a status saying how far the pair can be trusted. The parts:
//! - [`json`]: an attribute value as kept (plain or hashed), JSON equality, canonical text.
//! - [`rules`]: which attributes are kept (allowlist) and which only as keyed hashes (redact).
//! - [`snapshot`]: the kept profile of one user and its stored form.
//! - [`values`]: pure: stored snapshot + profile read + the user's pending events → the changes
//!   and status of each event, and the snapshot to store.
//! - [`store`]: where snapshots and released values live: redb tables, or JetStream KV buckets
//!   shared by every replica (with the redaction key, so all hash alike).
//!
//! - [`stage`]: between the journal and the hub: queues commits in cursor order, reads the
//!   profiles, releases the front of the queue with its values stored.
//! - [`sweep`]: reads every user once, then those updated since, to keep snapshots current.
//! - [`released`]: the journal as readers see it: capped at the released cursor, each event
//!   joined with its stored values.
//!
//! The Users API client is [`crate::okta::users`].

use std::time::Duration;

pub mod json;
pub mod released;
pub mod rules;
pub mod snapshot;
pub mod stage;
pub mod store;
pub mod sweep;
pub mod values;

pub use json::AttributeValue;
pub use rules::{AttributeRules, RedactionKey, RulesError};
pub use snapshot::Snapshot;
pub use stage::StageError;
pub use store::nats::NatsSnapshots;
pub use store::redb::RedbSnapshots;
pub use store::{SnapshotStore, StoreError, StoredValues, ValuesStore};
pub use values::{Resolution, Update, Values, resolve};

/// Default `OKTA_STREAM_PROFILE_VALUES_TIMEOUT_SECS`: the longest an update event waits for its
/// values before it is delivered with UNAVAILABLE.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE`: the share of the Users API's rate limit
/// okta-stream uses, leaving the rest of the org's bucket to other integrations.
pub const DEFAULT_RATE_LIMIT_SHARE: f64 = 0.3;

/// The settings of the profile-values feature, for the config layer to fill.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSettings {
    /// `OKTA_STREAM_PROFILE_ATTRIBUTES`: attributes kept and shown; empty keeps all.
    pub attributes: Vec<String>,
    /// `OKTA_STREAM_PROFILE_REDACT`: attributes kept and shown only as `sha256:<hex>`.
    pub redact: Vec<String>,
    /// `OKTA_STREAM_PROFILE_VALUES_TIMEOUT_SECS`: how long an update event may wait.
    pub timeout: Duration,
    /// `OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE`: share of `X-Rate-Limit-Limit`, in (0, 1].
    pub rate_limit_share: f64,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        Self {
            attributes: Vec::new(),
            redact: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            rate_limit_share: DEFAULT_RATE_LIMIT_SHARE,
        }
    }
}

impl ProfileSettings {
    /// Checks the settings and builds the attribute rules with `key`.
    pub fn rules(&self, key: RedactionKey) -> Result<AttributeRules, RulesError> {
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(3600) {
            return Err(RulesError::Invalid {
                setting: "OKTA_STREAM_PROFILE_VALUES_TIMEOUT_SECS",
                problem: "must be between 1 and 3600 seconds".to_owned(),
            });
        }
        if !(self.rate_limit_share > 0.0 && self.rate_limit_share <= 1.0) {
            return Err(RulesError::Invalid {
                setting: "OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE",
                problem: format!("{} is not in (0, 1]", self.rate_limit_share),
            });
        }
        AttributeRules::new(&self.attributes, &self.redact, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_bad_values_name_the_setting() {
        let settings = ProfileSettings::default();
        assert_eq!(settings.timeout, Duration::from_secs(10));
        assert_eq!(settings.rate_limit_share, 0.3);
        let key = || RedactionKey::from_bytes([0; 32]);
        assert!(settings.rules(key()).is_ok());
        let bad = ProfileSettings {
            rate_limit_share: 1.5,
            ..ProfileSettings::default()
        };
        let err = bad.rules(key()).unwrap_err().to_string();
        assert!(
            err.starts_with("OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE"),
            "{err}"
        );
        let bad = ProfileSettings {
            timeout: Duration::ZERO,
            ..ProfileSettings::default()
        };
        let err = bad.rules(key()).unwrap_err().to_string();
        assert!(
            err.starts_with("OKTA_STREAM_PROFILE_VALUES_TIMEOUT_SECS"),
            "{err}"
        );
    }
}
