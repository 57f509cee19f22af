//! `okta-stream tail`, `get` and `quarantine list`: gRPC calls to a running okta-stream,
//! printed as JSON lines (`tail` on a terminal, or with `--output text`: readable lines, see
//! [`super::render`]).
//!
//! Events print in canonical proto3 JSON (lowerCamelCase names, 64-bit integers as strings,
//! defaults omitted, timestamps in RFC 3339), the same text `grpcurl` prints, via
//! `prost-reflect` over the embedded descriptor set. `tail` remembers the cursor of the last
//! event it printed and, when the connection drops or the server goes away, reconnects with
//! backoff and resumes `after` it: no gap, no duplicate.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use super::args::secret_value;
use super::error::CliError;
use crate::proto::Kind;
use crate::proto::event_filter::Start;
use crate::proto::event_stream_client::EventStreamClient;
use crate::proto::{self, EventFilter};
use crate::secret::Secret;

/// First wait before reconnecting; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Largest message accepted from the server (an event with a big `event_details`).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Where and how to reach okta-stream's gRPC port.
#[derive(Args, Clone)]
pub struct Connection {
    /// gRPC URL of okta-stream (`https://` for TLS).
    #[arg(
        long,
        env = "OKTA_STREAM_GRPC_URL",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL"
    )]
    pub grpc_url: String,
    /// Bearer token, when the server requires one (OKTA_STREAM_GRPC_TOKENS).
    #[arg(long, env = "OKTA_STREAM_GRPC_TOKEN", hide_env_values = true, value_parser = secret_value, value_name = "TOKEN")]
    pub token: Option<Secret>,
    /// PEM file of the CA that signed the server's certificate (default: the system's roots).
    #[arg(long, env = "OKTA_STREAM_GRPC_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// The filter of `tail`, as flags (each repeatable flag also takes a comma-separated list).
#[derive(Args, Clone)]
pub struct FilterArgs {
    /// Event type, exact, or a prefix ending in `.` (e.g. `user.account.`).
    #[arg(
        long = "event-type",
        env = "OKTA_STREAM_TAIL_EVENT_TYPES",
        value_delimiter = ',',
        value_name = "TYPE"
    )]
    pub event_types: Vec<String>,
    /// Okta user the event is about: id or login (case-insensitive).
    #[arg(
        long = "user",
        env = "OKTA_STREAM_TAIL_USERS",
        value_delimiter = ',',
        value_name = "USER"
    )]
    pub users: Vec<String>,
    /// Actor: id or alternate id (case-insensitive).
    #[arg(
        long = "actor",
        env = "OKTA_STREAM_TAIL_ACTORS",
        value_delimiter = ',',
        value_name = "ACTOR"
    )]
    pub actors: Vec<String>,
    /// Changed profile attribute (any of them matches; case-insensitive).
    #[arg(
        long = "changed-attribute",
        env = "OKTA_STREAM_TAIL_CHANGED_ATTRIBUTES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub changed_attributes: Vec<String>,
    /// Lowest severity: debug, info, warn or error.
    #[arg(long = "min-severity", env = "OKTA_STREAM_TAIL_MIN_SEVERITY", value_parser = parse_severity, value_name = "SEVERITY")]
    pub min_severity: Option<i32>,
    /// Outcome: success, failure, skipped, allow, deny, challenge, unknown, rate_limit, ...
    #[arg(long = "result", env = "OKTA_STREAM_TAIL_RESULTS", value_delimiter = ',', value_parser = parse_outcome, value_name = "RESULT")]
    pub results: Vec<i32>,
    /// Ingest path: hook or poller.
    #[arg(long = "source", env = "OKTA_STREAM_TAIL_SOURCES", value_delimiter = ',', value_parser = parse_source, value_name = "SOURCE")]
    pub sources: Vec<i32>,
    /// Replay events published at or after this RFC 3339 time, then follow live.
    #[arg(long, env = "OKTA_STREAM_TAIL_SINCE", value_parser = parse_since, group = "start", value_name = "TIME")]
    pub since: Option<prost_types::Timestamp>,
    /// Replay events after this cursor (exclusive), then follow live.
    #[arg(
        long,
        env = "OKTA_STREAM_TAIL_AFTER",
        group = "start",
        value_name = "CURSOR"
    )]
    pub after: Option<u64>,
    /// Replay from the oldest retained event, then follow live.
    #[arg(long, env = "OKTA_STREAM_TAIL_FROM_OLDEST", group = "start")]
    pub from_oldest: bool,
}

