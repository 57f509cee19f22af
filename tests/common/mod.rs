//! Shared test support: a fake Okta org, the app in-process and as a binary, timeout helpers.
//!
//! Each test binary uses a different subset, hence `dead_code` is allowed here.
#![allow(dead_code)]

pub mod fake_okta;

use std::future::Future;
use std::time::Duration;

/// Runs `future`, failing the test instead of hanging when it takes longer than `limit`.
pub async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .expect("test step timed out")
}

/// Polls `condition` every 10 ms until it holds, failing after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub mod app;
pub mod binary;
