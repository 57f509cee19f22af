//! Secrets (hook secrets, bearer tokens, API tokens, keys) in a redacting newtype.
//!
//! `Debug` and `Display` print `***`, so a secret cannot reach a log line, an error message or
//! a metric by accident; code that needs the value calls [`Secret::expose`].

use std::fmt;

use sha2::{Digest as _, Sha256};
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

/// Prefix of a token configured as the SHA-256 of its value (64 hex digits follow), so a
/// config file need not hold the token in clear.
pub const SHA256_PREFIX: &str = "sha256:";

impl Secret {
    /// Whether `candidate` is this configured bearer token: equal to it, or, when configured
    /// as `sha256:<hex>`, hashing to that digest. Constant time in the content either way.
    pub fn matches_token(&self, candidate: &[u8]) -> bool {
        match self.sha256_digest() {
            Some(digest) => {
                let actual: [u8; 32] = Sha256::digest(candidate).into();
                digest.ct_eq(&actual).into()
            }
            None => self.matches(candidate),
        }
    }

    /// The digest of a `sha256:<hex>` token; `None` for a token given in clear (or a
    /// malformed digest, which [`check_token_form`] refuses at start).
    fn sha256_digest(&self) -> Option<[u8; 32]> {
        let hex = self.0.strip_prefix(SHA256_PREFIX)?;
        if hex.len() != 64 {
            return None;
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(digest)
    }
}

/// Refuses a token that starts with `sha256:` but is not followed by 64 hex digits (it could
/// never match); the problem text never includes the value.
pub fn check_token_form(token: &Secret) -> Result<(), String> {
    if token.expose().starts_with(SHA256_PREFIX) && token.sha256_digest().is_none() {
        return Err(format!(
            "a value starting with `{SHA256_PREFIX}` must be followed by the 64 hex digits of \
             the token's SHA-256"
        ));
    }
    Ok(())
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
    fn a_token_matches_in_clear_or_by_its_sha256() {
        let clear = Secret::new("a-long-read-token-1");
        assert!(clear.matches_token(b"a-long-read-token-1"));
        assert!(!clear.matches_token(b"a-long-read-token-2"));
        // sha256("a-long-read-token-1")
        let hex: String = Sha256::digest(b"a-long-read-token-1")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let hashed = Secret::new(format!("sha256:{hex}"));
        assert!(check_token_form(&hashed).is_ok());
        assert!(hashed.matches_token(b"a-long-read-token-1"));
        assert!(!hashed.matches_token(b"a-long-read-token-2"));
        assert!(!hashed.matches_token(hashed.expose().as_bytes()));
        let err = check_token_form(&Secret::new("sha256:abc")).unwrap_err();
        assert!(!err.contains("abc"), "{err}");
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
