//! Statistics: latency percentiles and one closed- or open-loop run's figures.

#[allow(unused_imports)]
use super::*;

pub(crate) fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

/// The outcome of one load phase.
#[derive(Default)]
pub(crate) struct Run {
    pub(crate) events: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
}

impl Run {
    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub(crate) fn p(&mut self, p: f64) -> f64 {
        self.latencies.sort_unstable();
        percentile_ms(&self.latencies, p)
    }
    pub(crate) fn merge(&mut self, other: Run) {
        self.events += other.events;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
    }
    /// Records one delivery: its latency and events if it succeeded, else its error.
    pub(crate) fn record(&mut self, outcome: Result<(), String>, sent: Instant, events: usize) {
        match outcome {
            Ok(()) => {
                self.latencies.push(sent.elapsed());
                self.events += events as u64;
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }
    /// The senders' runs as one, timed from `started`.
    pub(crate) async fn join(tasks: Vec<tokio::task::JoinHandle<Run>>, started: Instant) -> Run {
        let mut total = Run::default();
        for task in tasks {
            if let Ok(run) = task.await {
                total.merge(run);
            }
        }
        total.elapsed = started.elapsed();
        total
    }
    pub(crate) fn error_note(&self) -> String {
        match &self.first_error {
            Some(e) => format!("{} errors (first: {e})", self.errors),
            None => "0".to_owned(),
        }
    }
}