impl FilterArgs {
    /// The `EventFilter` these flags describe.
    pub fn to_filter(&self) -> EventFilter {
        let start = if let Some(since) = self.since {
            Some(Start::Since(since))
        } else if let Some(after) = self.after {
            Some(Start::After(after))
        } else if self.from_oldest {
            Some(Start::FromOldest(true))
        } else {
            None
        };
        EventFilter {
            event_types: self.event_types.clone(),
            okta_users: self.users.clone(),
            actors: self.actors.clone(),
            changed_attributes: self.changed_attributes.clone(),
            min_severity: self.min_severity.unwrap_or_default(),
            results: self.results.clone(),
            ingest_sources: self.sources.clone(),
            start,
        }
    }
}

/// `okta-stream tail`.
#[derive(Args, Clone)]
pub struct TailArgs {
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    connection: Connection,
    /// Exit after printing this many events.
    #[arg(long, env = "OKTA_STREAM_TAIL_MAX_EVENTS", value_name = "N")]
    max_events: Option<u64>,
    /// Also print heartbeats and reconnects (to stderr).
    #[arg(long, short, env = "OKTA_STREAM_TAIL_VERBOSE")]
    verbose: bool,
    /// `text`: one readable line per event; `json`: canonical proto3 JSON lines; `auto`: text
    /// on a terminal, JSON otherwise.
    #[arg(long, env = "OKTA_STREAM_TAIL_OUTPUT", value_enum, default_value_t = Output::Auto, value_name = "FORMAT")]
    output: Output,
}

/// How `tail` prints events.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Text when stdout is a terminal, JSON lines otherwise.
    Auto,
    /// One readable line per event (time, type, actor → user, changes, result).
    Text,
    /// One canonical proto3 JSON object per line.
    Json,
}

impl Output {
    /// Whether events print as readable lines, given whether stdout is a terminal.
    fn readable(self, terminal: bool) -> bool {
        match self {
            Output::Auto => terminal,
            Output::Text => true,
            Output::Json => false,
        }
    }
}

/// `okta-stream get <uuid>`.
#[derive(Args, Clone)]
pub struct GetArgs {
    /// The Okta LogEvent uuid.
    uuid: String,
    #[command(flatten)]
    connection: Connection,
}

/// `okta-stream quarantine ...`.
#[derive(Subcommand, Clone)]
pub enum QuarantineCommand {
    /// Print every quarantined LogEvent (oldest first) as JSON lines: reason, raw, origin,
    /// received; pages through all of them.
    List(QuarantineListArgs),
}

/// `okta-stream quarantine list`.
#[derive(Args, Clone)]
pub struct QuarantineListArgs {
    /// Most entries to print (default: all).
    #[arg(long, env = "OKTA_STREAM_QUARANTINE_LIMIT", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Newest first instead of oldest first.
    #[arg(long, env = "OKTA_STREAM_QUARANTINE_NEWEST_FIRST")]
    newest_first: bool,
    #[command(flatten)]
    connection: Connection,
}

fn parse_severity(value: &str) -> Result<i32, String> {
    let name = format!("SEVERITY_{}", value.trim().to_ascii_uppercase());
    proto::Severity::from_str_name(&name)
        .map(|s| s as i32)
        .ok_or_else(|| "expected debug, info, warn or error".to_owned())
}

fn parse_outcome(value: &str) -> Result<i32, String> {
    let name = format!(
        "OUTCOME_{}",
        value.trim().to_ascii_uppercase().replace('-', "_")
    );
    proto::Outcome::from_str_name(&name)
        .map(|o| o as i32)
        .ok_or_else(|| {
            "expected success, failure, skipped, allow, deny, challenge, unknown, rate_limit, \
             deferred, scheduled, abandoned, unanswered or unspecified"
                .to_owned()
        })
}

fn parse_source(value: &str) -> Result<i32, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "hook" => Ok(proto::IngestSource::Hook as i32),
        "poller" => Ok(proto::IngestSource::Poller as i32),
        _ => Err("expected hook or poller".to_owned()),
    }
}

