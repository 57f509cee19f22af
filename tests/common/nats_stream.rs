//! A JetStream stream unique to one test on the shared test server, deleted when dropped.
//!
//! The server is `OKTA_STREAM_TEST_NATS_URL` (default `nats://127.0.0.1:4222`; `scripts/test`
//! starts one when none runs). Each [`TestStream`] has a random stream name and subject, so
//! tests run in parallel without seeing each other, and its drop deletes the stream, the
//! quarantine stream and the state bucket, also when the test failed. Include it with
//! `#[path = "common/nats_stream.rs"] mod nats_stream;`.

#![allow(dead_code)] // each test target uses a different part of the helper

use std::sync::Arc;

use async_nats::jetstream;
use okta_stream::hub::Hub;
use okta_stream::journal::nats::{NatsConfig, NatsJournal, parse_servers};

/// The NATS server the tests use.
pub fn nats_url() -> String {
    std::env::var("OKTA_STREAM_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A stream (and its quarantine stream and state bucket) unique to one test, deleted on drop.
pub struct TestStream {
    /// The journal settings naming this stream; tests may adjust them before opening.
    pub config: NatsConfig,
}

impl TestStream {
    /// A fresh stream whose name contains `tag` (letters, digits, `_` only).
    pub fn new(tag: &str) -> Self {
        let suffix: u32 = rand::random();
        Self {
            config: NatsConfig {
                servers: parse_servers(&nats_url()).unwrap(),
                stream: format!("T_{tag}_{suffix:08x}"),
                subject: format!("t{suffix:08x}.{tag}"),
                ..NatsConfig::default()
            },
        }
    }

    /// Opens a journal (one replica) on the stream with a fresh hub.
    pub async fn open(&self) -> (Arc<NatsJournal>, Hub) {
        let hub = Hub::new(1024, 0);
        let journal = NatsJournal::open(self.config.clone(), hub.clone())
            .await
            .unwrap();
        (journal, hub)
    }

    /// A JetStream context on the test server, to inspect or tamper with the stream.
    pub async fn context(&self) -> jetstream::Context {
        jetstream::new(async_nats::connect(nats_url()).await.unwrap())
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let name = self.config.stream.clone();
        // A fresh runtime on its own thread: drop may run inside (or after) the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let Ok(client) = async_nats::connect(nats_url()).await else {
                    return;
                };
                let js = jetstream::new(client);
                for stream in [
                    name.clone(),
                    format!("{name}_QUARANTINE"),
                    format!("KV_{name}_STATE"),
                ] {
                    let _ = js.delete_stream(stream).await;
                }
            });
        })
        .join();
    }
}
