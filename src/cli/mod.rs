//! The client side of the `okta-stream` binary: `tail`, `get`, `quarantine list`,
//! `hook register|verify`, `health` and `journal check`.
//!
//! They live in the library (not in `main.rs`) so the same code is what tests and users run.
//! Every setting is a flag and an environment variable (clap's `env`); usage errors exit with
//! 64 (EX_USAGE), failures of the call itself with 1.

pub mod health;
pub mod hook;
pub mod journal;
pub mod render;
pub mod stream;

use std::process::ExitCode;

use clap::Subcommand;

use crate::secret::Secret;

/// Exit status for a usage or configuration error (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// The client subcommands, added to the `serve` command line by `main`.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Subscribe and print matching events as JSON lines; reconnects and resumes by itself.
    Tail(stream::TailArgs),
    /// Print one stored event by its Okta LogEvent uuid as JSON.
    Get(stream::GetArgs),
    /// Inspect events that were received but could not be stored.
    #[command(subcommand)]
    Quarantine(stream::QuarantineCommand),
    /// Create or verify the Okta Event Hook through Okta's management API.
    #[command(subcommand)]
    Hook(hook::HookCommand),
    /// Exit 0 if the service is ready (its /readyz answers 2xx), 1 otherwise.
    Health(health::HealthArgs),
    /// Inspect the embedded journal offline.
    #[command(subcommand)]
    Journal(journal::JournalCommand),
}

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

/// Parses a secret flag value into the redacting [`Secret`] (clap value parser).
pub(crate) fn secret_value(value: &str) -> Result<Secret, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(Secret::new(value.trim()))
}

/// Runs a client command; prints a failure's message to stderr and returns the exit status.
pub async fn run(command: ClientCommand) -> ExitCode {
    let result = match command {
        ClientCommand::Tail(args) => stream::tail(args).await,
        ClientCommand::Get(args) => stream::get(args).await,
        ClientCommand::Quarantine(command) => stream::quarantine(command).await,
        ClientCommand::Hook(command) => hook::run(command).await,
        ClientCommand::Health(args) => health::check(args).await,
        ClientCommand::Journal(command) => journal::run(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            // `okta-stream tail | head` ends by closing the pipe: not a failure.
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("okta-stream: {error}");
            error.exit_code()
        }
    }
}
