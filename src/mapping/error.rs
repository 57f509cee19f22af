//! Why a LogEvent could not be mapped.

/// Why a LogEvent could not be mapped; names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct MappingError {
    /// The JSON path of the field, e.g. `published`; `event` for the LogEvent as a whole.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}
