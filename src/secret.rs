//! Secrets (hook secrets, bearer tokens, API tokens, keys) in a redacting newtype.
//!
//! `Debug` and `Display` print `***`, so a secret cannot reach a log line, an error message or
//! a metric by accident; code that needs the value calls [`Secret::expose`].

use std::fmt;

use subtle::ConstantTimeEq;

/// A secret string. Compare with [`Secret::matches`], which takes constant time.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` equals this secret, in time independent of where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        // Length is not secret-dependent enough to matter; content comparison is constant time.
        self.0.as_bytes().ct_eq(candidate).into()
    }

    /// Whether `candidate` equals any of `secrets`, checking every one (no early exit).
    pub fn matches_any(secrets: &[Secret], candidate: &[u8]) -> bool {
        secrets
            .iter()
            .fold(false, |found, secret| found | secret.matches(candidate))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let secrets = [Secret::new("old"), Secret::new("new")];
        assert!(Secret::matches_any(&secrets, b"new"));
        assert!(Secret::matches_any(&secrets, b"old"));
        assert!(!Secret::matches_any(&secrets, b"ne"));
        assert!(!Secret::matches_any(&secrets, b"new "));
        assert!(!Secret::matches_any(&[], b""));
    }
}
