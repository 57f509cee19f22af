//! Safe to expose (issue 11): no open gRPC off loopback by accident, blank secrets refused,
//! scoped tokens (reflection too, gRPC-Web alike, health open), no secret in any output at
//! `RUST_LOG=trace`, a private data dir, and secret headers stored redacted.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::app::{SECRET, TestApp, delivery, profile_update};
use common::fake_okta::{FakeAuth, FakeOkta, PublicKey, log_event};
use common::{eventually, within};
use okta_stream::proto::event_stream_client::EventStreamClient;
use okta_stream::proto::{EventFilter, GetEventRequest, ListEventsRequest, ListQuarantinedRequest};
use okta_stream::secret::Secret;
use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};
use tonic::Code;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_okta-stream");
const LIMIT: Duration = Duration::from_secs(60);

const READ_TOKEN: &str = "read-token-0123456789abcdef";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// `okta-stream ARGS` with only `env` (and PATH) in its environment.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    within(LIMIT, command(args, env).output()).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `serve` on loopback port 0 in `data_dir` with `env`, every byte of its stdout and stderr
/// kept until it is killed.
struct Captured {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Captured {
    async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Captured {
        let data_dir = data_dir.to_str().unwrap();
        let mut all = vec![
            ("OKTA_STREAM_HTTP_ADDR", "127.0.0.1:0"),
            ("OKTA_STREAM_GRPC_ADDR", "127.0.0.1:0"),
            ("OKTA_STREAM_DATA_DIR", data_dir),
        ];
        all.extend_from_slice(env);
        let mut child = command(&["serve"], &all).spawn().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    out.lock().unwrap().push_str(&text(&buf[..n]));
                }
            });
        }
        let captured = Captured { child, out };
        eventually(LIMIT, "the listening lines", || {
            let out = captured.output();
            out.contains("listening http=") && out.contains("listening grpc=")
        })
        .await;
        captured
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn addr(&self, name: &str) -> String {
        let out = self.output();
        let prefix = format!("listening {name}=");
        out.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap()
            .trim()
            .to_owned()
    }

    async fn stop(mut self) -> String {
        self.child.kill().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.output()
    }
}

fn sha256_hex(value: &str) -> String {
    sha2::Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A request carrying `token` as a bearer token, when given.
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// Arguments, extra environment, and the setting the error must name.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn unsafe_or_blank_settings_exit_64_naming_the_setting() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let base = [
        ("OKTA_STREAM_HTTP_ADDR", "127.0.0.1:0"),
        ("OKTA_STREAM_DATA_DIR", dir),
        ("OKTA_STREAM_HOOK_SECRETS", SECRET),
    ];
    let cases: [Case; 7] = [
        // gRPC on every interface without a token, a client CA or the explicit opt-out.
        (
            &["serve"],
            &[("OKTA_STREAM_GRPC_ADDR", "0.0.0.0:0")],
            "OKTA_STREAM_GRPC_TOKENS",
        ),
        (
            &["serve"],
            &[("OKTA_STREAM_GRPC_TOKENS", ",,")],
            "OKTA_STREAM_GRPC_TOKENS",
        ),
        (
            &["serve", "--grpc-tokens", ","],
            &[],
            "OKTA_STREAM_GRPC_TOKENS",
        ),
        (
            &["serve"],
            &[("OKTA_STREAM_GRPC_ADMIN_TOKENS", " ")],
            "OKTA_STREAM_GRPC_ADMIN_TOKENS",
        ),
        (
            &["serve"],
            &[("OKTA_STREAM_RETENTION_MAX_BYTES", "0")],
            "OKTA_STREAM_RETENTION_MAX_BYTES",
        ),
        (
            &["serve"],
            &[("OKTA_STREAM_MAX_EVENT_BYTES", "5242880")],
            "OKTA_STREAM_MAX_EVENT_BYTES",
        ),
        (
            &["serve", "--grpc-tls-cert", "/nonexistent/cert.pem"],
            &[("OKTA_STREAM_GRPC_TLS_KEY", "/nonexistent/key.pem")],
            "OKTA_STREAM_GRPC_TLS_CERT",
        ),
    ];
    for (args, extra, setting) in cases {
        let mut env = base.to_vec();
        env.extend_from_slice(extra);
        let output = run(args, &env).await;
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(64),
            "{args:?} {extra:?}: {stderr}"
        );
        assert!(stderr.contains(setting), "{args:?} {extra:?}: {stderr}");
        assert!(!text(&output.stdout).contains("listening"), "{stderr}");
    }

    // A blank hook secret is an error, not "generate one".
    let output = run(
        &["serve"],
        &[
            ("OKTA_STREAM_HTTP_ADDR", "127.0.0.1:0"),
            ("OKTA_STREAM_GRPC_ADDR", "127.0.0.1:0"),
            ("OKTA_STREAM_DATA_DIR", dir),
            ("OKTA_STREAM_HOOK_SECRETS", "  "),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(64), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("OKTA_STREAM_HOOK_SECRETS"));
    assert!(!data.path().join("hook-secret").exists());

    // A data dir that is a file.
    let file = data.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let output = run(
        &["serve"],
        &[
            ("OKTA_STREAM_HTTP_ADDR", "127.0.0.1:0"),
            ("OKTA_STREAM_GRPC_ADDR", "127.0.0.1:0"),
            ("OKTA_STREAM_DATA_DIR", file.to_str().unwrap()),
            ("OKTA_STREAM_HOOK_SECRETS", SECRET),
        ],
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("OKTA_STREAM_DATA_DIR"), "{stderr}");
    assert!(stderr.contains("not a directory"), "{stderr}");
}

