//! The `okta-stream` binary as users run it: `tail`, `get`, `quarantine list`, `health`,
//! `hook register|verify`, configuration errors and the `--config` file, and the README's
//! configuration table.

mod common;

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::app::{SECRET, TestApp, delivery, profile_update};
use common::binary::Service;
use common::fake_okta::{FakeAuth, FakeOkta, PublicKey};
use common::within;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_okta-stream");
const LIMIT: Duration = Duration::from_secs(60);

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

/// Runs `okta-stream ARGS` to completion.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    within(LIMIT, command(args, env).output()).await.unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `okta-stream tail` and its output lines.
struct Tail {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Tail {
    fn start(args: &[&str]) -> Tail {
        let mut child = command(args, &[]).stderr(Stdio::inherit()).spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Tail {
            _child: child,
            lines,
        }
    }

    /// The next printed event, as JSON.
    async fn next_event(&mut self) -> Value {
        let line = within(LIMIT, self.lines.next_line())
            .await
            .unwrap()
            .expect("tail is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"))
    }
}

async fn post(http: SocketAddr, uuid: &str) {
    let response = reqwest::Client::new()
        .post(format!("http://{http}/okta/hook"))
        .header("authorization", SECRET)
        .json(&delivery(
            &format!("d-{uuid}"),
            vec![profile_update(uuid, "thor@avengers.org", "lastName")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "delivery {uuid}");
}

/// Waits until `grpc` accepts connections again.
async fn wait_for_grpc(addr: SocketAddr) {
    within(LIMIT, async {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn tail_prints_events_as_json_lines_and_resumes_after_a_server_restart_without_gap_or_duplicate()
 {
    let data = tempfile::tempdir().unwrap();
    let grpc_port = free_port().to_string();
    let grpc_addr = format!("127.0.0.1:{grpc_port}");
    let env = [
        ("OKTA_STREAM_GRPC_ADDR", grpc_addr.as_str()),
        ("OKTA_STREAM_HOOK_SECRETS", SECRET),
    ];
    let service = Service::start(data.path(), &env).await;
    let grpc_url = format!("http://{grpc_addr}");
    let mut tail = Tail::start(&[
        "tail",
        "--grpc-url",
        &grpc_url,
        "--from-oldest",
        "--event-type",
        "user.account.",
    ]);
    post(service.http, "before-1").await;
    post(service.http, "before-2").await;
    let first = tail.next_event().await;
    let second = tail.next_event().await;
    assert_eq!(first["uuid"], "before-1");
    assert_eq!(
        first["cursor"], "1",
        "canonical proto3 JSON: uint64 as a string"
    );
    assert_eq!(first["eventType"], "user.account.update_profile");
    assert_eq!(first["ingestSource"], "INGEST_SOURCE_HOOK");
    assert_eq!(second["uuid"], "before-2");

    // The server dies; tail keeps retrying. A new server on the same data dir and port takes
    // one event before tail can have reconnected and one after.
    service.kill().await;
    let service = Service::start(data.path(), &env).await;
    post(service.http, "after-1").await;
    wait_for_grpc(grpc_addr.parse().unwrap()).await;
    let third = tail.next_event().await;
    post(service.http, "after-2").await;
    let fourth = tail.next_event().await;
    assert_eq!(third["uuid"], "after-1", "no gap after the restart");
    assert_eq!(third["cursor"], "3");
    assert_eq!(fourth["uuid"], "after-2", "no duplicate after the restart");
    assert_eq!(fourth["cursor"], "4");

    // A graceful shutdown ends the stream with UNAVAILABLE; tail resumes the same way.
    let mut service = service;
    let pid = service.child.id().unwrap().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(signalled.success());
    let status = within(LIMIT, service.child.wait()).await.unwrap();
    assert!(status.success(), "a graceful shutdown exits 0: {status}");
    let service = Service::start(data.path(), &env).await;
    post(service.http, "after-3").await;
    let fifth = tail.next_event().await;
    assert_eq!(fifth["uuid"], "after-3");
    assert_eq!(fifth["cursor"], "5");
}

#[tokio::test]
async fn tail_exits_with_the_status_when_the_server_refuses_the_filter() {
    let app = TestApp::start().await;
    let grpc_url = format!("http://{}", app.grpc_addr);
    let output = run(&["tail", "--grpc-url", &grpc_url, "--after", "99"], &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("OUT_OF_RANGE"),
        "{}",
        stderr(&output)
    );

    let tokens = TestApp::start_with(|config| {
        config.grpc.tokens = vec![okta_stream::secret::Secret::new("right")];
    })
    .await;
    let grpc_url = format!("http://{}", tokens.grpc_addr);
    let output = run(
        &["tail", "--grpc-url", &grpc_url],
        &[("OKTA_STREAM_GRPC_TOKEN", "s3cr3t-wrong-token")],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("UNAUTHENTICATED"),
        "{}",
        stderr(&output)
    );
    assert!(
        !stderr(&output).contains("s3cr3t-wrong-token"),
        "the token is never printed"
    );
}

#[tokio::test]
async fn tail_with_max_events_and_a_token_prints_exactly_that_many() {
    let app = TestApp::start_with(|config| {
        config.grpc.tokens = vec![okta_stream::secret::Secret::new("t0ken")];
    })
    .await;
    common::app::post_many(&app, "m", 3).await;
    let grpc_url = format!("http://{}", app.grpc_addr);
    let output = run(
        &[
            "tail",
            "--grpc-url",
            &grpc_url,
            "--from-oldest",
            "--max-events",
            "2",
        ],
        &[("OKTA_STREAM_GRPC_TOKEN", "t0ken")],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let uuids: Vec<String> = stdout(&output)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["uuid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(uuids, ["m-0", "m-1"]);
}

#[tokio::test]
async fn tail_output_text_prints_one_readable_line_per_event_and_json_stays_the_default_off_a_terminal()
 {
    let app = TestApp::start().await;
    common::app::post_many(&app, "r", 2).await;
    let grpc_url = format!("http://{}", app.grpc_addr);
    let tail = |output: Option<&'static str>| {
        let mut args = vec![
            "tail".to_owned(),
            "--grpc-url".to_owned(),
            grpc_url.clone(),
            "--from-oldest".to_owned(),
            "--max-events".to_owned(),
            "2".to_owned(),
        ];
        if let Some(output) = output {
            args.extend(["--output".to_owned(), output.to_owned()]);
        }
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &[]).await
        }
    };

    let text = tail(Some("text")).await;
    assert!(text.status.success(), "{}", stderr(&text));
    let lines: Vec<String> = stdout(&text).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(
            line,
            "2026-11-22 18:07:13.125Z  user.account.update_profile  \
             admin@example.com → thor@avengers.org  lastName  SUCCESS"
        );
    }

    // stdout is a pipe here: JSON lines, as scripts expect, with or without `--output json`.
    for output in [None, Some("json")] {
        let json = tail(output).await;
        assert!(json.status.success(), "{}", stderr(&json));
        let uuids: Vec<String> = stdout(&json)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["uuid"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(uuids, ["r-0", "r-1"], "{output:?}");
    }

    let wrong = tail(Some("yaml")).await;
    assert_eq!(wrong.status.code(), Some(64));
    assert!(stderr(&wrong).contains("--output"), "{}", stderr(&wrong));
}

#[tokio::test]
async fn get_prints_the_event_and_a_missing_uuid_exits_1() {
    let app = TestApp::start().await;
    common::app::post_many(&app, "g", 2).await;
    let grpc_url = format!("http://{}", app.grpc_addr);
    let env = [("OKTA_STREAM_GRPC_URL", grpc_url.as_str())];
    let output = run(&["get", "g-1"], &env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let event: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(event["uuid"], "g-1");
    assert_eq!(event["cursor"], "2");
    assert_eq!(event["eventType"], "user.account.update_profile");

    let output = run(&["get", "nope"], &env).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty());
    assert!(stderr(&output).contains("NOT_FOUND"), "{}", stderr(&output));
    assert!(stderr(&output).contains("nope"), "{}", stderr(&output));
}

#[tokio::test]
async fn quarantine_list_prints_events_that_could_not_be_stored() {
    let app = TestApp::start().await;
    let response = app
        .post_hook(&delivery(
            "d-broken",
            vec![json!({"eventType": "user.account.update_profile", "displayMessage": "no uuid"})],
        ))
        .await;
    assert_eq!(response.status(), 204);
    let grpc_url = format!("http://{}", app.grpc_addr);
    let output = run(&["quarantine", "list", "--grpc-url", &grpc_url], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let entries: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 1, "{}", stdout(&output));
    assert!(
        entries[0]["reason"].as_str().unwrap().contains("uuid"),
        "{}",
        entries[0]
    );
    assert!(entries[0]["raw"].as_str().unwrap().contains("no uuid"));
    assert!(entries[0]["origin"].as_str().unwrap().contains("d-broken"));
    assert!(!entries[0]["received"].as_str().unwrap().is_empty());

    let output = run(&["quarantine", "list", "--limit", "0"], &[]).await;
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
}

#[tokio::test]
async fn health_exits_0_when_ready_and_1_when_not() {
    let app = TestApp::start().await;
    let url = format!("{}/readyz", app.admin);
    let output = run(&["health", "--url", &url], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "ready");

    let down = format!("http://127.0.0.1:{}/readyz", free_port());
    let output = run(&["health"], &[("OKTA_STREAM_HEALTH_URL", down.as_str())]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("not ready"), "{}", stderr(&output));
}

#[tokio::test]
async fn hook_register_and_verify_with_an_api_token() {
    let app = TestApp::start().await;
    let okta = FakeOkta::start(FakeAuth::Ssws("00api-token".to_owned())).await;
    let hook_url = format!("{}/okta/hook", app.http);
    let env = [
        ("OKTA_ORG_URL", okta.base.as_str()),
        ("OKTA_API_TOKEN", "00api-token"),
        ("OKTA_STREAM_HOOK_SECRETS", "test-hook-secret,next-secret"),
    ];
    let output = run(
        &[
            "hook",
            "register",
            "--url",
            &hook_url,
            "--name",
            "profile-updates",
            "--event-type",
            "user.account.update_profile",
            "--event-type",
            "user.lifecycle.create",
        ],
        &env,
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !stdout(&output).contains(SECRET),
        "the secret is never printed"
    );
    assert!(
        !stderr(&output).contains(SECRET),
        "the secret is never printed"
    );
    let created: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["verificationStatus"], "UNVERIFIED");

    let requests = okta.hook_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("authorization").unwrap(),
        "SSWS 00api-token"
    );
    let sent = requests[0].body.clone().unwrap();
    assert_eq!(sent["name"], "profile-updates");
    assert_eq!(
        sent["events"],
        json!({"type": "EVENT_TYPE", "items": ["user.account.update_profile", "user.lifecycle.create"]})
    );
    assert_eq!(sent["channel"]["type"], "HTTP");
    assert_eq!(sent["channel"]["version"], "1.0.0");
    assert_eq!(sent["channel"]["config"]["uri"], hook_url.as_str());
    assert_eq!(
        sent["channel"]["config"]["authScheme"],
        json!({"type": "HEADER", "key": "Authorization", "value": SECRET}),
        "the first configured secret, in the configured header"
    );

    // Okta calls the hook with a challenge; the running service answers it.
    let output = run(&["hook", "verify", &id], &env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let verified: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(verified["verificationStatus"], "VERIFIED");
    assert_eq!(okta.hooks()[0]["verificationStatus"], "VERIFIED");

    // A wrong token is Okta's refusal, exit 1; nothing is created.
    let output = run(
        &["hook", "register", "--url", &hook_url],
        &[env[0], ("OKTA_API_TOKEN", "wrong"), env[2]],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("HTTP 401"), "{}", stderr(&output));
    assert_eq!(okta.hooks().len(), 1);
}

#[tokio::test]
async fn hook_register_with_a_dpop_service_app_asks_for_the_event_hooks_scope() {
    use p256::pkcs8::EncodePrivateKey as _;
    let app = TestApp::start().await;
    let secret = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
    let okta = FakeOkta::start(FakeAuth::ServiceApp {
        client_id: "0oaCLI".to_owned(),
        public_key: PublicKey::Ec(secret.public_key()),
        dpop: true,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.pem");
    std::fs::write(
        &key_file,
        secret
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    // No OKTA_STREAM_HOOK_SECRETS: the secret the service generated in its data dir is used.
    std::fs::write(dir.path().join("hook-secret"), "generated-secret\n").unwrap();
    let hook_url = format!("{}/okta/hook", app.http);
    let output = run(
        &[
            "hook",
            "register",
            "--url",
            &hook_url,
            "--hook-auth-header",
            "X-Okta-Secret",
        ],
        &[
            ("OKTA_ORG_URL", okta.base.as_str()),
            ("OKTA_CLIENT_ID", "0oaCLI"),
            ("OKTA_PRIVATE_KEY_FILE", key_file.to_str().unwrap()),
            ("OKTA_STREAM_DATA_DIR", dir.path().to_str().unwrap()),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let tokens = okta.token_requests();
    assert_eq!(
        tokens.last().unwrap().form.get("scope").map(String::as_str),
        Some("okta.eventHooks.manage")
    );
    let created = okta
        .hook_requests()
        .into_iter()
        .find(|r| r.status == 200)
        .unwrap();
    assert!(
        created
            .header("authorization")
            .unwrap()
            .starts_with("DPoP ")
    );
    assert_eq!(
        created.body.unwrap()["channel"]["config"]["authScheme"],
        json!({"type": "HEADER", "key": "X-Okta-Secret", "value": "generated-secret"})
    );
}

#[tokio::test]
async fn hook_commands_name_the_missing_setting_and_exit_64() {
    let output = run(
        &["hook", "register", "--url", "https://x.example/okta/hook"],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("OKTA_ORG_URL"),
        "{}",
        stderr(&output)
    );
    // An empty variable counts as unset, as for `serve`.
    let output = run(&["hook", "verify", "who1"], &[("OKTA_ORG_URL", "")]).await;
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("OKTA_ORG_URL (--okta-org-url): is required"),
        "{}",
        stderr(&output)
    );
    let output = run(
        &["hook", "verify", "who1"],
        &[
            ("OKTA_ORG_URL", "https://acme.okta.com"),
            ("OKTA_CLIENT_ID", "0oa1"),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("OKTA_PRIVATE_KEY_FILE"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn a_wrong_setting_exits_64_naming_it() {
    let output = run(&["serve"], &[("OKTA_STREAM_GRPC_ADDR", "nope")]).await;
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("OKTA_STREAM_GRPC_ADDR"),
        "{}",
        stderr(&output)
    );

    let output = run(&["tail", "--grpc-url", "ftp://127.0.0.1:1"], &[]).await;
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("OKTA_STREAM_GRPC_URL"),
        "{}",
        stderr(&output)
    );

    let output = run(&["tail", "--min-severity", "loud"], &[]).await;
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("--min-severity"),
        "{}",
        stderr(&output)
    );

    let output = run(&["no-such-command"], &[]).await;
    assert_eq!(output.status.code(), Some(64));
}

#[tokio::test]
async fn serve_help_lists_every_setting_with_its_variable_and_default_but_no_value() {
    let output = run(
        &["serve", "--help"],
        &[("OKTA_STREAM_HOOK_SECRETS", "hunter2-secret")],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let help = stdout(&output);
    for setting in okta_stream::config::settings() {
        assert!(help.contains(&format!("--{}", setting.flag)), "{help}");
        assert!(help.contains(&format!("[env: {}]", setting.env)), "{help}");
        if let Some(default) = &setting.default {
            assert!(help.contains(&format!("[default: {default}]")), "{help}");
        }
    }
    assert!(!help.contains("hunter2-secret"), "{help}");
}

#[tokio::test]
async fn an_okta_setting_the_poller_cannot_use_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let output = run(
        &["serve", "--data-dir", data],
        &[
            ("OKTA_ORG_URL", "http://acme.okta.com"),
            ("OKTA_API_TOKEN", "00secret-token"),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("OKTA_ORG_URL (--okta-org-url)"),
        "{}",
        stderr(&output)
    );
    assert!(!stderr(&output).contains("00secret-token"));

    let output = run(
        &["serve", "--data-dir", data],
        &[
            ("OKTA_ORG_URL", "https://acme.okta.com"),
            ("OKTA_CLIENT_ID", "0oa1"),
            ("OKTA_PRIVATE_KEY_FILE", "/nonexistent/key.pem"),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("OKTA_PRIVATE_KEY_FILE (--okta-private-key-file)"),
        "{}",
        stderr(&output)
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing is set up before the settings are checked"
    );
}

#[tokio::test]
async fn the_config_file_works_and_flags_beat_env_beat_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("okta-stream.toml");
    std::fs::write(&file, "grpc_addr = \"from-file\"\n").unwrap();
    let path = file.to_str().unwrap();
    let env = [("OKTA_STREAM_GRPC_ADDR", "from-env")];

    let output = run(
        &["serve", "--config", path, "--grpc-addr", "from-flag"],
        &env,
    )
    .await;
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("`from-flag`"),
        "{}",
        stderr(&output)
    );
    let output = run(&["serve", "--config", path], &env).await;
    assert!(
        stderr(&output).contains("`from-env`"),
        "{}",
        stderr(&output)
    );
    let output = run(&["serve", "--config", path], &[]).await;
    assert!(
        stderr(&output).contains("`from-file`"),
        "{}",
        stderr(&output)
    );

    // A valid file alone configures a running service.
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        format!(
            "http_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\nadmin_addr = \"127.0.0.1:0\"\ndata_dir = {:?}\nhook_secrets = [\"a\", \"b\"]\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = command(&["serve", "--config", path], &[("RUST_LOG", "warn")])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    within(LIMIT, async {
        while seen.len() < 3 {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("serve printed its addresses");
            if line.starts_with("listening ") {
                seen.push(line);
            }
        }
    })
    .await;
    assert!(seen.iter().all(|l| l.contains("127.0.0.1:")), "{seen:?}");
    assert!(data.is_dir(), "the data dir from the file is used");
    assert!(
        !data.join("hook-secret").exists(),
        "the file's hook secrets are used"
    );
    child.kill().await.unwrap();

    let output = run(
        &[
            "serve",
            "--config",
            dir.path().join("missing.toml").to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn the_readme_configuration_table_lists_every_setting() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md exists");
    let table_rows: Vec<&str> = readme.lines().filter(|l| l.starts_with('|')).collect();
    for setting in okta_stream::config::settings() {
        let env = format!("`{}`", setting.env);
        let flag = format!("`--{}`", setting.flag);
        let row = table_rows
            .iter()
            .find(|row| row.contains(&env) && row.contains(&flag))
            .unwrap_or_else(|| {
                panic!(
                    "README.md's configuration table has no row for {} ({flag})",
                    setting.env
                )
            });
        // | flag | variable | default | meaning |
        let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
        let default = setting
            .default
            .as_ref()
            .map_or_else(|| "—".to_owned(), |d| format!("`{d}`"));
        assert_eq!(
            cells.get(2),
            Some(&default.as_str()),
            "default of {flag} in {row}"
        );
        assert!(
            cells
                .get(3)
                .is_some_and(|meaning| meaning.starts_with(&setting.help)),
            "meaning of {flag} in {row} is not its help: {}",
            setting.help
        );
        assert_eq!(
            row.contains("(secret: never printed)"),
            setting.secret,
            "secret marking of {flag} in {row}"
        );
    }
}

#[tokio::test]
async fn tail_and_get_speak_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let app = TestApp::start_with(|config| {
        config.grpc.tls_cert = Some(cert.clone());
        config.grpc.tls_key = Some(key.clone());
    })
    .await;
    common::app::post_many(&app, "tls", 1).await;
    let grpc_url = format!("https://{}", app.grpc_addr);
    let env = [
        ("OKTA_STREAM_GRPC_URL", grpc_url.as_str()),
        ("OKTA_STREAM_GRPC_CA_FILE", cert.to_str().unwrap()),
    ];

    let output = run(&["get", "tls-0"], &env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let event: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(event["uuid"], "tls-0");
    let output = run(&["tail", "--from-oldest", "--max-events", "1"], &env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("\"tls-0\""), "{}", stdout(&output));

    // Without the CA the certificate is not trusted: a clear failure, not a hang.
    let output = run(&["get", "tls-0"], &env[..1]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot reach"),
        "{}",
        stderr(&output)
    );
}
