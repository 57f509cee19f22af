//! `okta-stream health`: asks a running service's `/readyz`; exit 0 when ready, 1 otherwise.
//!
//! The Docker image's HEALTHCHECK runs it, so the image needs no curl.

use std::time::Duration;

use clap::Args;

use super::error::CliError;

/// `okta-stream health`.
#[derive(Args, Clone)]
pub struct HealthArgs {
    /// The readiness URL of the service (on its admin listener).
    #[arg(
        long,
        env = "OKTA_STREAM_HEALTH_URL",
        default_value = "http://127.0.0.1:9090/readyz",
        value_name = "URL"
    )]
    url: String,
    /// Give up after this many seconds.
    #[arg(long, env = "OKTA_STREAM_HEALTH_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout_secs: u64,
}

/// Exit 0 (prints `ready`) when `--url` answers 2xx; otherwise an error (exit 1).
pub async fn check(args: HealthArgs) -> Result<(), CliError> {
    let url = reqwest::Url::parse(&args.url).map_err(|e| {
        CliError::Usage(format!(
            "invalid setting OKTA_STREAM_HEALTH_URL (--url): `{}`: {e}",
            args.url
        ))
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(CliError::Usage(format!(
            "invalid setting OKTA_STREAM_HEALTH_URL (--url): `{}` is not an http(s) URL",
            args.url
        )));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()
        .map_err(|e| CliError::NotReady(e.to_string()))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| CliError::NotReady(format!("{}: {}", args.url, e.without_url())))?;
    let status = response.status();
    if status.is_success() {
        println!("ready");
        Ok(())
    } else {
        Err(CliError::NotReady(format!(
            "{} answered {status}",
            args.url
        )))
    }
}