#[tokio::test]
async fn read_tokens_read_events_and_only_admin_tokens_read_the_quarantine() {
    within(LIMIT, async {
        let app = TestApp::start_with(|config| {
            config.grpc.tokens = vec![Secret::new(READ_TOKEN)];
            // Configured as its SHA-256, as a config file may hold it.
            config.grpc.admin_tokens =
                vec![Secret::new(format!("sha256:{}", sha256_hex(ADMIN_TOKEN)))];
        })
        .await;
        let mut client = app.client().await;

        let status = client
            .list_events(with_token(ListEventsRequest::default(), None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = client
            .subscribe(with_token(EventFilter::default(), Some("wrong-token")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);

        for token in [READ_TOKEN, ADMIN_TOKEN] {
            client
                .list_events(with_token(ListEventsRequest::default(), Some(token)))
                .await
                .unwrap();
            client
                .subscribe(with_token(EventFilter::default(), Some(token)))
                .await
                .unwrap();
        }
        let status = client
            .get_event(with_token(
                GetEventRequest {
                    uuid: "nope".into(),
                },
                Some(READ_TOKEN),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "read tokens may GetEvent");

        let status = client
            .list_quarantined(with_token(
                ListQuarantinedRequest::default(),
                Some(READ_TOKEN),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().contains("OKTA_STREAM_GRPC_ADMIN_TOKENS"),
            "{}",
            status.message()
        );
        client
            .list_quarantined(with_token(
                ListQuarantinedRequest::default(),
                Some(ADMIN_TOKEN),
            ))
            .await
            .unwrap();
        // The digest itself is not a token.
        let status = client
            .list_quarantined(with_token(
                ListQuarantinedRequest::default(),
                Some(&format!("sha256:{}", sha256_hex(ADMIN_TOKEN))),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);

        // Probes need no token.
        let channel = Channel::from_shared(format!("http://{}", app.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let status = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );

        // gRPC-Web follows the same rules: a read token asking for the quarantine.
        let url = format!(
            "http://{}/okta.events.v1.EventStream/ListQuarantined",
            app.grpc_addr
        );
        let web = |token: &str| {
            app.http_client()
                .post(&url)
                .header("content-type", "application/grpc-web+proto")
                .header("x-grpc-web", "1")
                .header("authorization", format!("Bearer {token}"))
                .body(vec![0u8, 0, 0, 0, 0])
                .send()
        };
        let grpc_status = |response: &reqwest::Response| {
            response
                .headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let denied = web(READ_TOKEN).await.unwrap();
        assert_eq!(grpc_status(&denied).as_deref(), Some("7"), "{denied:?}");
        let allowed = web(ADMIN_TOKEN).await.unwrap();
        assert_ne!(grpc_status(&allowed).as_deref(), Some("7"), "{allowed:?}");
        let body = allowed.bytes().await.unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains("grpc-status:0"),
            "{body:?}"
        );
    })
    .await
}

#[tokio::test]
async fn reflection_needs_a_token_when_tokens_are_configured() {
    let app = TestApp::start_with(|config| {
        config.grpc.tokens = vec![Secret::new(READ_TOKEN)];
    })
    .await;
    let addr = app.grpc_addr.to_string();
    let grpcurl = |extra: &[&str]| {
        let mut command = Command::new("grpcurl");
        command
            .arg("-plaintext")
            .args(extra)
            .args([addr.as_str(), "list"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    };
    let refused = within(LIMIT, grpcurl(&[]).output()).await.unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("Unauthenticated"),
        "{}",
        text(&refused.stderr)
    );
    let header = format!("authorization: Bearer {READ_TOKEN}");
    let listed = within(LIMIT, grpcurl(&["-H", &header]).output())
        .await
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).contains("okta.events.v1.EventStream"));
}

/// A service app's EC private key in PEM, and the fake Okta org that knows its public key.
async fn service_app(dir: &Path) -> (FakeOkta, String, std::path::PathBuf) {
    use p256::pkcs8::EncodePrivateKey as _;
    let secret = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
    let okta = FakeOkta::start(FakeAuth::ServiceApp {
        client_id: "0oaTRACE".to_owned(),
        public_key: PublicKey::Ec(secret.public_key()),
        dpop: true,
    })
    .await;
    let pem = secret
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    let key_file = dir.join("key.pem");
    std::fs::write(&key_file, &pem).unwrap();
    (okta, pem, key_file)
}

/// The bearer credential of the first System Log request (`SSWS x`, `DPoP x` or `Bearer x`).
async fn first_log_credential(okta: &FakeOkta) -> String {
    eventually(LIMIT, "a System Log request", || {
        !okta.log_requests().is_empty()
    })
    .await;
    let authorization = okta.log_requests()[0].header("authorization").unwrap();
    authorization
        .split_once(' ')
        .map(|(_, credential)| credential.to_owned())
        .unwrap()
}

#[tokio::test]
async fn no_secret_reaches_stdout_or_stderr_even_at_trace_level() {
    let keys = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (okta, pem, key_file) = service_app(keys.path()).await;
    okta.push(log_event(
        "polled-1",
        "user.account.update_profile",
        &chrono::Utc::now().to_rfc3339(),
    ));
    let short_token = "tok-short";
    let tokens = format!("{short_token},{READ_TOKEN}");
    let service = Captured::start(
        data.path(),
        &[
            ("RUST_LOG", "trace"),
            ("OKTA_STREAM_GRPC_TOKENS", tokens.as_str()),
            ("OKTA_STREAM_GRPC_ADMIN_TOKENS", ADMIN_TOKEN),
            ("OKTA_ORG_URL", okta.base.as_str()),
            ("OKTA_CLIENT_ID", "0oaTRACE"),
            ("OKTA_PRIVATE_KEY_FILE", key_file.to_str().unwrap()),
            ("OKTA_POLL_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    // No hook secret configured: one is generated, and start says where, not what.
    let secret_file = data.path().join("hook-secret");
    let hook_secret = std::fs::read_to_string(&secret_file)
        .unwrap()
        .trim()
        .to_owned();
    // The log goes to stderr, read apart from the listening lines on stdout: wait for it.
    let generated = format!("hook secret generated: {}", secret_file.display());
    eventually(LIMIT, "the hook secret's log line", || {
        service.output().contains(&generated)
    })
    .await;
    let printed = run(
        &[
            "hook",
            "secret",
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    assert_eq!(text(&printed.stdout).trim(), hook_secret);

    // Use every secret: a hook delivery, a subscriber with a token, the poller's token.
    let http = service.addr("http");
    let grpc = service.addr("grpc");
    let response = reqwest::Client::new()
        .post(format!("http://{http}/okta/hook"))
        .header("authorization", &hook_secret)
        .json(&delivery(
            "d-trace",
            vec![profile_update("trace-1", "thor@avengers.org", "lastName")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EventStreamClient::new(channel);
    let mut stream = client
        .subscribe(with_token(
            EventFilter {
                start: Some(okta_stream::proto::event_filter::Start::FromOldest(true)),
                ..Default::default()
            },
            Some(READ_TOKEN),
        ))
        .await
        .unwrap()
        .into_inner();
    within(LIMIT, stream.message()).await.unwrap().unwrap();
    client
        .list_quarantined(with_token(
            ListQuarantinedRequest::default(),
            Some(ADMIN_TOKEN),
        ))
        .await
        .unwrap();
    let access_token = first_log_credential(&okta).await;
    let output = service.stop().await;

    assert!(
        output.contains("TRACE") || output.contains("DEBUG"),
        "trace logging is on"
    );
    assert!(
        output.contains("OKTA_STREAM_GRPC_TOKENS") && output.contains("shorter than 16"),
        "a short token is warned about: {output}"
    );
    let mut secrets = vec![
        ("hook secret", hook_secret.clone()),
        ("short gRPC token", short_token.to_owned()),
        ("gRPC token", READ_TOKEN.to_owned()),
        ("admin token", ADMIN_TOKEN.to_owned()),
        ("access token", access_token),
    ];
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        secrets.push(("private key", line.to_owned()));
    }
    for (what, secret) in secrets {
        assert!(
            !output.contains(&secret),
            "the {what} appears in the output"
        );
    }

    // The API token (SSWS) of the other kind of credentials.
    let api_token = "00api-token-that-must-never-appear";
    let okta = FakeOkta::start(FakeAuth::Ssws(api_token.to_owned())).await;
    let data = tempfile::tempdir().unwrap();
    let service = Captured::start(
        data.path(),
        &[
            ("RUST_LOG", "trace"),
            ("OKTA_STREAM_HOOK_SECRETS", SECRET),
            ("OKTA_ORG_URL", okta.base.as_str()),
            ("OKTA_API_TOKEN", api_token),
        ],
    )
    .await;
    assert_eq!(first_log_credential(&okta).await, api_token);
    let output = service.stop().await;
    assert!(
        !output.contains(api_token),
        "the API token appears in the output"
    );
    assert!(
        !output.contains(SECRET),
        "the hook secret appears in the output"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("fresh").join("data");
    // Fresh: the service creates it.
    let service = Captured::start(&data, &[]).await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("journal.redb")), 0o600);
    assert_eq!(mode(&data.join("hook-secret")), 0o600);
    service.stop().await;

    // Opened up by someone: tightened at the next start, with a warning.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("journal.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let service = Captured::start(&data, &[("RUST_LOG", "warn")]).await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("journal.redb")), 0o600);
    let output = service.stop().await;
    assert!(output.contains("mode is now 700"), "{output}");
}

#[tokio::test]
async fn secret_bearing_headers_are_stored_redacted() {
    within(LIMIT, async {
        let app = TestApp::start_with(|config| {
            config.hook.auth_header = http::HeaderName::from_static("x-okta-hook-auth");
        })
        .await;
        let response = app
            .http_client()
            .post(format!("{}/okta/hook", app.http))
            .header("x-okta-hook-auth", SECRET)
            .header("authorization", "Basic dXNlcjpwYXNz")
            .header("cookie", "sid=abc")
            .header("x-api-key", "k-123")
            .header("X-Okta-Signature", "sig-456")
            .header("x-db-password", "pw-789")
            .header("x-session-token", "tok-000")
            .header("x-request-id", "req-1")
            .json(&delivery(
                "d-headers",
                vec![profile_update("headers-1", "thor@avengers.org", "lastName")],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let event = app.journal.get("headers-1").await.unwrap().unwrap();
        let headers = &event.record().unwrap().headers;
        for name in [
            "x-okta-hook-auth",
            "authorization",
            "cookie",
            "x-api-key",
            "x-okta-signature",
            "x-db-password",
            "x-session-token",
        ] {
            assert_eq!(headers[name], "[REDACTED]", "{name}: {headers:?}");
        }
        assert_eq!(headers["x-request-id"], "req-1");
        assert_eq!(headers["content-type"], "application/json");
    })
    .await
}
