//! The tail: the one task that hands committed events to the local commit sink (the hub).
//!
//! Every replica follows the stream with an ordered consumer from the head it saw at open, so
//! an event appended on any replica reaches every replica's subscribers once, in sequence
//! order. Failure policy: the tail never gives up while the journal lives; a consumer error
//! is logged and the consumer re-created from the next sequence after a capped backoff (a
//! follower that sees a hole meanwhile catches up from the journal by itself). A consumer
//! that stays idle while the stream holds newer messages counts as failed too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::journal::SharedSink;

/// How long the tail waits for a message before checking whether its consumer stalled.
const STALL_CHECK: Duration = Duration::from_secs(2);

/// First and largest pause before re-creating a failed consumer.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// What the tail has done, shared with the journal for metrics and tests.
#[derive(Debug)]
pub(super) struct TailProgress {
    position: AtomicU64,
    published: AtomicU64,
}

impl TailProgress {
    pub(super) fn new(head: u64) -> Self {
        Self {
            position: AtomicU64::new(head),
            published: AtomicU64::new(0),
        }
    }

    pub(super) fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    pub(super) fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }
}

/// Starts the tail after `progress.position()`.
pub(super) fn spawn(
    events: stream::Stream,
    filter: String,
    sink: SharedSink,
    progress: Arc<TailProgress>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("nats_journal_tail", stream = %events.cached_info().config.name);
    tokio::spawn(run(events, filter, sink, progress, shutdown).instrument(span))
}

async fn run(
    events: stream::Stream,
    filter: String,
    sink: SharedSink,
    progress: Arc<TailProgress>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF.0;
    while !shutdown.is_cancelled() {
        let next = progress.position() + 1;
        match follow(&events, &filter, &sink, &progress, &shutdown, next).await {
            Ok(()) => return, // shut down
            Err(error) => {
                tracing::warn!(%error, next = progress.position() + 1, "tail consumer failed; re-creating it");
            }
        }
        if progress.position() >= next {
            backoff = BACKOFF.0; // it made progress: the failure is not persistent
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// Publishes messages from sequence `next` on until shutdown (`Ok`) or a consumer error.
async fn follow(
    events: &stream::Stream,
    filter: &str,
    sink: &SharedSink,
    progress: &TailProgress,
    shutdown: &CancellationToken,
    next: u64,
) -> Result<(), String> {
    let consumer = events
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: next,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create the ordered consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot start the ordered consumer: {e}"))?;
    // The position at which an idle check last found the stream ahead of the tail.
    let mut behind_at: Option<u64> = None;
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            message = messages.next() => message,
            () = tokio::time::sleep(STALL_CHECK) => {
                // Idle is normal at the head. Idle twice in a row at the same position while
                // the stream holds newer messages is a stalled consumer (seen after a node
                // of the cluster died): re-create it instead of waiting forever.
                let last = events.get_info().await.map_or(0, |info| info.state.last_sequence);
                let position = progress.position();
                if last <= position {
                    behind_at = None;
                } else if behind_at == Some(position) {
                    return Err(format!(
                        "the ordered consumer stalled at {position} while the stream is at {last}"
                    ));
                } else {
                    behind_at = Some(position);
                }
                continue;
            }
        };
        let message = match message {
            None => return Err("the ordered consumer ended".to_owned()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(message)) => message,
        };
        let sequence = message
            .info()
            .map_err(|e| format!("a message without JetStream metadata: {e}"))?
            .stream_sequence;
        if sequence <= progress.position() {
            continue; // already published (a re-created consumer overlaps)
        }
        match crate::journal::Committed::from_stored(message.payload.clone(), sequence) {
            Ok(committed) => {
                sink.committed(&[Arc::new(committed)]);
                progress.published.fetch_add(1, Ordering::AcqRel);
            }
            // Subscribers see a hole and read the journal, which reports the corruption.
            Err(error) => tracing::error!(%error, sequence, "cannot publish a stored event"),
        }
        progress.position.store(sequence, Ordering::Release);
    }
}
