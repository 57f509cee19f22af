//! `okta-stream`: parse the command line; `serve` starts the service and runs until a signal,
//! the other subcommands are its clients (see [`okta_stream::cli`]).
//!
//! Glue only: everything else lives in the library so tests drive it the way `main` does.
//! Exit status: 0 after a clean shutdown or a successful command, 64 for a usage or
//! configuration error (naming the setting), 1 for any other failure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches as _, Subcommand as _};
use okta_stream::app::App;
use okta_stream::cli::ClientCommand;
use okta_stream::config::{Config, SETTINGS, Sources};
use okta_stream::telemetry;

/// mimalloc instead of glibc malloc: ingest and fan-out allocate and free many short-lived
/// buffers (delivery bodies, per-event records, per-message encode buffers) across threads,
/// which glibc handles with arena locks and `malloc_consolidate`; see BENCHMARKS.md for the A/B.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the binary is, for `--help`.
const ABOUT: &str = "Okta event hooks and System Log events as a typed, replayable gRPC stream";

/// Exit status for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn serve_command() -> Command {
    let mut serve = Command::new("serve")
        .about("Run the service: the hook endpoint, the gRPC stream and (if configured) the System Log poller")
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML file of settings (keys are the flag names; flags and env override it)"),
        );
    for setting in SETTINGS {
        let mut help = format!("{} [env: {}]", setting.help, setting.env);
        if !setting.default.is_empty() {
            help.push_str(&format!(" [default: {}]", setting.default));
        }
        let mut arg = Arg::new(setting.flag)
            .long(setting.flag)
            .value_name("VALUE")
            .action(ArgAction::Set)
            .help(help);
        if setting.default == "false" {
            // A switch: `--accept-empty-journal` alone means `true`.
            arg = arg.num_args(0..=1).default_missing_value("true");
        }
        serve = serve.arg(arg);
    }
    serve
}

fn cli() -> Command {
    let cli = Command::new("okta-stream")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(serve_command());
    // The derive sets the command's about from the enum's doc comment; restore ours.
    ClientCommand::augment_subcommands(cli)
        .about(ABOUT)
        .long_about(None)
}

/// Collects flags, the process environment and the optional file into [`Sources`].
fn sources(matches: &ArgMatches) -> Result<Sources, okta_stream::config::ConfigError> {
    let mut sources = Sources {
        flags: SETTINGS
            .iter()
            .filter_map(|s| {
                matches
                    .get_one::<String>(s.flag)
                    .map(|v| (s.flag.to_owned(), v.clone()))
            })
            .collect(),
        env: std::env::vars().collect::<HashMap<_, _>>(),
        file: HashMap::new(),
    };
    if let Some(path) = matches.get_one::<PathBuf>("config") {
        sources.load_file(path)?;
    }
    Ok(sources)
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

async fn serve(matches: &ArgMatches) -> ExitCode {
    let config = match sources(matches).and_then(|s| Config::resolve(&s)) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("okta-stream: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(config.log_format);
    let app = match App::bind(config).await {
        Ok(app) => app,
        Err(error) => {
            eprintln!("okta-stream: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening http={}", app.http_addr());
    println!("listening grpc={}", app.grpc_addr());
    if let Some(secret) = app.generated_hook_secret() {
        // Shown once, on the start that generated it; later starts read it from the data dir.
        println!(
            "generated a hook secret (stored in the data dir). Configure the Okta Event Hook with \
             authentication field `{}` and secret `{}`, or set OKTA_STREAM_HOOK_SECRETS.",
            app.hook_auth_header(),
            secret.expose()
        );
    }
    match app.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("okta-stream: {error}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = match cli().try_get_matches() {
        Ok(matches) => matches,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_CONFIG),
            };
        }
    };
    match matches.subcommand() {
        Some(("serve", matches)) => serve(matches).await,
        _ => match ClientCommand::from_arg_matches(&matches) {
            Ok(command) => okta_stream::cli::run(command).await,
            Err(error) => {
                let _ = error.print();
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}
