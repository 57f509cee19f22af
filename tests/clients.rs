//! The real clients users run, against a real app on loopback: grpcurl (reflection and
//! Subscribe), the generated Python client (`clients/python`) and the TypeScript client over
//! gRPC-Web (`clients/typescript`).
//!
//! The tools come from `scripts/test`; a missing one fails the test with that advice, never a
//! silent skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::app::{TestApp, delivery, profile_update};
use common::within;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(120);

fn clients_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// Fails the test unless `program args` runs: the tool is installed.
async fn require(program: &str, args: &[&str]) {
    let found = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{program} {}` failed: the client tools are missing; run scripts/test, which installs them",
        args.join(" ")
    );
}

/// Runs a command to completion (bounded), returning its output.
async fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    within(LIMIT, command.output()).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// JSON lines of `output`'s stdout.
fn json_lines(output: &Output) -> Vec<Value> {
    text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// Reads `stdout` into `seen` until it contains `needle`.
async fn read_until(stdout: &mut tokio::process::ChildStdout, seen: &mut String, needle: &str) {
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = stdout.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client ended early; it printed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

async fn post(app: &TestApp, uuid: &str, event_type: &str) {
    let mut event = profile_update(uuid, "thor@avengers.org", "lastName");
    event["eventType"] = json!(event_type);
    let response = app
        .post_hook(&delivery(&format!("d-{uuid}"), vec![event]))
        .await;
    assert_eq!(response.status(), 204, "delivery {uuid}");
}

/// An app whose idle streams send a heartbeat every second.
async fn app_with_fast_heartbeats() -> TestApp {
    TestApp::start_with(|config| config.grpc.heartbeat = Duration::from_secs(1)).await
}

#[tokio::test]
async fn grpcurl_lists_and_describes_the_service_and_subscribes_with_a_filter() {
    require("grpcurl", &["-version"]).await;
    let app = app_with_fast_heartbeats().await;
    let addr = app.grpc_addr.to_string();

    let list = run(Command::new("grpcurl").args(["-plaintext", &addr, "list"])).await;
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(
        text(&list.stdout)
            .lines()
            .any(|l| l == "okta.events.v1.EventStream"),
        "{}",
        text(&list.stdout)
    );
    let describe = run(Command::new("grpcurl").args([
        "-plaintext",
        &addr,
        "describe",
        "okta.events.v1.Event",
    ]))
    .await;
    assert!(describe.status.success(), "{}", text(&describe.stderr));
    let described = text(&describe.stdout);
    assert!(described.contains("message Event {"), "{described}");
    assert!(described.contains("uint64 cursor = 1;"), "{described}");
    assert!(
        described.contains(".okta.events.v1.OktaUser okta_user = 18;"),
        "{described}"
    );

    // ListQuarantined is reflected too, and validates its limit.
    let quarantine = run(Command::new("grpcurl").args([
        "-plaintext",
        "-d",
        r#"{"limit": 5000}"#,
        &addr,
        "okta.events.v1.EventStream/ListQuarantined",
    ]))
    .await;
    assert!(!quarantine.status.success());
    let refused = text(&quarantine.stderr);
    assert!(refused.contains("InvalidArgument"), "{refused}");
    assert!(refused.contains("limit"), "{refused}");

    // Subscribe live; the first heartbeat says the stream is open, then post.
    let mut grpcurl = Command::new("grpcurl")
        .args([
            "-plaintext",
            "-max-time",
            "60",
            "-d",
            r#"{"event_types":["user.account."]}"#,
            &addr,
            "okta.events.v1.EventStream/Subscribe",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = grpcurl.stdout.take().unwrap();
    let mut seen = String::new();
    within(LIMIT, read_until(&mut stdout, &mut seen, "\"heartbeat\"")).await;
    post(&app, "grpcurl-session", "user.session.start").await;
    post(&app, "grpcurl-1", "user.account.update_profile").await;
    post(&app, "grpcurl-2", "user.account.update_profile").await;
    within(LIMIT, read_until(&mut stdout, &mut seen, "\"grpcurl-2\"")).await;
    grpcurl.kill().await.unwrap();
    assert!(seen.contains("\"uuid\": \"grpcurl-1\""), "{seen}");
    assert!(
        seen.contains("\"eventType\": \"user.account.update_profile\""),
        "{seen}"
    );
    assert!(
        !seen.contains("grpcurl-session"),
        "the filter drops other event types: {seen}"
    );
}

#[tokio::test]
async fn the_generated_python_client_subscribes_and_resumes_after_a_cursor() {
    require(
        "python3",
        &["-c", "import grpc, grpc_tools, google.protobuf"],
    )
    .await;
    let stubs = tempfile::tempdir().unwrap();
    let generated = run(Command::new("bash")
        .arg(clients_dir("python").join("generate.sh"))
        .arg(stubs.path()))
    .await;
    assert!(generated.status.success(), "{}", text(&generated.stderr));

    let app = app_with_fast_heartbeats().await;
    for i in 1..=3 {
        post(&app, &format!("py-{i}"), "user.account.update_profile").await;
    }
    let example = clients_dir("python").join("example.py");
    let target = app.grpc_addr.to_string();
    let python = |extra: &[&str]| {
        let mut command = Command::new("python3");
        command
            .arg(&example)
            .args([
                "--stubs",
                stubs.path().to_str().unwrap(),
                "--target",
                &target,
            ])
            .args(["--event-type", "user.account."])
            .args(extra);
        command
    };

    let first = run(&mut python(&["--from-oldest", "--max-events", "2"])).await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    let events = json_lines(&first);
    let uuids: Vec<&str> = events.iter().map(|e| e["uuid"].as_str().unwrap()).collect();
    assert_eq!(uuids, ["py-1", "py-2"]);
    let last_cursor = events[1]["cursor"].as_str().unwrap().to_owned();

    // While the client is away, more events arrive; resuming after its last cursor gets
    // exactly what it missed.
    post(&app, "py-4", "user.account.update_profile").await;
    post(&app, "py-5", "user.account.update_profile").await;
    let second = run(&mut python(&["--after", &last_cursor, "--until-caught-up"])).await;
    assert!(second.status.success(), "{}", text(&second.stderr));
    let uuids: Vec<String> = json_lines(&second)
        .iter()
        .map(|e| e["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(uuids, ["py-3", "py-4", "py-5"]);

    let refused = run(&mut python(&["--after", "999"])).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("OUT_OF_RANGE"),
        "{}",
        text(&refused.stderr)
    );
}

#[tokio::test]
async fn the_typescript_client_receives_events_over_grpc_web() {
    require("node", &["--version"]).await;
    require("npm", &["--version"]).await;
    require("buf", &["--version"]).await;
    let dir = clients_dir("typescript");
    if !dir.join("node_modules").is_dir() {
        let installed = run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir))
        .await;
        assert!(
            installed.status.success(),
            "npm ci: {}",
            text(&installed.stderr)
        );
    }
    let built = run(Command::new("npm").args(["run", "build"]).current_dir(&dir)).await;
    assert!(
        built.status.success(),
        "npm run build: {}{}",
        text(&built.stdout),
        text(&built.stderr)
    );

    let app = TestApp::start().await;
    post(&app, "ts-1", "user.account.update_profile").await;
    let mut example = Command::new("node");
    example
        .arg(dir.join("dist/example.js"))
        .args(["--url", &format!("http://{}", app.grpc_addr)])
        .args([
            "--event-type",
            "user.account.",
            "--from-oldest",
            "--max-events",
            "2",
        ])
        .current_dir(&dir);
    let running = tokio::spawn(async move { run(&mut example).await });
    // One event replayed, one live.
    tokio::time::sleep(Duration::from_millis(500)).await;
    post(&app, "ts-skip", "user.session.start").await;
    post(&app, "ts-2", "user.account.update_profile").await;
    let output = within(LIMIT, running).await.unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let events = json_lines(&output);
    let uuids: Vec<&str> = events.iter().map(|e| e["uuid"].as_str().unwrap()).collect();
    assert_eq!(uuids, ["ts-1", "ts-2"]);
    assert_eq!(events[0]["cursor"], "1");
    assert_eq!(events[1]["ingestSource"], "INGEST_SOURCE_HOOK");
}
