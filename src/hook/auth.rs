//! Authentication of Okta Event Hook requests: a static header secret (Okta's only scheme for
//! event hooks), compared in constant time against every configured secret, so a secret can
//! be rotated by configuring old and new side by side.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use http::{HeaderMap, HeaderName};
use rand::RngCore;

use crate::secret::Secret;

/// File in the data dir holding the generated hook secret.
pub const GENERATED_SECRET_FILE: &str = "hook-secret";

/// The configured hook header and the secrets it may carry.
#[derive(Debug, Clone)]
pub struct HookAuth {
    header: HeaderName,
    secrets: Vec<Secret>,
}

impl HookAuth {
    /// Accepts requests whose `header` value equals one of `secrets` exactly.
    pub fn new(header: HeaderName, secrets: Vec<Secret>) -> Self {
        Self { header, secrets }
    }

    /// The header that carries the secret.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Whether the request carries an accepted secret.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        match headers.get(&self.header) {
            Some(value) => Secret::matches_any(&self.secrets, value.as_bytes()),
            None => false,
        }
    }
}

/// Where the hook secret came from at start-up.
#[derive(Debug)]
pub enum SecretOrigin {
    /// Configured with `OKTA_STREAM_HOOK_SECRETS`.
    Configured,
    /// Generated earlier and read from the data dir.
    Stored,
    /// Generated now (first start); the caller prints it once.
    Generated(Secret),
}

/// Returns the configured secrets, or the one kept in `data_dir` (generated and stored with
/// mode 0600 on first start).
pub fn load_or_generate(
    configured: Vec<Secret>,
    data_dir: &Path,
) -> std::io::Result<(Vec<Secret>, SecretOrigin)> {
    if !configured.is_empty() {
        return Ok((configured, SecretOrigin::Configured));
    }
    let path = data_dir.join(GENERATED_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok((vec![Secret::new(text.trim())], SecretOrigin::Stored));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    crate::data_dir::create(data_dir)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    file.write_all(secret.expose().as_bytes())?;
    file.sync_all()?;
    Ok((vec![secret.clone()], SecretOrigin::Generated(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_a_configured_secret_in_the_configured_header() {
        let auth = HookAuth::new(
            HeaderName::from_static("x-okta-secret"),
            vec![Secret::new("s1"), Secret::new("s2")],
        );
        let mut headers = HeaderMap::new();
        assert!(!auth.allows(&headers));
        headers.insert("authorization", "s1".parse().unwrap());
        assert!(!auth.allows(&headers), "secret in the wrong header");
        headers.insert("x-okta-secret", "s2".parse().unwrap());
        assert!(auth.allows(&headers));
        headers.insert("x-okta-secret", "s3".parse().unwrap());
        assert!(!auth.allows(&headers));
    }

    #[test]
    fn a_generated_secret_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) = load_or_generate(vec![], dir.path()).unwrap();
        assert!(matches!(origin, SecretOrigin::Generated(_)));
        let (second, origin) = load_or_generate(vec![], dir.path()).unwrap();
        assert!(matches!(origin, SecretOrigin::Stored));
        assert_eq!(first, second);
        assert!(first[0].expose().len() >= 40);
    }
}
