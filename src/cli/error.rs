//! Why a client command failed, and the exit status and wording each failure gets.

use std::process::ExitCode;

/// Exit status for a usage or configuration error (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: a flag or an environment variable. Exits 64.
    #[error("{0}")]
    Usage(String),
    /// The server answered with a gRPC status that ends the command.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(tonic::Status),
    /// The server could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// Printing failed (other than a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// An answer could not be turned into JSON.
    #[error("cannot print the answer as JSON: {0}")]
    Json(String),
    /// The Okta management API failed.
    #[error("{0}")]
    Hooks(#[from] crate::okta::hooks::HooksError),
    /// The service is not ready.
    #[error("not ready: {0}")]
    NotReady(String),
    /// The journal is not sound (or cannot be read).
    #[error("{0}")]
    Journal(#[from] crate::journal::JournalError),
}

impl CliError {
    /// The exit status for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(EXIT_USAGE),
            CliError::Hooks(crate::okta::hooks::HooksError::Invalid(_)) => {
                ExitCode::from(EXIT_USAGE)
            }
            _ => ExitCode::FAILURE,
        }
    }
}

/// The canonical name of a gRPC code, as `grpcurl` prints it (e.g. `NOT_FOUND`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
