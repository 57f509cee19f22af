//! The three listeners against bad clients: deadlines for silent, slow and idle connections,
//! the connection cap, thousands of idle connections held while real work goes on, the admin
//! listener's routes, and gRPC over mutual TLS with certificates rotated under an open stream.

mod common;

use std::path::Path;
use std::time::Duration;

use common::app::{SECRET, TestApp, WAIT, delivery, post_many, profile_update};
use common::binary::Service;
use common::within;
use okta_stream::config::Config;
use okta_stream::grpc::SubscribeResponse;
use okta_stream::proto::event_stream_client::EventStreamClient;
use okta_stream::proto::{self, EventFilter, event_filter::Start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The value of one metric sample on `/metrics` (0 if absent).
async fn metric(app: &TestApp, sample: &str) -> f64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `sample` on `/metrics` reaches `at_least`.
async fn metric_reaches(app: &TestApp, sample: &str, at_least: f64) {
    let deadline = Instant::now() + WAIT;
    while metric(app, sample).await < at_least {
        if Instant::now() >= deadline {
            panic!("{sample} never reached {at_least}: {}", app.metrics().await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until the server closes the connection; returns what it sent and how long it took.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

async fn next_event(stream: &mut Streaming<SubscribeResponse>) -> proto::Event {
    loop {
        let message = stream
            .message()
            .await
            .expect("stream ok")
            .expect("stream open");
        if let Some(event) = message.decode_event() {
            return event.unwrap();
        }
    }
}

fn short_deadlines(config: &mut Config) {
    config.listeners.header_read_timeout = Duration::from_secs(1);
    config.listeners.body_read_timeout = Duration::from_secs(1);
    config.listeners.idle_timeout = Duration::from_secs(1);
}

#[tokio::test]
async fn silent_and_slow_connections_are_closed_when_their_deadline_passes() {
    within(WAIT, async {
        let app = TestApp::start_with(short_deadlines).await;

        // Sends nothing at all, on each listener.
        for target in [addr(&app.http), addr(&app.admin), &app.grpc_addr.to_string()] {
            let mut silent = TcpStream::connect(target).await.unwrap();
            let (_, waited) = read_until_closed(&mut silent).await;
            assert!(waited < Duration::from_secs(3), "{target}: {waited:?}");
        }

        // Never completes its request headers.
        let mut slow_headers = TcpStream::connect(addr(&app.http)).await.unwrap();
        slow_headers
            .write_all(b"POST /okta/hook HTTP/1.1\r\nHost: x\r\nContent-Type: applic")
            .await
            .unwrap();
        let (_, waited) = read_until_closed(&mut slow_headers).await;
        assert!(waited < Duration::from_secs(3), "{waited:?}");

        // Never completes its HTTP/2 preface.
        let mut slow_preface = TcpStream::connect(app.grpc_addr).await.unwrap();
        slow_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let (_, waited) = read_until_closed(&mut slow_preface).await;
        assert!(waited < Duration::from_secs(3), "{waited:?}");

        // Sends its headers, then only part of its body: 408 naming the body, then closed.
        let mut slow_body = TcpStream::connect(addr(&app.http)).await.unwrap();
        let head = format!(
            "POST /okta/hook HTTP/1.1\r\nHost: x\r\nAuthorization: {SECRET}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"eventType\""
        );
        slow_body.write_all(head.as_bytes()).await.unwrap();
        let (answer, waited) = read_until_closed(&mut slow_body).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request body was not received within"), "{answer}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        assert_eq!(app.head().await, 0, "nothing was stored");

        assert!(
            metric(&app, "okta_stream_listener_connections_closed_total{listener=\"hook\",reason=\"header_timeout\"}").await >= 2.0
        );
        assert_eq!(
            metric(&app, "okta_stream_listener_connections_closed_total{listener=\"hook\",reason=\"body_timeout\"}").await,
            1.0
        );
        assert!(
            metric(&app, "okta_stream_listener_connections_closed_total{listener=\"grpc\",reason=\"header_timeout\"}").await >= 2.0
        );
    })
    .await
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_an_open_stream_is_not_idle() {
    within(WAIT, async {
        let app = TestApp::start_with(|config| {
            config.listeners.header_read_timeout = Duration::from_secs(5);
            config.listeners.idle_timeout = Duration::from_millis(500);
        })
        .await;

        // One request, then nothing: closed after the idle timeout, well before the header
        // read timeout.
        let mut idle = TcpStream::connect(addr(&app.admin)).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, waited) = read_until_closed(&mut idle).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        assert!(
            metric(&app, "okta_stream_listener_connections_closed_total{listener=\"admin\",reason=\"idle_timeout\"}").await >= 1.0
        );

        // A Subscribe stream open for several idle timeouts still gets the next event.
        let mut stream = app
            .client()
            .await
            .subscribe(EventFilter::default())
            .await
            .unwrap()
            .into_inner();
        tokio::time::sleep(Duration::from_secs(2)).await;
        post_many(&app, "after-idle", 1).await;
        assert_eq!(next_event(&mut stream).await.uuid, "after-idle-0");
    })
    .await
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_and_counted() {
    within(WAIT, async {
        let app = TestApp::start_with(|config| config.listeners.max_connections = 3).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(addr(&app.http)).await.unwrap());
        }
        metric_reaches(
            &app,
            "okta_stream_listener_connections_open{listener=\"hook\"}",
            3.0,
        )
        .await;

        let mut refused = TcpStream::connect(addr(&app.http)).await.unwrap();
        let (answer, waited) = read_until_closed(&mut refused).await;
        assert!(answer.is_empty(), "{answer}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert!(
            metric(
                &app,
                "okta_stream_listener_connections_refused_total{listener=\"hook\"}"
            )
            .await
                >= 1.0
        );

        // Other listeners have their own cap; once the held connections go, the hook serves.
        assert_eq!(
            metric(
                &app,
                "okta_stream_listener_connections_refused_total{listener=\"admin\"}"
            )
            .await,
            0.0
        );
        drop(held);
        metric_reaches(
            &app,
            "okta_stream_listener_connections_open{listener=\"hook\"}",
            0.0,
        )
        .await;
        let deadline = Instant::now() + WAIT;
        loop {
            let body = delivery(
                "d-cap",
                vec![profile_update("cap-1", "thor@avengers.org", "x")],
            );
            let sent = app
                .http_client()
                .post(format!("{}/okta/hook", app.http))
                .header("authorization", SECRET)
                .json(&body)
                .send()
                .await;
            if sent.is_ok_and(|r| r.status() == 204) {
                break;
            }
            assert!(Instant::now() < deadline, "the hook never served again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_delivery_is_acknowledged_and_a_subscribe_opens_while_5000_idle_connections_are_held() {
    within(Duration::from_secs(60), async {
        let app = TestApp::start_with(|config| {
            // Long enough that none of them is closed while the test runs.
            config.listeners.header_read_timeout = Duration::from_secs(120);
        })
        .await;
        let mut held = Vec::with_capacity(5000);
        for i in 0..5000 {
            let target = if i % 2 == 0 {
                addr(&app.http).to_owned()
            } else {
                app.grpc_addr.to_string()
            };
            let mut stream = TcpStream::connect(target).await.unwrap();
            if i % 4 < 2 {
                // Half of them slow: a request head that never ends.
                let _ = stream.write_all(b"POST /okta/hook HTTP/1.1\r\nHost:").await;
            }
            held.push(stream);
        }
        metric_reaches(
            &app,
            "okta_stream_listener_connections_open{listener=\"hook\"}",
            2500.0,
        )
        .await;
        metric_reaches(
            &app,
            "okta_stream_listener_connections_open{listener=\"grpc\"}",
            2500.0,
        )
        .await;

        let mut stream = app
            .client()
            .await
            .subscribe(EventFilter {
                start: Some(Start::FromOldest(true)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let started = Instant::now();
        let response = app
            .post_hook(&delivery(
                "d-busy",
                vec![profile_update("busy-1", "thor@avengers.org", "x")],
            ))
            .await;
        assert_eq!(response.status(), 204);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(next_event(&mut stream).await.uuid, "busy-1");
        drop(held);
    })
    .await
}

#[tokio::test]
async fn the_hook_listener_serves_the_hook_only_and_the_admin_listener_health_and_metrics() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let get = |url: String| {
            let client = app.http_client().clone();
            async move {
                let response = client.get(url).send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            }
        };
        for path in ["/metrics", "/healthz", "/readyz", "/"] {
            let (status, body) = get(format!("{}{path}", app.http)).await;
            assert_eq!(status, 404, "{path}");
            assert!(body.contains("POST /okta/hook only"), "{path}: {body}");
        }
        let (status, body) = get(format!("{}/metrics", app.admin)).await;
        assert_eq!(status, 200);
        assert!(
            body.contains("listener_connections_accepted_total"),
            "{body}"
        );
        assert_eq!(get(format!("{}/healthz", app.admin)).await.0, 200);
        assert_eq!(get(format!("{}/readyz", app.admin)).await.0, 200);
        let (status, body) = get(format!("{}/okta/hook", app.admin)).await;
        assert_eq!(status, 404);
        assert!(body.contains("/metrics, /healthz and /readyz"), "{body}");
    })
    .await
}

#[tokio::test]
async fn the_binary_prints_and_serves_its_admin_address() {
    within(WAIT, async {
        let data = tempfile::tempdir().unwrap();
        let service = Service::start(data.path(), &[("OKTA_STREAM_HOOK_SECRETS", SECRET)]).await;
        let client = reqwest::Client::new();
        // Ready once the app runs (the listening lines come just before).
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = client
                .get(format!("http://{}/readyz", service.admin))
                .send()
                .await
                .unwrap();
            if ready.status() == 200 {
                break;
            }
            assert_eq!(ready.status(), 503);
            assert!(Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let metrics = client
            .get(format!("http://{}/metrics", service.http))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), 404);
        service.kill().await;
    })
    .await
}

/// A CA and what it signed, as PEM.
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        Pki { ca }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for `name` signed by this CA: (cert PEM, key PEM).
    fn issue(&self, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write_identity(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem.new"), cert).unwrap();
    std::fs::write(dir.join("key.pem.new"), key).unwrap();
    std::fs::rename(dir.join("cert.pem.new"), dir.join("cert.pem")).unwrap();
    std::fs::rename(dir.join("key.pem.new"), dir.join("key.pem")).unwrap();
}

/// A gRPC client over TLS trusting `ca`, with a client identity if given.
async fn tls_client(
    app: &TestApp,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<EventStreamClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{}", app.grpc_addr))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(EventStreamClient::new(channel))
}

async fn get_event(
    client: Result<EventStreamClient<Channel>, tonic::transport::Error>,
    uuid: &str,
) -> bool {
    let Ok(mut client) = client else {
        return false;
    };
    client
        .get_event(proto::GetEventRequest { uuid: uuid.into() })
        .await
        .is_ok()
}

#[tokio::test]
async fn under_mutual_tls_a_client_without_a_certificate_is_refused() {
    within(WAIT, async {
        let dir = tempfile::tempdir().unwrap();
        let servers = Pki::new("server CA");
        let clients = Pki::new("client CA");
        write_identity(dir.path(), &servers.issue("localhost"));
        std::fs::write(dir.path().join("clients.pem"), clients.ca_pem()).unwrap();
        let app = TestApp::start_with(|config| {
            config.grpc.tls_cert = Some(dir.path().join("cert.pem"));
            config.grpc.tls_key = Some(dir.path().join("key.pem"));
            config.listeners.grpc_tls_client_ca = Some(dir.path().join("clients.pem"));
        })
        .await;
        post_many(&app, "mtls", 1).await;

        let anonymous = tls_client(&app, &servers.ca_pem(), None).await;
        assert!(!get_event(anonymous, "mtls-0").await);
        let stranger = Pki::new("someone else").issue("client");
        let foreign = tls_client(&app, &servers.ca_pem(), Some(&stranger)).await;
        assert!(!get_event(foreign, "mtls-0").await);
        let known = clients.issue("client");
        let client = tls_client(&app, &servers.ca_pem(), Some(&known)).await;
        assert!(get_event(client, "mtls-0").await);
        metric_reaches(
            &app,
            "okta_stream_listener_connections_closed_total{listener=\"grpc\",reason=\"tls_handshake\"}",
            1.0,
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn a_rotated_certificate_is_used_by_new_connections_while_an_open_stream_keeps_going() {
    within(WAIT, async {
        let dir = tempfile::tempdir().unwrap();
        let old = Pki::new("old CA");
        let new = Pki::new("new CA");
        write_identity(dir.path(), &old.issue("localhost"));
        let app = TestApp::start_with(|config| {
            config.grpc.tls_cert = Some(dir.path().join("cert.pem"));
            config.grpc.tls_key = Some(dir.path().join("key.pem"));
            config.listeners.grpc_tls_reload = Duration::from_millis(100);
        })
        .await;
        let mut stream = tls_client(&app, &old.ca_pem(), None)
            .await
            .unwrap()
            .subscribe(EventFilter::default())
            .await
            .unwrap()
            .into_inner();
        post_many(&app, "before", 1).await;
        assert_eq!(next_event(&mut stream).await.uuid, "before-0");

        write_identity(dir.path(), &new.issue("localhost"));
        metric_reaches(
            &app,
            "okta_stream_grpc_tls_reloads_total{result=\"ok\"}",
            1.0,
        )
        .await;
        post_many(&app, "after", 1).await;
        assert_eq!(next_event(&mut stream).await.uuid, "after-0");
        assert!(get_event(tls_client(&app, &new.ca_pem(), None).await, "after-0").await);
        assert!(!get_event(tls_client(&app, &old.ca_pem(), None).await, "after-0").await);

        // A bad replacement is refused and the last good certificate stays in use.
        std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
        metric_reaches(
            &app,
            "okta_stream_grpc_tls_reloads_total{result=\"error\"}",
            1.0,
        )
        .await;
        assert!(get_event(tls_client(&app, &new.ca_pem(), None).await, "after-0").await);
        post_many(&app, "still", 1).await;
        assert_eq!(next_event(&mut stream).await.uuid, "still-0");
    })
    .await
}

#[tokio::test]
async fn tls_file_errors_at_start_name_the_setting() {
    within(WAIT, async {
        let dir = tempfile::tempdir().unwrap();
        write_identity(dir.path(), &Pki::new("CA").issue("localhost"));
        std::fs::write(dir.path().join("garbage.pem"), "not PEM").unwrap();
        let start = |cert: &str, key: &str, ca: Option<&str>| {
            let mut config = Config {
                data_dir: dir.path().join("data"),
                ..Config::default()
            };
            config.hook.secrets = vec![okta_stream::secret::Secret::new(SECRET)];
            config.grpc.tls_cert = Some(dir.path().join(cert));
            config.grpc.tls_key = Some(dir.path().join(key));
            config.listeners.grpc_tls_client_ca = ca.map(|ca| dir.path().join(ca));
            async move {
                let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
                let (http, grpc, admin) = (
                    bind().await.unwrap(),
                    bind().await.unwrap(),
                    bind().await.unwrap(),
                );
                match okta_stream::app::App::with_listeners(config, http, grpc, admin).await {
                    Ok(_) => panic!("started with bad TLS files"),
                    Err(error) => error.to_string(),
                }
            }
        };
        let error = start("missing.pem", "key.pem", None).await;
        assert!(error.contains("OKTA_STREAM_GRPC_TLS_CERT"), "{error}");
        assert!(error.contains("missing.pem"), "{error}");
        let error = start("cert.pem", "garbage.pem", None).await;
        assert!(error.contains("OKTA_STREAM_GRPC_TLS_KEY"), "{error}");
        let error = start("cert.pem", "key.pem", Some("garbage.pem")).await;
        assert!(error.contains("OKTA_STREAM_GRPC_TLS_CLIENT_CA"), "{error}");
    })
    .await
}

#[tokio::test]
async fn sighup_makes_the_binary_reread_its_certificate_at_once() {
    within(WAIT, async {
        let dir = tempfile::tempdir().unwrap();
        let old = Pki::new("old CA");
        let new = Pki::new("new CA");
        write_identity(dir.path(), &old.issue("localhost"));
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let service = Service::start(
            &dir.path().join("data"),
            &[
                ("OKTA_STREAM_HOOK_SECRETS", SECRET),
                ("OKTA_STREAM_GRPC_TLS_CERT", cert.to_str().unwrap()),
                ("OKTA_STREAM_GRPC_TLS_KEY", key.to_str().unwrap()),
                // Only the signal can make it re-read within this test.
                ("OKTA_STREAM_GRPC_TLS_RELOAD_SECS", "3600"),
            ],
        )
        .await;
        let connects = |ca: String| {
            let url = format!("https://{}", service.grpc);
            async move {
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name("localhost");
                let Ok(channel) = Channel::from_shared(url).unwrap().tls_config(tls) else {
                    return false;
                };
                let Ok(channel) = channel.connect().await else {
                    return false;
                };
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .is_ok()
            }
        };
        assert!(connects(old.ca_pem()).await);

        write_identity(dir.path(), &new.issue("localhost"));
        let pid = service.child.id().unwrap().to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + WAIT;
        while !connects(new.ca_pem()).await {
            assert!(
                Instant::now() < deadline,
                "the new certificate was never served"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!connects(old.ca_pem()).await);
        service.kill().await;
    })
    .await
}
