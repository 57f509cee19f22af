//! The hub: committed events, in cursor order, to every subscriber; replay then live.
//!
//! The live path is one broadcast channel of `Arc`ed committed events, shared by all
//! subscribers. The journal is the source of truth and the safety net: a [`Follower`] that
//! falls behind the broadcast buffer (`Lagged`) or sees a hole re-reads from the journal by
//! itself, so a slow subscriber never slows ingestion and is never silently skipped past
//! events, and its memory stays bounded by one catch-up page.
//!
//! Each live event travels with its Subscribe message already framed for gRPC, built once per
//! event here, so N subscribers send the same bytes instead of encoding N copies.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use crate::journal::{CommitSink, Cursor, JournalError, SharedEvent, SharedJournal};
use crate::proto::SubscribeResponse;

/// A committed event as a follower yields it, with its Subscribe message as one gRPC message
/// (see [`SubscribeResponse::grpc_frame`]): shared by all live followers, built on demand for
/// an event replayed from the journal.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The event.
    pub event: SharedEvent,
    frame: Option<Bytes>,
}

impl Delivery {
    fn live(event: SharedEvent) -> Self {
        let frame = SubscribeResponse::event(event.encoded.clone()).grpc_frame();
        Self {
            event,
            frame: Some(frame),
        }
    }

    /// The event's Subscribe message, length-prefixed for the gRPC wire.
    pub fn into_frame(self) -> Bytes {
        match self.frame {
            Some(frame) => frame,
            None => SubscribeResponse::event(self.event.encoded.clone()).grpc_frame(),
        }
    }
}

/// How many committed events the live broadcast buffers before slow receivers lag.
pub const DEFAULT_LIVE_CAPACITY: usize = 4096;

/// Events read from the journal per catch-up step; bounds a lagging follower's memory.
const CATCH_UP_PAGE: usize = 64;

/// Fans committed events out to followers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Hub {
    live: broadcast::Sender<Delivery>,
    head: watch::Sender<Cursor>,
}

impl Hub {
    /// A hub whose live buffer holds `capacity` events, starting at journal head `head`.
    pub fn new(capacity: usize, head: Cursor) -> Self {
        let (live, _) = broadcast::channel(capacity.max(1));
        let (head, _) = watch::channel(head);
        Self { live, head }
    }

    /// Publishes newly committed events. Journals call this once per commit, in cursor order.
    ///
    /// The head moves first, so a follower that receives an event never sees a head older
    /// than that event (its lag is measured against the head).
    pub fn publish(&self, events: &[SharedEvent]) {
        if let Some(last) = events.last() {
            self.head.send_if_modified(|head| {
                let newer = last.cursor() > *head;
                if newer {
                    *head = last.cursor();
                }
                newer
            });
        }
        if self.live.receiver_count() == 0 {
            // Nobody is subscribed right now: nothing to frame.
            return;
        }
        for event in events {
            // No receiver is not an error: the last subscriber may just have left.
            let _ = self.live.send(Delivery::live(event.clone()));
        }
    }

    /// The newest committed cursor this hub has seen.
    pub fn head(&self) -> Cursor {
        *self.head.borrow()
    }

    /// Watches the head cursor (for heartbeats and metrics).
    pub fn watch_head(&self) -> watch::Receiver<Cursor> {
        self.head.subscribe()
    }

    /// Number of live receivers (followers) attached.
    pub fn followers(&self) -> usize {
        self.live.receiver_count()
    }

    /// A follower that yields every committed event with a cursor greater than `after`, in
    /// order, first from the journal and then live, with no gap and no duplicate.
    pub fn follow(&self, journal: SharedJournal, after: Cursor) -> Follower {
        // Subscribe before the first journal read: whatever commits after this point is in
        // the receiver, whatever committed before is in the journal.
        Follower {
            journal,
            live: self.live.subscribe(),
            next: after.saturating_add(1),
            backlog: VecDeque::new(),
            catching_up: true,
        }
    }
}

/// The hub is where the journal hands its commits.
impl CommitSink for Hub {
    fn opened(&self, head: Cursor) {
        self.head.send_if_modified(|current| {
            let newer = head > *current;
            if newer {
                *current = head;
            }
            newer
        });
    }

    fn committed(&self, events: &[SharedEvent]) {
        self.publish(events);
    }
}

/// Why a follower stopped.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Events the follower still needed were removed by retention.
    #[error(
        "events after cursor {last_delivered} are no longer retained; oldest available cursor is {oldest}"
    )]
    Pruned {
        /// The last cursor this follower yielded (or started after).
        last_delivered: Cursor,
        /// The oldest cursor the journal still holds.
        oldest: Cursor,
    },
    /// The hub closed (the service is shutting down).
    #[error("the event hub is closed")]
    Closed,
    /// The journal could not be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// One subscriber's position in the stream. See [`Hub::follow`].
#[derive(Debug)]
pub struct Follower {
    journal: SharedJournal,
    live: broadcast::Receiver<Delivery>,
    /// The cursor this follower yields next.
    next: Cursor,
    /// Events read from the journal and not yielded yet (at most one page).
    backlog: VecDeque<SharedEvent>,
    /// Whether the next event comes from the journal rather than the live channel.
    catching_up: bool,
}

impl Follower {
    /// The last cursor yielded (or the cursor this follower started after).
    pub fn last_delivered(&self) -> Cursor {
        self.next.saturating_sub(1)
    }

    /// The next committed event, waiting for one if the follower is at the head.
    pub async fn next(&mut self) -> Result<SharedEvent, FollowError> {
        self.next_delivery().await.map(|delivery| delivery.event)
    }

    /// The next committed event with its framed Subscribe message (see [`Follower::next`]).
    pub async fn next_delivery(&mut self) -> Result<Delivery, FollowError> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                self.next = event.cursor() + 1;
                return Ok(Delivery { event, frame: None });
            }
            if self.catching_up {
                let page = self
                    .journal
                    .read_after(self.last_delivered(), CATCH_UP_PAGE)
                    .await?;
                match page.first() {
                    None => self.catching_up = false,
                    Some(first) if first.cursor() > self.next => {
                        return Err(FollowError::Pruned {
                            last_delivered: self.last_delivered(),
                            oldest: first.cursor(),
                        });
                    }
                    Some(_) => self.backlog.extend(page),
                }
                continue;
            }
            match self.live.recv().await {
                Ok(live) if live.event.cursor() < self.next => continue, // already yielded from the journal
                Ok(live) if live.event.cursor() == self.next => {
                    self.next += 1;
                    return Ok(live);
                }
                // A hole: something between was committed before we subscribed or was missed.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => return Err(FollowError::Closed),
            }
        }
    }
}
