//! How the journal writer waits for its next request: a short spin before it sleeps, while
//! requests have lately followed each other closely, and work that is due done only once no
//! request has come for a while.
//!
//! Why spin: waking a sleeping thread costs tens of microseconds on a virtual machine (the woken
//! virtual CPU has to be scheduled by the host), and one sender delivering one event at a time
//! paid that on every delivery, on top of the durable write it waits for. Spinning pays only
//! when the next request comes soon, so the writer spins for at most [`MAX_SPIN`], yielding
//! its core at every turn to any other thread that wants it, and only while requests keep
//! coming within that time: after [`LONG_GAPS_BEFORE_SLEEPING`] longer gaps in a row it sleeps
//! at once, so a service whose deliveries come milliseconds or more apart spends nothing on
//! it. One late request (a wake-up delayed by the host) does not stop the spinning of a steady
//! sender. The price is paid at rates where gaps are often short: at 2,000 one-event
//! deliveries a second, about 45 µs of CPU per event, for one sender's deliveries answered
//! about 20% sooner (`cargo bench --bench load -- ingest` and `-- profile`, BENCHMARKS.md,
//! issue 15).
//!
//! Why wait for quiet: a checkpoint of the write-ahead file takes milliseconds, and every
//! request that comes meanwhile waits for it. Taken once nothing has come for [`QUIET`], it
//! falls in the gaps between deliveries instead of on one of them.

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

/// Longest spin before sleeping, and the longest gap after which the writer spins again.
/// One sender's next one-event delivery reaches the writer 60-150 µs after the last answer.
pub const MAX_SPIN: Duration = Duration::from_micros(200);

/// Gaps of at least [`MAX_SPIN`] in a row after which the writer stops spinning.
pub const LONG_GAPS_BEFORE_SLEEPING: u32 = 4;

/// How long no request must have come before work that can wait is done. Longer than the
/// gaps of a steady stream of deliveries (0.5 ms at 2,000 a second), so such a stream never
/// waits for it; far shorter than the gaps between bursts.
pub const QUIET: Duration = Duration::from_millis(3);

/// The writer's recent pace: how many of the last waits for a request were long, in a row.
#[derive(Debug)]
pub struct Pace {
    long_gaps: u32,
}

impl Default for Pace {
    /// A new writer has seen no request yet: it sleeps until a short gap is seen.
    fn default() -> Self {
        Self {
            long_gaps: LONG_GAPS_BEFORE_SLEEPING,
        }
    }
}

impl Pace {
    /// How long to spin for the next request before sleeping.
    pub fn spin_budget(&self) -> Duration {
        if self.long_gaps < LONG_GAPS_BEFORE_SLEEPING {
            MAX_SPIN
        } else {
            Duration::ZERO
        }
    }

    /// Records how long the writer waited for its last request (spinning or sleeping).
    pub fn waited(&mut self, gap: Duration) {
        self.long_gaps = if gap < MAX_SPIN {
            0
        } else {
            self.long_gaps
                .saturating_add(1)
                .min(LONG_GAPS_BEFORE_SLEEPING)
        };
    }
}

/// The next request of `queue`: spins for it as long as `pace` allows, then sleeps until it
/// comes. If `when_quiet` is given and nothing comes for [`QUIET`], it is done first. `None`
/// once the queue is closed and empty.
pub fn next_request<T>(
    queue: &mut mpsc::Receiver<T>,
    pace: &mut Pace,
    when_quiet: Option<impl FnOnce()>,
) -> Option<T> {
    let started = Instant::now();
    let budget = pace.spin_budget();
    loop {
        match queue.try_recv() {
            Ok(request) => {
                pace.waited(started.elapsed());
                return Some(request);
            }
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if started.elapsed() < budget => std::thread::yield_now(),
            Err(TryRecvError::Empty) => break,
        }
    }
    if let Some(work) = when_quiet {
        match recv_until(queue, started + QUIET) {
            Some(request) => {
                pace.waited(started.elapsed());
                return request;
            }
            None => work(),
        }
    }
    let request = queue.blocking_recv();
    pace.waited(started.elapsed());
    request
}

/// Waits at most [`QUIET`] for the next request of `queue`: `Some(request)`, holding `None` if
/// the queue is closed and empty, or `None` if nothing came. For work that is due but waits on
/// something else to land first (the last checkpoint's writes behind the writer): the writer
/// looks again after a quiet time instead of sleeping until a request that may never come.
pub fn request_within_quiet<T>(
    queue: &mut mpsc::Receiver<T>,
    pace: &mut Pace,
) -> Option<Option<T>> {
    let started = Instant::now();
    let request = recv_until(queue, started + QUIET)?;
    pace.waited(started.elapsed());
    Some(request)
}

/// Sleeps until the next request of `queue` (`Some`, holding `None` if the queue is closed
/// and empty), or until `deadline` passes first (`None`).
fn recv_until<T>(queue: &mut mpsc::Receiver<T>, deadline: Instant) -> Option<Option<T>> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(request) = queue.poll_recv(&mut context) {
            return Some(request);
        }
        // A wake-up before the deadline that brought nothing (a spurious one) polls again.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::park_timeout(left);
    }
}

