//! A real okta-stream app on loopback port 0, driven the way users drive it: HTTP to the
//! hook, gRPC to the stream.

use std::net::SocketAddr;
use std::time::Duration;

use okta_stream::app::{App, AppError};
use okta_stream::config::Config;
use okta_stream::grpc::SubscribeResponse;
use okta_stream::journal::SharedJournal;
use okta_stream::okta::PollerConfig;
use okta_stream::proto::event_stream_client::EventStreamClient;
use okta_stream::proto::{self, GetEventRequest};
use okta_stream::secret::Secret;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::transport::Channel;

/// The hook secret every test app accepts.
pub const SECRET: &str = "test-hook-secret";

/// Bound on any single wait in these tests, so a hang fails instead of stalling CI.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running app and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// The gRPC address.
    pub grpc_addr: SocketAddr,
    /// `http://127.0.0.1:PORT` of the admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin: String,
    /// The journal, to check what was stored.
    pub journal: SharedJournal,
    /// The data directory (kept alive as long as the app).
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), AppError>>>,
    http_client: reqwest::Client,
}

impl TestApp {
    /// Starts an app with the test secret and otherwise default settings.
    pub async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    /// Starts an app after `configure` adjusts its config.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestApp {
        Self::start_in(
            tempfile::tempdir().unwrap(),
            okta_stream::hub::DEFAULT_LIVE_CAPACITY,
            configure,
        )
        .await
    }

    /// Starts an app with the test secret, otherwise default settings, and `poller`.
    pub async fn start_with_poller(poller: PollerConfig) -> TestApp {
        Self::start_full(
            tempfile::tempdir().unwrap(),
            okta_stream::hub::DEFAULT_LIVE_CAPACITY,
            Some(poller),
            |_| {},
        )
        .await
    }

    /// Starts an app on `data_dir` with `poller` configured in code, after `configure`
    /// adjusts its config.
    pub async fn start_with_poller_in(
        data_dir: tempfile::TempDir,
        poller: PollerConfig,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        Self::start_full(
            data_dir,
            okta_stream::hub::DEFAULT_LIVE_CAPACITY,
            Some(poller),
            configure,
        )
        .await
    }

    /// Starts an app on `data_dir` with a live buffer of `live_capacity` events.
    pub async fn start_in(
        data_dir: tempfile::TempDir,
        live_capacity: usize,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        Self::start_full(data_dir, live_capacity, None, configure).await
    }

    /// Starts an app on `data_dir`, with `poller` configured in code (not from settings).
    async fn start_full(
        data_dir: tempfile::TempDir,
        live_capacity: usize,
        poller: Option<PollerConfig>,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        let mut config = Config {
            data_dir: data_dir.path().to_path_buf(),
            ..Config::default()
        };
        config.hook.secrets = vec![Secret::new(SECRET)];
        configure(&mut config);
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = App::with_poller(config, poller, http, grpc, admin, live_capacity)
            .await
            .unwrap();
        let http = format!("http://{}", app.http_addr());
        let admin = format!("http://{}", app.admin_addr());
        let grpc_addr = app.grpc_addr();
        let journal = app.journal();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run(async {
            let _ = rx.await;
        }));
        TestApp {
            http,
            grpc_addr,
            admin,
            journal,
            data_dir,
            shutdown: Some(tx),
            handle: Some(handle),
            http_client: reqwest::Client::new(),
        }
    }

    /// A gRPC client of the EventStream service.
    pub async fn client(&self) -> EventStreamClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        EventStreamClient::new(channel)
    }

    /// POSTs `body` to the hook with the test secret.
    pub async fn post_hook(&self, body: &Value) -> reqwest::Response {
        self.http_client
            .post(format!("{}/okta/hook", self.http))
            .header("authorization", SECRET)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The Prometheus text of `/metrics` (on the admin listener).
    /// The stored event `uuid`, as GetEvent answers it.
    pub async fn get_event(&self, uuid: &str) -> proto::Event {
        self.client()
            .await
            .get_event(GetEventRequest {
                uuid: uuid.to_owned(),
            })
            .await
            .expect("GetEvent")
            .into_inner()
            .event
            .expect("an event")
    }

    pub async fn metrics(&self) -> String {
        let response = self
            .http_client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    /// An HTTP client for requests the helpers above do not cover.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.http_client
    }

    /// The journal's head cursor.
    pub async fn head(&self) -> u64 {
        self.journal.bounds().await.unwrap().head
    }

    /// Requests shutdown and waits for the app to stop; returns how `run` ended.
    pub async fn stop(mut self) -> Result<(), AppError> {
        self.shutdown_and_wait().await
    }

    /// Stops the app and hands back its data dir, to start another app on it.
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        self.shutdown_and_wait().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, dir)
    }

    async fn shutdown_and_wait(&mut self) -> Result<(), AppError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(handle) => tokio::time::timeout(WAIT, handle)
                .await
                .expect("app stops in time")
                .unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The next event of a Subscribe stream, heartbeats skipped, waiting at most `wait`.
pub async fn next_event(stream: &mut Streaming<SubscribeResponse>, wait: Duration) -> proto::Event {
    loop {
        let message = super::within(wait, stream.message())
            .await
            .expect("stream ok")
            .expect("stream open");
        if let Some(event) = message.decode_event() {
            return event.expect("an event that decodes");
        }
    }
}

/// A `user.account.update_profile` LogEvent as Okta sends it in a hook delivery.
pub fn profile_update(uuid: &str, user_login: &str, changed: &str) -> Value {
    json!({
        "uuid": uuid,
        "published": "2026-11-22T18:07:13.125Z",
        "eventType": "user.account.update_profile",
        "version": "0",
        "displayMessage": "Update user profile for Okta",
        "severity": "INFO",
        "legacyEventType": "core.user.config.profile_update.success",
        "actor": {"id": "00uADMIN", "type": "User", "alternateId": "admin@example.com", "displayName": "Admin", "detailEntry": null},
        "client": {"zone": "null", "ipAddress": "198.51.100.7", "device": "Computer", "id": null,
                   "userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Linux", "browser": "FIREFOX"},
                   "ipChain": [{"ip": "198.51.100.7", "version": "V4", "source": null}]},
        "outcome": {"result": "SUCCESS", "reason": null},
        "target": [{"id": format!("00u-{user_login}"), "type": "User", "alternateId": user_login, "displayName": "Some User", "detailEntry": null}],
        "transaction": {"type": "WEB", "id": "tx-1", "detail": {}},
        "debugContext": {"debugData": {"changedAttributes": changed, "requestUri": "/api/v1/users/x"}},
        "authenticationContext": {"externalSessionId": "102abc", "authenticationStep": 0},
        "securityContext": {"isProxy": false}
    })
}

/// An Okta Event Hook delivery envelope holding `events`.
pub fn delivery(event_id: &str, events: Vec<Value>) -> Value {
    json!({
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": "https://acme.okta.com/api/v1/eventHooks/whoTEST",
        "eventId": event_id,
        "eventTime": "2026-11-22T18:07:15.000Z",
        "contentType": "application/json",
        "data": {"events": events}
    })
}

/// Posts `count` single-event deliveries with uuids `{prefix}-{i}` and checks each is acked.
pub async fn post_many(app: &TestApp, prefix: &str, count: usize) {
    for i in 0..count {
        let uuid = format!("{prefix}-{i}");
        let response = app
            .post_hook(&delivery(
                &format!("d-{uuid}"),
                vec![profile_update(&uuid, "thor@avengers.org", "lastName")],
            ))
            .await;
        assert_eq!(response.status(), 204, "delivery {uuid}");
    }
}
