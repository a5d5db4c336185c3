//! The one clock market hours read ([`Clock`]: the system's, shifted, or a
//! file a test rewrites) and the [`Watch`] that keeps the `market_open`
//! flag in step with the schedule.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use jiff::Timestamp;

use super::Schedule;

/// The time the schedule is evaluated at. Normally the system clock; as a
/// testing and demo aid, the `TICKCAST_CLOCK` environment variable sets it:
///
/// - `TICKCAST_CLOCK=2026-01-05T15:29:50+05:30` (RFC 3339, or Unix seconds
///   like `1767607190`): the clock reads that at start and runs at real
///   speed from there.
/// - `TICKCAST_CLOCK=@/path/to/file`: the clock is the time written in the
///   file (same forms), re-read on every evaluation; it stands still
///   between writes, so a test drives open and close by rewriting the file
///   (write a temporary file and rename it; unreadable contents keep the
///   previous time).
///
/// Only market hours use it: tick, heartbeat and latency timestamps stay real.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The system clock.
    System,
    /// The system clock shifted by this many ns.
    Shifted(i128),
    /// The time in a file.
    File {
        /// The file.
        path: PathBuf,
        /// The last time read from it.
        last_ns: u64,
    },
}

/// A time as Unix seconds or an RFC 3339 timestamp.
pub(super) fn parse_time(s: &str) -> Result<u64> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return secs.checked_mul(1_000_000_000).context("time out of range");
    }
    let t: Timestamp =
        s.parse().with_context(|| format!("`{s}` is neither Unix seconds nor like 2026-01-05T09:15:00+05:30"))?;
    u64::try_from(t.as_nanosecond()).ok().context("time before 1970")
}

impl Clock {
    /// The environment variable [`Clock::from_env`] reads.
    pub const ENV: &'static str = "TICKCAST_CLOCK";

    /// The clock `TICKCAST_CLOCK` names; [`Clock::System`] when unset.
    ///
    /// # Errors
    /// A value that is not a time or `@FILE` with a time in it.
    pub fn from_env() -> Result<Clock> {
        match std::env::var(Clock::ENV) {
            Ok(v) => Clock::parse(&v, crate::tick::now_ns()).with_context(|| format!("{}=`{v}`", Clock::ENV)),
            Err(_) => Ok(Clock::System),
        }
    }

    /// A clock from a `TICKCAST_CLOCK` value, with the real time `real_ns`.
    ///
    /// # Errors
    /// See [`Clock::from_env`].
    pub fn parse(spec: &str, real_ns: u64) -> Result<Clock> {
        match spec.strip_prefix('@') {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
                Ok(Clock::File { path: path.into(), last_ns: parse_time(&text)? })
            }
            None => Ok(Clock::Shifted(i128::from(parse_time(spec)?) - i128::from(real_ns))),
        }
    }

    /// Now, ns since the epoch.
    pub fn now_ns(&mut self) -> u64 {
        match self {
            Clock::System => crate::tick::now_ns(),
            Clock::Shifted(by) => (i128::from(crate::tick::now_ns()) + *by).clamp(0, i128::from(u64::MAX)) as u64,
            Clock::File { path, last_ns } => {
                if let Some(t) = std::fs::read_to_string(&*path).ok().and_then(|s| parse_time(&s).ok()) {
                    *last_ns = t;
                }
                *last_ns
            }
        }
    }
}

/// Keeps a `market_open` flag in step with a schedule and logs each change.
pub struct Watch {
    schedule: Schedule,
    clock: Clock,
    open: Option<bool>,
}

impl Watch {
    /// Watch `schedule` on `clock`.
    pub fn new(schedule: Schedule, clock: Clock) -> Watch {
        Watch { schedule, clock, open: None }
    }

    /// Evaluate the schedule now and store the result in `flag`; returns it.
    pub fn update(&mut self, flag: &AtomicBool) -> bool {
        let now = self.clock.now_ns();
        let open = self.schedule.is_open(now);
        // Release: pairs with the Acquire loads of the feeds and workers.
        flag.store(open, Ordering::Release);
        if self.open != Some(open) {
            let state = if open { "open" } else { "closed" };
            let next = match self.schedule.next_transition(now) {
                Some(t) => format!("; {} at {}", if open { "closes" } else { "opens" }, self.schedule.local(t)),
                None => String::new(),
            };
            match self.open {
                None if self.schedule == Schedule::Always => log::info!("market hours: always open"),
                None => log::info!("market hours {}: {state} at {}{next}", self.schedule, self.schedule.local(now)),
                Some(_) => log::info!("market {state}{next}"),
            }
            self.open = Some(open);
        }
        open
    }
}
