//! The one rule for a LogEvent `uuid` (the dedupe key), shared by ingest and GetEvent.

/// Longest LogEvent `uuid` stored (and looked up by GetEvent), in bytes.
pub const MAX_UUID_BYTES: usize = 1024;

/// The one rule for a LogEvent `uuid`, at ingest (an event breaking it is quarantined) and in
/// GetEvent (`INVALID_ARGUMENT`): not blank, at most [`MAX_UUID_BYTES`] bytes.
pub fn check_uuid(uuid: &str) -> Result<(), &'static str> {
    if uuid.trim().is_empty() {
        Err("is empty or blank")
    } else if uuid.len() > MAX_UUID_BYTES {
        Err("is longer than 1024 bytes")
    } else {
        Ok(())
    }
}
