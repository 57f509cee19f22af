//! Which profile attributes okta-stream keeps (`OKTA_STREAM_PROFILE_ATTRIBUTES`), and which it
//! keeps only as keyed hashes (`OKTA_STREAM_PROFILE_REDACT`).
//!
//! Profiles hold personal data (SPEC.md I), so the rules apply before anything is stored or
//! sent: an attribute outside the allowlist is neither kept in the snapshot store nor shown in
//! an event; a redacted attribute is kept and shown as `sha256:<hex>`, an HMAC-SHA256 under a
//! key private to the deployment, so equal values still compare equal while the value itself
//! (a phone number, a salary band) cannot be looked up in a table of likely values. Attribute
//! names match ignoring ASCII case.
//!
//! Where the key lives: with the embedded journal, in the data dir
//! ([`RedactionKey::load_or_create`]); with the NATS journal, in the `<stream>_PROFILES` bucket
//! ([`crate::profile::store::nats::NatsSnapshots::redaction_key`]), created once by the first replica and
//! read by every other, because replicas with different keys would hash equal values
//! differently. The key is never logged or printed.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::json::{AttributeValue, canonical_json};

/// File name of the redaction key inside the data dir.
pub const KEY_FILE_NAME: &str = "profile-redaction.key";

/// Length of the redaction key in bytes (HMAC-SHA256's block-size-friendly 256 bits).
pub const KEY_LEN: usize = 32;

/// Prefix of every redacted value.
pub const REDACTED_PREFIX: &str = "sha256:";

/// Why the attribute rules or the redaction key are unusable; names the setting or the file.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// An attribute list holds a bad name.
    #[error("{setting}: {problem}")]
    Invalid {
        /// The environment variable of the list.
        setting: &'static str,
        /// What is wrong, naming the entry.
        problem: String,
    },
    /// The key file could not be created or read.
    #[error("profile redaction key {path}: {problem}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it (never its contents).
        problem: String,
    },
}

/// The HMAC key of redacted values. Prints as `***`.
#[derive(Clone)]
pub struct RedactionKey([u8; KEY_LEN]);