fn parse_since(value: &str) -> Result<prost_types::Timestamp, String> {
    let time = chrono::DateTime::parse_from_rfc3339(value.trim())
        .map_err(|e| format!("not an RFC 3339 time (e.g. 2026-11-28T10:00:00Z): {e}"))?;
    Ok(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    })
}

/// Turns `okta.events.v1` messages into canonical proto3 JSON.
#[derive(Debug, Clone)]
pub struct JsonPrinter {
    event: MessageDescriptor,
    heartbeat: MessageDescriptor,
}

impl JsonPrinter {
    /// Loads the descriptors embedded in the binary.
    pub fn new() -> Result<Self, CliError> {
        let pool = DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| CliError::Json(format!("embedded descriptors: {e}")))?;
        let message = |name: &str| {
            pool.get_message_by_name(name)
                .ok_or_else(|| CliError::Json(format!("embedded descriptors lack {name}")))
        };
        Ok(Self {
            event: message("okta.events.v1.Event")?,
            heartbeat: message("okta.events.v1.Heartbeat")?,
        })
    }

    /// An encoded `Event` as one line of JSON, and its cursor.
    pub fn event(&self, encoded: &[u8]) -> Result<(String, u64), CliError> {
        let (message, cursor) = self.decode(encoded)?;
        let line = serde_json::to_string(&message).map_err(|e| CliError::Json(e.to_string()))?;
        Ok((line, cursor))
    }

    /// An encoded `Event` as one readable line ([`super::render`]), and its cursor.
    pub fn event_text(&self, encoded: &[u8]) -> Result<(String, u64), CliError> {
        let (message, cursor) = self.decode(encoded)?;
        Ok((super::render::event_line(&message), cursor))
    }

    fn decode(&self, encoded: &[u8]) -> Result<(DynamicMessage, u64), CliError> {
        let message = DynamicMessage::decode(self.event.clone(), encoded)
            .map_err(|e| CliError::Json(format!("the server sent an undecodable event: {e}")))?;
        let cursor = message
            .get_field_by_name("cursor")
            .and_then(|v| v.as_u64())
            .unwrap_or_default();
        Ok((message, cursor))
    }

    fn heartbeat(&self, heartbeat: &proto::Heartbeat) -> Result<String, CliError> {
        let message =
            DynamicMessage::decode(self.heartbeat.clone(), heartbeat.encode_to_vec().as_slice())
                .map_err(|e| CliError::Json(e.to_string()))?;
        serde_json::to_string(&message).map_err(|e| CliError::Json(e.to_string()))
    }
}

/// The error and its sources in one line (tonic's transport errors say little on their own).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

