//! The browser console as HTTP sees it: the page and its files on the gRPC listener, beside
//! gRPC, gRPC-Web and health, which keep working; `console = false` turns the page off.
//! The page itself is tested in a real browser by `tests/browser/test_console.py`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::app::TestApp;
use common::within;

const LIMIT: Duration = Duration::from_secs(30);

/// `grpc.health.v1` over HTTP/2 on `addr`, as gRPC clients call it.
async fn grpc_health_serving(addr: SocketAddr) -> bool {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "okta.events.v1.EventStream".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
}

/// The same health check as a browser sends it: gRPC-Web over HTTP/1.1. Returns the HTTP
/// status and the `grpc-status` trailer found in the body.
async fn grpc_web_health(addr: SocketAddr) -> (u16, String) {
    // One uncompressed frame holding an empty-service HealthCheckRequest (zero bytes).
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&body).to_lowercase();
    let grpc_status = text
        .split("grpc-status:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("")
        .to_owned();
    (status, grpc_status)
}

#[tokio::test]
async fn the_page_is_served_at_slash_on_the_grpc_listener_and_grpc_keeps_working() {
    within(LIMIT, async {
        let app = TestApp::start().await;
        let base = format!("http://{}", app.grpc_addr);
        let client = reqwest::Client::new();

        let page = client.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert!(
            page.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("connect-src 'self'"),
            "the page may only call its own origin"
        );
        let html = page.text().await.unwrap();
        assert!(
            html.contains("<title>okta-stream console</title>"),
            "{html}"
        );

        for (path, kind) in [
            ("/console/app.js", "text/javascript"),
            ("/console/app.css", "text/css"),
            ("/favicon.svg", "image/svg+xml"),
        ] {
            let file = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(file.status(), 200, "{path}");
            let content_type = file.headers()["content-type"].to_str().unwrap().to_owned();
            assert!(content_type.starts_with(kind), "{path}: {content_type}");
            assert!(!file.bytes().await.unwrap().is_empty(), "{path}");
        }
        // The script speaks gRPC-Web (binary protobuf) to its own origin.
        let script = client
            .get(format!("{base}/console/app.js"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(script.contains("application/grpc-web+proto"));

        assert!(grpc_health_serving(app.grpc_addr).await, "gRPC over HTTP/2");
        assert_eq!(
            grpc_web_health(app.grpc_addr).await,
            (200, "0".to_owned()),
            "gRPC-Web over HTTP/1.1"
        );
    })
    .await;
}

#[tokio::test]
async fn with_the_console_off_slash_is_not_served_and_grpc_is_unchanged() {
    within(LIMIT, async {
        let app = TestApp::start_with(|config| config.console = false).await;
        let base = format!("http://{}", app.grpc_addr);
        let page = reqwest::get(format!("{base}/")).await.unwrap();
        assert_ne!(page.status(), 200);
        assert!(!page.text().await.unwrap().contains("okta-stream console"));
        let script = reqwest::get(format!("{base}/console/app.js"))
            .await
            .unwrap();
        assert_ne!(script.status(), 200);

        assert!(grpc_health_serving(app.grpc_addr).await);
        assert_eq!(grpc_web_health(app.grpc_addr).await, (200, "0".to_owned()));
    })
    .await;
}
