//! Value parsers the client commands' flags share.

use crate::secret::Secret;

/// Parses a secret flag value into the redacting [`Secret`] (clap value parser).
pub(crate) fn secret_value(value: &str) -> Result<Secret, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(Secret::new(value.trim()))
}
