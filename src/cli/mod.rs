//! The client side of the `okta-stream` binary: `tail`, `get`, `quarantine list`,
//! `hook register|verify`, `health` and `journal check`.
//!
//! They live in the library (not in `main.rs`) so the same code is what tests and users run.
//! Every setting is a flag and an environment variable (clap's `env`); usage errors exit with
//! 64 (EX_USAGE), failures of the call itself with 1.

mod args;
mod error;
pub mod health;
pub mod hook;
pub mod journal;
pub mod render;
pub mod stream;

use std::process::ExitCode;

use clap::Subcommand;

pub use error::{CliError, EXIT_USAGE, code_name};

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
