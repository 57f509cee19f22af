//! The sweep that keeps snapshots current between update events: when the feature first
//! starts (no watermark stored) every user is read (`GET /api/v1/users`, 200 a page, `Link`
//! paging), later only those updated since the watermark minus an overlap
//! (`search=lastUpdated gt "<time>"`). Each page is stored in one write; the watermark moves
//! only after a whole sweep. Requests share the Users API client's pacing with the stage, so
//! together they stay within `OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::rules::AttributeRules;
use super::snapshot::Snapshot;
use super::store::{SnapshotStore, StoreError};
use crate::okta::users::{UsersClient, UsersError};

/// Why one sweep failed; the next one is tried after `RETRY` (30 s).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The snapshot store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Okta's Users API did not answer a page.
    #[error(transparent)]
    Users(#[from] UsersError),
}

/// Time between the end of one sweep and the start of the next.
pub const INTERVAL: Duration = Duration::from_secs(300);

/// How far before the watermark an incremental sweep starts: users updated within the same
/// millisecond, or written to Okta's index a little late, are read again rather than missed.
pub const OVERLAP: chrono::Duration = chrono::Duration::seconds(60);

/// The lease (in the NATS journal's state bucket) held by the one replica that sweeps.
pub const LEASE_KEY: &str = "profile.sweep.lease";

/// Wait before a failed sweep is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// Counters of the sweeps.
#[derive(Debug, Default)]
pub struct SweepStats {
    completed: Counter,
    failed: Counter,
    users: Counter,
}

impl SweepStats {
    /// Adds the counters to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "profile_sweeps",
            "Completed sweeps of Okta's Users API",
            self.completed.clone(),
        );
        registry.register(
            "profile_sweep_failures",
            "Sweeps of Okta's Users API that stopped on an error",
            self.failed.clone(),
        );
        registry.register(
            "profile_sweep_users",
            "Users read by sweeps",
            self.users.clone(),
        );
    }
}

/// What a sweep needs.
#[derive(Debug)]
pub struct Sweep {
    /// The Users API (shared with the stage: one pacing).
    pub users: Arc<UsersClient>,
    /// Where snapshots and the watermark are kept.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// The attribute rules.
    pub rules: Arc<AttributeRules>,
    /// Its counters.
    pub stats: Arc<SweepStats>,
}

impl Sweep {
    /// Sweeps now, then every [`INTERVAL`], until `shutdown`. Errors are logged and retried.
    /// With the NATS journal the caller runs this only while it holds [`LEASE_KEY`], so of N
    /// replicas one sweeps.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            // Stopping mid-sweep is safe: each page is stored on its own and the watermark
            // moves only after a whole sweep.
            let swept = tokio::select! {
                () = shutdown.cancelled() => return,
                swept = self.once() => swept,
            };
            let wait = match swept {
                Ok(read) => {
                    self.stats.completed.inc();
                    tracing::info!(users = read, "profile sweep completed");
                    INTERVAL
                }
                Err(e) => {
                    self.stats.failed.inc();
                    tracing::warn!(error = %e, "profile sweep failed; retrying later");
                    RETRY
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One whole sweep; returns how many users it read.
    pub async fn once(&self) -> Result<usize, SweepError> {
        let watermark = self.snapshots.watermark().await?;
        let mut url = Some(self.users.list_url(watermark.map(|w| w - OVERLAP)));
        let mut newest: Option<DateTime<Utc>> = watermark;
        let mut read = 0;
        while let Some(next) = url.take() {
            let page = self.users.list_page(&next).await?;
            let entries: Vec<(String, Snapshot)> = page
                .users
                .iter()
                .map(|u| {
                    (
                        u.id.clone(),
                        Snapshot::from_profile(&self.rules, &u.profile, u.last_updated),
                    )
                })
                .collect();
            newest = entries.iter().map(|(_, s)| s.as_of).chain(newest).max();
            self.snapshots.put_many(&entries).await?;
            read += entries.len();
            self.stats.users.inc_by(entries.len() as u64);
            url = page.next;
        }
        if let Some(at) = newest {
            self.snapshots.set_watermark(at).await?;
        }
        Ok(read)
    }
}
