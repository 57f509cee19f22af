//! `okta-stream`: parse the command line; `serve` starts the service and runs until a signal,
//! the other subcommands are its clients (see [`okta_stream::cli`]).
//!
//! Glue only: everything else lives in the library so tests drive it the way `main` does.
//! Exit status: 0 after a clean shutdown or a successful command, 64 for a usage or
//! configuration error (naming the setting), 1 for any other failure.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Command, FromArgMatches as _, Subcommand as _};
use okta_stream::app::{App, AppError};
use okta_stream::cli::ClientCommand;
use okta_stream::config::{self, Config, ConfigError, Sources};
use okta_stream::hook::auth::GENERATED_SECRET_FILE;
use okta_stream::telemetry;

/// mimalloc instead of glibc malloc: ingest and fan-out allocate and free many short-lived
/// buffers (delivery bodies, per-event records, per-message encode buffers) across threads,
/// which glibc handles with arena locks and `malloc_consolidate`; see BENCHMARKS.md for the A/B.
/// Built without transparent huge pages (`no_thp` in Cargo.toml): faulting in and zeroing 2 MiB
/// pages as the heap grew cost a third of the server's CPU per ingested event.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the binary is, for `--help`.
const ABOUT: &str = "Okta event hooks and System Log events as a typed, replayable gRPC stream";

/// Exit status for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn cli() -> Command {
    let cli = Command::new("okta-stream")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(config::serve_command());
    // The derive sets the command's about from the enum's doc comment; restore ours.
    ClientCommand::augment_subcommands(cli)
        .about(ABOUT)
        .long_about(None)
}

/// Prints a clap message (help, version or a usage error) and returns its exit status.
fn usage(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    match error.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(EXIT_CONFIG),
    }
}

/// Completes on the first SIGINT or SIGTERM; a second one exits at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(args: &[OsString]) -> ExitCode {
    let config = match Config::load(args, &Sources::from_process()) {
        Ok(config) => config,
        Err(ConfigError::Usage(error)) => return usage(&error),
        Err(error) => {
            eprintln!("okta-stream: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(config.log_format);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let secret_file = config.data_dir.join(GENERATED_SECRET_FILE);
    let app = match App::bind(config).await {
        Ok(app) => app,
        Err(error @ AppError::Config(_)) => {
            eprintln!("okta-stream: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(error) => {
            eprintln!("okta-stream: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening http={}", app.http_addr());
    println!("listening grpc={}", app.grpc_addr());
    println!("listening admin={}", app.admin_addr());
    if app.generated_hook_secret().is_some() {
        // Never the value (it would land in the container's log): where it is, and the
        // command that prints it on demand.
        println!("hook secret generated: {}", secret_file.display());
        println!(
            "configure the Okta Event Hook with header `{}` and the secret that \
             `okta-stream hook secret` prints, or set OKTA_STREAM_HOOK_SECRETS",
            app.hook_auth_header()
        );
    }
    match app.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        // A setting only the server set-up can check (an unreadable TLS file).
        Err(error @ AppError::Config(_)) => {
            eprintln!("okta-stream: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(error) => {
            eprintln!("okta-stream: {error}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // `serve` reads its settings through `config` (flags, environment, file); the client
    // commands are plain clap.
    if args.get(1).is_some_and(|command| command == "serve") {
        return serve(&args[1..]).await;
    }
    let matches = match config::ignore_empty_env(cli(), &Sources::from_process())
        .try_get_matches_from(&args)
    {
        Ok(matches) => matches,
        Err(error) => return usage(&error),
    };
    match ClientCommand::from_arg_matches(&matches) {
        Ok(command) => okta_stream::cli::run(command).await,
        Err(error) => usage(&error),
    }
}
