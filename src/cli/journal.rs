//! `okta-stream journal check`: verify an embedded journal offline, before starting on it or
//! after a scare (a crash, a full disk, a restored backup). Exit 0 when sound, 1 otherwise,
//! naming the first bad cursor when a record is damaged.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::error::CliError;
use crate::journal::embedded::FILE_NAME;
use crate::journal::verify;

/// `okta-stream journal ...`.
#[derive(Subcommand)]
pub enum JournalCommand {
    /// Verify the embedded journal offline (redb's integrity check and a decode of every
    /// record); exit 0 when sound, 1 naming the first bad cursor otherwise. Stop the service first.
    Check(CheckArgs),
}

/// Arguments of `journal check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The service's data dir (the journal is its `journal.redb`).
    #[arg(long, env = "OKTA_STREAM_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

/// Runs a `journal` subcommand, printing the verdict.
pub async fn run(command: JournalCommand) -> Result<(), CliError> {
    match command {
        JournalCommand::Check(args) => {
            let path = args.data_dir.join(FILE_NAME);
            let report = tokio::task::spawn_blocking(move || verify::verify(&path))
                .await
                .map_err(|e| CliError::Json(format!("the check stopped: {e}")))??;
            let range = match (report.oldest, report.newest) {
                (Some(oldest), Some(newest)) => format!(", cursors {oldest} to {newest}"),
                _ => String::new(),
            };
            println!(
                "{}: sound: {} events{range}, format version {}",
                report.path.display(),
                report.events,
                report.format_version
            );
            Ok(())
        }
    }
}