/// Wakes the writer's thread when a request is sent to its queue.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// No work waiting for quiet.
    const NOTHING: Option<fn()> = None;

    #[test]
    fn a_writer_spins_after_a_short_gap_until_long_gaps_follow_in_a_row() {
        let mut pace = Pace::default();
        assert_eq!(
            pace.spin_budget(),
            Duration::ZERO,
            "a new writer sleeps at once"
        );
        pace.waited(Duration::from_micros(80));
        assert_eq!(pace.spin_budget(), MAX_SPIN);
        for _ in 1..LONG_GAPS_BEFORE_SLEEPING {
            pace.waited(MAX_SPIN);
            assert_eq!(
                pace.spin_budget(),
                MAX_SPIN,
                "one late request keeps it spinning"
            );
        }
        pace.waited(Duration::from_secs(3));
        assert_eq!(pace.spin_budget(), Duration::ZERO);
        pace.waited(Duration::from_secs(3));
        assert_eq!(pace.spin_budget(), Duration::ZERO);
        pace.waited(Duration::from_micros(10));
        assert_eq!(pace.spin_budget(), MAX_SPIN);
    }

    #[test]
    fn work_waiting_on_something_else_is_looked_at_again_after_a_quiet_time() {
        let (sender, mut queue) = mpsc::channel::<u32>(4);
        let mut pace = Pace::default();
        let started = Instant::now();
        assert_eq!(
            request_within_quiet(&mut queue, &mut pace),
            None,
            "nothing came: the writer looks again"
        );
        assert!(started.elapsed() >= QUIET, "after a quiet time");
        sender.try_send(5).expect("room in the queue");
        assert_eq!(request_within_quiet(&mut queue, &mut pace), Some(Some(5)));
        drop(sender);
        assert_eq!(
            request_within_quiet(&mut queue, &mut pace),
            Some(None),
            "a closed, empty queue ends the writer"
        );
    }

    #[test]
    fn a_request_already_queued_is_taken_and_counts_as_a_short_gap() {
        let (sender, mut queue) = mpsc::channel(4);
        sender.try_send(7).expect("room in the queue");
        let mut pace = Pace::default();
        assert_eq!(next_request(&mut queue, &mut pace, NOTHING), Some(7));
        assert_eq!(pace.spin_budget(), MAX_SPIN);
    }

    #[test]
    fn a_request_after_a_long_gap_wakes_the_sleeping_writer() {
        let (sender, mut queue) = mpsc::channel(4);
        let mut pace = Pace::default();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.blocking_send(9).expect("the writer is waiting");
            sender
        });
        assert_eq!(next_request(&mut queue, &mut pace, NOTHING), Some(9));
        assert_eq!(pace.spin_budget(), Duration::ZERO);
        drop(late.join().expect("the sender thread ends"));
        assert_eq!(
            next_request(&mut queue, &mut pace, NOTHING),
            None,
            "a closed, empty queue ends the writer"
        );
    }

    #[test]
    fn work_waiting_for_quiet_is_done_once_nothing_came_for_a_while_then_the_writer_sleeps() {
        let (sender, mut queue) = mpsc::channel(4);
        let mut pace = Pace::default();
        let late = std::thread::spawn(move || {
            std::thread::sleep(QUIET * 10);
            sender.blocking_send(9).expect("the writer is waiting");
        });
        let started = Instant::now();
        let done = Cell::new(None);
        let work = || done.set(Some(started.elapsed()));
        assert_eq!(next_request(&mut queue, &mut pace, Some(work)), Some(9));
        let after = done.get().expect("the work was done");
        assert!(
            after >= QUIET,
            "done after {after:?}, before {QUIET:?} of quiet"
        );
        late.join().expect("the sender thread ends");
    }

    #[test]
    fn a_request_already_queued_comes_before_work_waiting_for_quiet() {
        let (sender, mut queue) = mpsc::channel(4);
        sender.try_send(7).expect("room in the queue");
        let mut pace = Pace::default();
        let done = Cell::new(false);
        let work = || done.set(true);
        assert_eq!(next_request(&mut queue, &mut pace, Some(work)), Some(7));
        assert!(!done.get(), "the work still waits for quiet");
    }

    #[test]
    fn a_request_sent_while_waiting_for_quiet_wakes_the_writer() {
        let (sender, mut queue) = mpsc::channel(4);
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.blocking_send(9).expect("the writer is waiting");
            sender
        });
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        assert_eq!(recv_until(&mut queue, deadline), Some(Some(9)));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "woken by the request"
        );
        let sender = late.join().expect("the sender thread ends");
        assert_eq!(
            recv_until(&mut queue, Instant::now() + Duration::from_millis(5)),
            None,
            "nothing came before the deadline"
        );
        drop(sender);
        assert_eq!(
            recv_until(&mut queue, Instant::now() + Duration::from_secs(60)),
            Some(None),
            "a closed, empty queue"
        );
    }
}
