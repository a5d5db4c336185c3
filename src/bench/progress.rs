//! The progress line of `tickcast bench`: on a terminal, stderr shows what
//! the run is doing (clients subscribing, warm-up, seconds measured and
//! deliveries so far), rewritten in place twice a second, so a long run is
//! visibly alive. Never with `--json` or when stderr is not a terminal
//! (logs, pipes, tests): the report alone is the output there.
//!
//! It reads only the run's shared counters (relaxed loads) from a thread of
//! its own; the clients and the feeder never wait for it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::tick::now_ns;

/// How often the line is rewritten (the issue asks for at least once a second).
const EVERY: Duration = Duration::from_millis(500);

/// The counters a run shares with its progress line.
#[derive(Clone)]
pub(super) struct Live {
    /// The run's name, as the report heads it.
    pub label: String,
    /// Connections the run opens.
    pub clients: usize,
    /// Connections settled (subscribed, or gone).
    pub ready: Arc<AtomicUsize>,
    /// The measured window, ns (`u64::MAX` until every client settled).
    pub window: (Arc<AtomicU64>, Arc<AtomicU64>),
    /// Deliveries measured so far, over all client threads.
    pub measured: Arc<AtomicU64>,
}

impl Live {
    /// The line at `now` (ns since the epoch).
    fn line(&self, now: u64) -> String {
        let (from, to) = (self.window.0.load(Ordering::Relaxed), self.window.1.load(Ordering::Relaxed));
        let what = if from == u64::MAX {
            format!("subscribing: {} of {} clients settled", self.ready.load(Ordering::Relaxed), self.clients)
        } else if now < from {
            format!("warming up: measuring in {:.1} s", (from - now) as f64 / 1e9)
        } else if now < to {
            format!(
                "measuring: {:.0} of {:.0} s, {} deliveries",
                (now - from) as f64 / 1e9,
                (to - from) as f64 / 1e9,
                self.measured.load(Ordering::Relaxed)
            )
        } else {
            format!("finishing: {} deliveries", self.measured.load(Ordering::Relaxed))
        };
        format!("{}: {what}", self.label)
    }
}

/// The progress line while it is shown; cleared when dropped.
pub(super) struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Show `live` on stderr if `on` (the caller decides: a terminal, not `--json`).
    pub(super) fn start(on: bool, live: Live) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = on.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // `\r` and erase-to-end: the line is rewritten in place.
                    let _ = write!(std::io::stderr(), "\r{}\x1b[K", live.line(now_ns()));
                    std::thread::park_timeout(EVERY);
                }
                let _ = write!(std::io::stderr(), "\r\x1b[K");
            })
        });
        Progress { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_follows_the_run() {
        let live = Live {
            label: "hft json 100000/s".into(),
            clients: 10,
            ready: Arc::new(AtomicUsize::new(3)),
            window: (Arc::new(AtomicU64::new(u64::MAX)), Arc::new(AtomicU64::new(u64::MAX))),
            measured: Arc::new(AtomicU64::new(0)),
        };
        assert_eq!(live.line(0), "hft json 100000/s: subscribing: 3 of 10 clients settled");
        let s = 1_000_000_000;
        live.window.0.store(10 * s, Ordering::Relaxed);
        live.window.1.store(20 * s, Ordering::Relaxed);
        assert_eq!(live.line(8 * s), "hft json 100000/s: warming up: measuring in 2.0 s");
        live.measured.store(1234, Ordering::Relaxed);
        assert_eq!(live.line(13 * s), "hft json 100000/s: measuring: 3 of 10 s, 1234 deliveries");
        assert_eq!(live.line(21 * s), "hft json 100000/s: finishing: 1234 deliveries");
    }
}