impl fmt::Debug for RedactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl RedactionKey {
    /// A key from its bytes (tests, or a key shared between replicas by other means).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads `dir/profile-redaction.key`, or creates it with 256 random bits (mode 0600,
    /// never overwriting: two processes starting at once agree on the first one written).
    /// A key file that others may read, or that is not exactly 32 bytes, is refused.
    pub fn load_or_create(dir: &Path) -> Result<Self, RulesError> {
        let path = dir.join(KEY_FILE_NAME);
        let fail = |problem: String| RulesError::Key {
            path: path.clone(),
            problem,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create the dir: {e}")))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                let key: [u8; KEY_LEN] = rand::random();
                file.write_all(&key)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| fail(format!("cannot write: {e}")))?;
                return Ok(Self(key));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(format!("cannot create: {e}"))),
        }
        let mut file = std::fs::File::open(&path).map_err(|e| fail(format!("cannot open: {e}")))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = file
                .metadata()
                .map_err(|e| fail(format!("cannot stat: {e}")))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "readable by others (mode {:o}); run chmod 600 on it",
                    mode & 0o777
                )));
            }
        }
        let mut bytes = Vec::with_capacity(KEY_LEN);
        std::io::Read::by_ref(&mut file)
            .take(KEY_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            fail(format!(
                "holds {} bytes, not {KEY_LEN}: restore it from a backup, or delete it to start \
                 a new key (redacted values then no longer match earlier ones)",
                bytes.len()
            ))
        })?;
        Ok(Self(key))
    }

    /// `sha256:<hex>` of HMAC-SHA256(key, lower-case attribute name, 0x00, canonical JSON of
    /// the value). The name is included so equal values of two attributes do not correlate.
    pub fn hash(&self, attribute: &str, value: &Value) -> String {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(attribute.to_ascii_lowercase().as_bytes());
        mac.update(&[0]);
        mac.update(canonical_json(value).as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(REDACTED_PREFIX.len() + 64);
        out.push_str(REDACTED_PREFIX);
        for byte in digest {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

/// The allowlist and the redaction list, with the key that hashes redacted values.
#[derive(Debug, Clone)]
pub struct AttributeRules {
    /// Lower-case allowed names; `None` allows every attribute.
    allow: Option<BTreeSet<String>>,
    /// Lower-case redacted names.
    redact: BTreeSet<String>,
    key: RedactionKey,
    /// Identifies the lists (not the key), so a snapshot written under other rules is known.
    fingerprint: u64,
}

impl AttributeRules {
    /// Rules from `OKTA_STREAM_PROFILE_ATTRIBUTES` (`attributes`; empty allows all) and
    /// `OKTA_STREAM_PROFILE_REDACT` (`redact`). Names must be non-empty profile variable names
    /// (letters, digits, `_`, `-`, `.`, `:`); a redacted name must also be allowed.
    pub fn new(
        attributes: &[String],
        redact: &[String],
        key: RedactionKey,
    ) -> Result<Self, RulesError> {
        let allow = names("OKTA_STREAM_PROFILE_ATTRIBUTES", attributes)?;
        let redact = names("OKTA_STREAM_PROFILE_REDACT", redact)?;
        let allow = (!allow.is_empty()).then_some(allow);
        if let Some(allow) = &allow {
            if let Some(name) = redact.iter().find(|n| !allow.contains(*n)) {
                return Err(RulesError::Invalid {
                    setting: "OKTA_STREAM_PROFILE_REDACT",
                    problem: format!(
                        "{name:?} is not in OKTA_STREAM_PROFILE_ATTRIBUTES, so it is never kept"
                    ),
                });
            }
        }
        let mut digest = Sha256::new();
        match &allow {
            None => digest.update(b"*"),
            Some(names) => names.iter().for_each(|n| {
                digest.update(n.as_bytes());
                digest.update([0]);
            }),
        }
        digest.update(b"|");
        redact.iter().for_each(|n| {
            digest.update(n.as_bytes());
            digest.update([0]);
        });
        let digest = digest.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Ok(Self {
            allow,
            redact,
            key,
            fingerprint: u64::from_be_bytes(first),
        })
    }

    /// Whether `attribute` may be kept and shown.
    pub fn allows(&self, attribute: &str) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|allow| allow.contains(&attribute.to_ascii_lowercase()))
    }

    /// Whether `attribute` is kept and shown only as a hash.
    pub fn redacts(&self, attribute: &str) -> bool {
        self.redact.contains(&attribute.to_ascii_lowercase())
    }

    /// `value` as it may be kept: hashed when `attribute` is redacted (null stays null: an
    /// unset value has nothing to hide), as is otherwise.
    pub fn render(&self, attribute: &str, value: &Value) -> AttributeValue {
        if self.redacts(attribute) && !value.is_null() {
            AttributeValue::Redacted(self.key.hash(attribute, value))
        } else {
            AttributeValue::Plain(value.clone())
        }
    }

    /// Identifies the two lists; stored with each snapshot.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

fn names(setting: &'static str, list: &[String]) -> Result<BTreeSet<String>, RulesError> {
    let mut set = BTreeSet::new();
    for raw in list {
        let name = raw.trim();
        let valid = !name.is_empty()
            && name.len() <= 256
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if !valid {
            return Err(RulesError::Invalid {
                setting,
                problem: format!("{raw:?} is not a profile attribute name"),
            });
        }
        set.insert(name.to_ascii_lowercase());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> RedactionKey {
        RedactionKey::from_bytes([7; KEY_LEN])
    }

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn an_empty_allowlist_allows_every_attribute() {
        let rules = AttributeRules::new(&[], &[], key()).unwrap();
        assert!(rules.allows("title") && rules.allows("customHrCode"));
        assert!(!rules.redacts("title"));
    }

    #[test]
    fn allowlist_and_redaction_match_names_ignoring_case() {
        let rules = AttributeRules::new(
            &list(&["title", "mobilePhone"]),
            &list(&["MOBILEPHONE"]),
            key(),
        )
        .unwrap();
        assert!(rules.allows("Title") && rules.allows("mobilephone"));
        assert!(!rules.allows("department"));
        assert!(rules.redacts("mobilePhone") && !rules.redacts("title"));
    }

    #[test]
    fn bad_names_and_redacting_what_is_not_kept_are_refused_naming_the_setting() {
        let err = AttributeRules::new(&list(&["title", " "]), &[], key()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("OKTA_STREAM_PROFILE_ATTRIBUTES"),
            "{err}"
        );
        let err = AttributeRules::new(&list(&["title"]), &list(&["ssn"]), key()).unwrap_err();
        assert!(
            err.to_string().starts_with("OKTA_STREAM_PROFILE_REDACT"),
            "{err}"
        );
        assert!(err.to_string().contains("ssn"), "{err}");
        assert!(AttributeRules::new(&[], &list(&["a\"b"]), key()).is_err());
    }

    #[test]
    fn redacted_values_are_keyed_hashes_that_compare_equal_when_the_values_do() {
        let rules = AttributeRules::new(&[], &list(&["mobilePhone", "cost"]), key()).unwrap();
        let AttributeValue::Redacted(a) = rules.render("mobilePhone", &json!("+1 555 0100")) else {
            panic!("mobilePhone is redacted");
        };
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
        assert!(!a.contains("555"));
        assert_eq!(
            rules.render("MOBILEPHONE", &json!("+1 555 0100")),
            AttributeValue::Redacted(a.clone())
        );
        assert_ne!(
            rules.render("mobilePhone", &json!("+1 555 0101")),
            AttributeValue::Redacted(a.clone())
        );
        // 3 and 3.0 are the same JSON number; objects compare regardless of key order.
        assert_eq!(
            rules.render("cost", &json!(3)),
            rules.render("cost", &json!(3.0))
        );
        assert_eq!(
            rules.render("cost", &json!({"a": 1, "b": [1, 2]})),
            rules.render(
                "cost",
                &serde_json::from_str(r#"{"b":[1,2],"a":1}"#).unwrap()
            )
        );
        // Another key gives other hashes; null has nothing to hide.
        let other = AttributeRules::new(
            &[],
            &list(&["mobilePhone"]),
            RedactionKey::from_bytes([8; 32]),
        )
        .unwrap();
        assert_ne!(
            other.render("mobilePhone", &json!("+1 555 0100")),
            AttributeValue::Redacted(a)
        );
        assert_eq!(
            rules.render("mobilePhone", &Value::Null),
            AttributeValue::Plain(Value::Null)
        );
    }

    #[test]
    fn the_same_value_of_two_attributes_hashes_differently() {
        let rules = AttributeRules::new(&[], &list(&["a", "b"]), key()).unwrap();
        assert_ne!(
            rules.render("a", &json!("x")),
            rules.render("b", &json!("x"))
        );
    }

    #[test]
    fn the_fingerprint_changes_with_the_lists_only() {
        let a = AttributeRules::new(&list(&["title"]), &[], key()).unwrap();
        let b =
            AttributeRules::new(&list(&["TITLE"]), &[], RedactionKey::from_bytes([1; 32])).unwrap();
        let c = AttributeRules::new(&list(&["title"]), &list(&["title"]), key()).unwrap();
        let d = AttributeRules::new(&[], &[], key()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_ne!(a.fingerprint(), d.fingerprint());
    }

    #[test]
    fn the_key_is_created_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = RedactionKey::load_or_create(dir.path()).unwrap();
        let again = RedactionKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.0, again.0);
        assert_eq!(format!("{first:?}"), "***");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let path = dir.path().join(KEY_FILE_NAME);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = RedactionKey::load_or_create(dir.path()).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
    }

    #[test]
    fn a_truncated_key_file_is_refused_without_showing_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        std::fs::write(&path, b"SECRETBYTES").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let err = RedactionKey::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("11 bytes"), "{err}");
        assert!(!err.to_string().contains("SECRET"), "{err}");
    }
}
