//! `okta-stream hook register|verify`: create and verify the Okta Event Hook through Okta's
//! management API, with the poller's credentials settings; `hook secret` prints the secret
//! the service generated (start-up only says where it is).
//!
//! The secret Okta must send is the one the service accepts: the first value of
//! `OKTA_STREAM_HOOK_SECRETS`, or else the secret the service generated in its data dir.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::error::CliError;
use crate::config::{
    ConfigError, DEFAULT_DATA_DIR, DEFAULT_HOOK_AUTH_HEADER, DEFAULT_POLL_EVENT_TYPES,
    OktaOrgSettings,
};
use crate::hook::auth::GENERATED_SECRET_FILE;
use crate::okta::Credentials;
use crate::okta::hooks::{EventHooksClient, HookRegistration};
use crate::okta::settings::org_origin;
use crate::secret::Secret;

/// Bound on each call to Okta.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The Okta org and credentials: the poller's settings, declared once in [`crate::config`].
fn client(okta: &OktaOrgSettings) -> Result<EventHooksClient, CliError> {
    let usage = |e: ConfigError| CliError::Usage(e.to_string());
    let org = org_origin(okta).map_err(usage)?;
    let credentials = Credentials::from_settings(&okta.auth().map_err(usage)?).map_err(usage)?;
    EventHooksClient::new(&org, &credentials, TIMEOUT).map_err(|e| CliError::Usage(e.to_string()))
}

/// `okta-stream hook ...`.
#[derive(Subcommand, Clone)]
pub enum HookCommand {
    /// Create the Event Hook in Okta (POST /api/v1/eventHooks); prints Okta's answer.
    Register(RegisterArgs),
    /// Ask Okta to verify the hook (it calls the hook URL once); prints Okta's answer.
    Verify(VerifyArgs),
    /// Print the hook secret the service generated in its data dir (it is never logged).
    Secret(SecretArgs),
}

/// `okta-stream hook secret`.
#[derive(Args, Clone)]
pub struct SecretArgs {
    /// The service's data dir, where it stores a generated hook secret.
    #[arg(long, env = "OKTA_STREAM_DATA_DIR", default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    data_dir: PathBuf,
}

/// The secret the service generated in `data_dir`, or a usage error naming the file.
fn generated_secret(data_dir: &std::path::Path) -> Result<Secret, CliError> {
    let path = data_dir.join(GENERATED_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(Secret::new(text.trim())),
        Ok(_) => Err(CliError::Usage(format!(
            "{} is empty; remove it and restart the service to generate a new secret",
            path.display()
        ))),
        Err(e) => Err(CliError::Usage(format!(
            "no generated hook secret in {} ({e}); the service generates one on its first start \
             without OKTA_STREAM_HOOK_SECRETS (point --data-dir at its data dir)",
            path.display()
        ))),
    }
}

/// `okta-stream hook register`.
#[derive(Args, Clone)]
pub struct RegisterArgs {
    /// Public URL of this service's hook endpoint, e.g. `https://ingest.example.com/okta/hook`.
    #[arg(long, env = "OKTA_STREAM_HOOK_URL", value_name = "URL")]
    url: String,
    /// Name of the hook in Okta.
    #[arg(long, env = "OKTA_STREAM_HOOK_NAME", default_value = "okta-stream")]
    name: String,
    /// Event type Okta delivers (repeatable, or comma-separated).
    #[arg(long = "event-type", env = "OKTA_STREAM_HOOK_EVENT_TYPES", value_delimiter = ',', default_value = DEFAULT_POLL_EVENT_TYPES, value_name = "TYPE")]
    event_types: Vec<String>,
    /// Header Okta sends the secret in (the service's OKTA_STREAM_HOOK_AUTH_HEADER).
    #[arg(long, env = "OKTA_STREAM_HOOK_AUTH_HEADER", default_value = DEFAULT_HOOK_AUTH_HEADER, value_name = "HEADER")]
    hook_auth_header: String,
    /// Secret Okta sends; the first of the service's OKTA_STREAM_HOOK_SECRETS. Unset: the
    /// secret the service generated in --data-dir.
    #[arg(
        long,
        env = "OKTA_STREAM_HOOK_SECRETS",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    hook_secrets: Option<String>,
    /// The service's data dir, where it stores a generated hook secret.
    #[arg(long, env = "OKTA_STREAM_DATA_DIR", default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    okta: OktaOrgSettings,
}

impl RegisterArgs {
    fn secret(&self) -> Result<Secret, CliError> {
        if let Some(first) = self
            .hook_secrets
            .as_deref()
            .and_then(|list| list.split(',').map(str::trim).find(|s| !s.is_empty()))
        {
            return Ok(Secret::new(first));
        }
        let path = self.data_dir.join(GENERATED_SECRET_FILE);
        generated_secret(&self.data_dir).map_err(|_| {
            CliError::Usage(format!(
                "invalid setting OKTA_STREAM_HOOK_SECRETS (--hook-secrets): not set, and no \
                 generated secret in {} (set it, or point --data-dir at the service's data dir)",
                path.display()
            ))
        })
    }
}

/// `okta-stream hook verify <hook-id>`.
#[derive(Args, Clone)]
pub struct VerifyArgs {
    /// The Event Hook id printed by `hook register` (`id`, e.g. who1a2b3c...).
    hook_id: String,
    #[command(flatten)]
    okta: OktaOrgSettings,
}

/// Runs `hook register` or `hook verify`.
pub async fn run(command: HookCommand) -> Result<(), CliError> {
    let answer = match command {
        HookCommand::Register(args) => {
            let header = args.hook_auth_header.trim();
            if header.parse::<http::HeaderName>().is_err() {
                return Err(CliError::Usage(format!(
                    "invalid setting OKTA_STREAM_HOOK_AUTH_HEADER (--hook-auth-header): `{header}` is not a header name"
                )));
            }
            let client = client(&args.okta)?;
            let registration = HookRegistration {
                name: args.name.clone(),
                url: args.url.clone(),
                event_types: args.event_types.clone(),
                auth_header: header.to_owned(),
                secret: args.secret()?,
            };
            let hook = client.register(&registration).await?;
            let id = hook["id"].as_str().unwrap_or_default().to_owned();
            eprintln!(
                "created Event Hook {id}; once the service answers at {}, run: okta-stream hook verify {id}",
                args.url
            );
            hook
        }
        HookCommand::Secret(args) => {
            // The one place the generated secret is printed: asked for, on stdout.
            let secret = generated_secret(&args.data_dir)?;
            let mut stdout = std::io::stdout();
            writeln!(stdout, "{}", secret.expose())?;
            stdout.flush()?;
            return Ok(());
        }
        HookCommand::Verify(args) => {
            let client = client(&args.okta)?;
            let hook = client.verify(&args.hook_id).await?;
            eprintln!(
                "Event Hook {}: verificationStatus {}",
                args.hook_id,
                hook["verificationStatus"].as_str().unwrap_or("unknown")
            );
            hook
        }
    };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{answer}")?;
    stdout.flush()?;
    Ok(())
}