impl Connection {
    fn endpoint(&self) -> Result<Endpoint, CliError> {
        let bad = |problem: String| {
            CliError::Usage(format!(
                "invalid setting OKTA_STREAM_GRPC_URL (--grpc-url): {problem}"
            ))
        };
        let tls = if self.grpc_url.starts_with("https://") {
            true
        } else if self.grpc_url.starts_with("http://") {
            false
        } else {
            return Err(bad(format!(
                "`{}` must start with http:// or https://",
                self.grpc_url
            )));
        };
        let mut endpoint = Endpoint::from_shared(self.grpc_url.clone())
            .map_err(|e| bad(format!("`{}` is not a URL: {e}", self.grpc_url)))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if tls {
            let mut config = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &self.ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    CliError::Usage(format!(
                        "invalid setting OKTA_STREAM_GRPC_CA_FILE (--ca-file): cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| bad(format!("TLS: {}", chain(&e))))?;
        }
        Ok(endpoint)
    }

    async fn client(&self) -> Result<EventStreamClient<Channel>, CliError> {
        let channel = self
            .endpoint()?
            .connect()
            .await
            .map_err(|e| CliError::Connect {
                url: self.grpc_url.clone(),
                reason: chain(&e),
            })?;
        Ok(EventStreamClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    fn request<T>(&self, message: T) -> Result<Request<T>, CliError> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            let value = format!("Bearer {}", token.expose()).parse().map_err(|_| {
                CliError::Usage(
                    "invalid setting OKTA_STREAM_GRPC_TOKEN (--token): not a valid header value"
                        .to_owned(),
                )
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// Statuses after which reconnecting cannot help: the request itself is refused.
fn is_final(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::OutOfRange
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::NotFound
            | Code::Unimplemented
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::DataLoss
    )
}

/// How one connection of `tail` ended.
enum Ended {
    /// `--max-events` reached.
    Done,
    /// Reconnect after a backoff; `progressed` when it received anything (resets the backoff).
    Retry { reason: String, progressed: bool },
}

/// What `tail` has printed so far.
struct TailState {
    filter: EventFilter,
    /// Resume after this cursor on the next connection.
    resume_after: Option<u64>,
    printed: u64,
}

impl TailState {
    fn next_filter(&self) -> EventFilter {
        let mut filter = self.filter.clone();
        if let Some(after) = self.resume_after {
            filter.start = Some(Start::After(after));
        }
        filter
    }
}

/// `okta-stream tail`: subscribe, print events as JSON lines, reconnect and resume.
pub async fn tail(args: TailArgs) -> Result<(), CliError> {
    let printer = JsonPrinter::new()?;
    let mut state = TailState {
        filter: args.filter.to_filter(),
        resume_after: None,
        printed: 0,
    };
    if args.max_events == Some(0) {
        return Ok(());
    }
    let mut backoff = FIRST_BACKOFF;
    loop {
        match tail_once(&args, &printer, &mut state).await? {
            Ended::Done => return Ok(()),
            Ended::Retry { reason, progressed } => {
                if progressed {
                    backoff = FIRST_BACKOFF;
                }
                let resume = state
                    .resume_after
                    .map_or_else(String::new, |c| format!(", resuming after cursor {c}"));
                eprintln!(
                    "okta-stream: {reason}; reconnecting in {} ms{resume}",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn retry_or_fail(status: Status, progressed: bool) -> Result<Ended, CliError> {
    if is_final(status.code()) {
        return Err(CliError::Status(status));
    }
    Ok(Ended::Retry {
        reason: format!(
            "{}: {}",
            super::error::code_name(status.code()),
            status.message()
        ),
        progressed,
    })
}

async fn tail_once(
    args: &TailArgs,
    printer: &JsonPrinter,
    state: &mut TailState,
) -> Result<Ended, CliError> {
    let mut client = match args.connection.client().await {
        Ok(client) => client,
        Err(CliError::Connect { reason, .. }) => {
            return Ok(Ended::Retry {
                reason: format!("cannot connect to {}: {reason}", args.connection.grpc_url),
                progressed: false,
            });
        }
        Err(other) => return Err(other),
    };
    let request = args.connection.request(state.next_filter())?;
    let mut stream = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return retry_or_fail(status, false),
    };
    let live_only = state.filter.start.is_none();
    let mut progressed = false;
    let mut stdout = std::io::stdout();
    let readable = args
        .output
        .readable(std::io::IsTerminal::is_terminal(&stdout));
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => {
                return Ok(Ended::Retry {
                    reason: "the server ended the stream".to_owned(),
                    progressed,
                });
            }
            Err(status) => return retry_or_fail(status, progressed),
        };
        progressed = true;
        match message.kind {
            Some(Kind::Event(encoded)) => {
                let (line, cursor) = if readable {
                    printer.event_text(&encoded)?
                } else {
                    printer.event(&encoded)?
                };
                writeln!(stdout, "{line}")?;
                stdout.flush()?;
                state.resume_after = Some(cursor);
                state.printed += 1;
                if args.max_events.is_some_and(|max| state.printed >= max) {
                    return Ok(Ended::Done);
                }
            }
            Some(Kind::Heartbeat(heartbeat)) => {
                if args.verbose {
                    eprintln!("heartbeat {}", printer.heartbeat(&heartbeat)?);
                }
                // A live-only tail that printed nothing yet has no cursor to resume after; the
                // heartbeat's head is one: every matching event up to it was sent.
                if live_only && state.resume_after.is_none() {
                    state.resume_after = Some(heartbeat.head_cursor);
                }
            }
            None => {}
        }
    }
}

/// `okta-stream get <uuid>`: the event as one line of JSON; NOT_FOUND exits 1.
pub async fn get(args: GetArgs) -> Result<(), CliError> {
    if args.uuid.trim().is_empty() {
        return Err(CliError::Usage("the uuid must not be empty".to_owned()));
    }
    let printer = JsonPrinter::new()?;
    let mut client = args.connection.client().await?;
    let request = args.connection.request(proto::GetEventRequest {
        uuid: args.uuid.clone(),
    })?;
    let response = client.get_event(request).await.map_err(CliError::Status)?;
    let event = response
        .into_inner()
        .event
        .ok_or_else(|| CliError::Json("the server answered without an event".to_owned()))?;
    let (line, _) = printer.event(&event.encode_to_vec())?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

/// `okta-stream quarantine list`: one JSON object per quarantined entry.
pub async fn quarantine(command: QuarantineCommand) -> Result<(), CliError> {
    let QuarantineCommand::List(args) = command;
    let mut client = args.connection.client().await?;
    let mut stdout = std::io::stdout();
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut page_token = String::new();
    while left > 0 {
        let request = args.connection.request(proto::ListQuarantinedRequest {
            limit: left.min(QUARANTINE_PAGE) as u32,
            page_token: page_token.clone(),
            newest_first: args.newest_first,
        })?;
        let page = client
            .list_quarantined(request)
            .await
            .map_err(CliError::Status)?
            .into_inner();
        for entry in page.entries {
            let line = serde_json::json!({
                "reason": entry.reason,
                "raw": entry.raw,
                "raw_bytes": entry.raw_bytes,
                "raw_truncated": entry.raw_truncated,
                "origin": entry.origin,
                "received": entry.received,
            });
            writeln!(stdout, "{line}")?;
            left = left.saturating_sub(1);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    stdout.flush()?;
    Ok(())
}

/// Entries asked for per ListQuarantined call (the server may answer fewer).
const QUARANTINE_PAGE: u64 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_parse_case_insensitively() {
        assert_eq!(parse_severity("WARN"), Ok(proto::Severity::Warn as i32));
        assert_eq!(
            parse_outcome("rate_limit"),
            Ok(proto::Outcome::RateLimit as i32)
        );
        assert_eq!(parse_outcome("Failure"), Ok(proto::Outcome::Failure as i32));
        assert_eq!(
            parse_source("Poller"),
            Ok(proto::IngestSource::Poller as i32)
        );
        assert!(parse_severity("loud").is_err());
        assert!(parse_source("both").is_err());
        let since = parse_since("2026-11-28T10:00:00.5Z").unwrap();
        assert_eq!(since.nanos, 500_000_000);
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn events_print_as_canonical_proto3_json() {
        let printer = JsonPrinter::new().unwrap();
        let event = proto::Event {
            cursor: 42,
            uuid: "u-1".to_owned(),
            event_type: "user.account.update_profile".to_owned(),
            severity: proto::Severity::Info as i32,
            changed_attributes: vec!["lastName".to_owned()],
            published: Some(prost_types::Timestamp {
                seconds: 1_764_324_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let (line, cursor) = printer.event(&event.encode_to_vec()).unwrap();
        assert_eq!(cursor, 42);
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["cursor"], "42", "uint64 prints as a string: {line}");
        assert_eq!(json["eventType"], "user.account.update_profile");
        assert_eq!(json["severity"], "SEVERITY_INFO");
        assert_eq!(json["changedAttributes"][0], "lastName");
        assert_eq!(json["published"], "2025-11-28T10:00:00Z");
        assert!(
            json.get("message").is_none(),
            "defaults are omitted: {line}"
        );
    }

    #[test]
    fn tail_prints_text_on_a_terminal_and_json_when_piped_unless_told() {
        assert!(Output::Auto.readable(true));
        assert!(!Output::Auto.readable(false));
        assert!(Output::Text.readable(false));
        assert!(!Output::Json.readable(true));
    }

    #[test]
    fn only_refusals_end_a_tail() {
        assert!(is_final(Code::InvalidArgument));
        assert!(is_final(Code::OutOfRange));
        assert!(is_final(Code::Unauthenticated));
        assert!(!is_final(Code::Unavailable));
        assert!(!is_final(Code::ResourceExhausted));
        assert!(!is_final(Code::Unknown));
    }
}
