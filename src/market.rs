//! Market hours: when the market is open, as a pure function of the time.
//!
//! `always` (the default) never closes. `nse` is 09:15–15:30 at UTC+05:30,
//! Monday to Friday. A custom schedule is a list of daily sessions at a
//! fixed UTC offset: `09:00-12:00,13:00-17:30@+01:00` (seconds allowed:
//! `09:00:30`); a session whose end is before its start crosses midnight.
//! Nothing here reads the clock: callers pass `now_ns`, so tests inject it.

use anyhow::{bail, Context, Result};

/// Seconds in a day.
const DAY: i64 = 86_400;

/// When the market is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Always open.
    Always,
    /// Daily sessions at a fixed offset from UTC.
    Sessions {
        /// Local time = UTC + this many seconds.
        offset_secs: i64,
        /// Only Monday to Friday (local).
        weekdays_only: bool,
        /// `[start, end)` in local seconds since midnight.
        sessions: Vec<(i64, i64)>,
    },
}

fn parse_hms(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let (h, m, sec) = match parts.as_slice() {
        [h, m] => (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?, 0),
        [h, m, s] => (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?, s.parse::<i64>().ok()?),
        _ => return None,
    };
    ((0..24).contains(&h) && (0..60).contains(&m) && (0..60).contains(&sec)).then_some(h * 3600 + m * 60 + sec)
}

fn parse_offset(s: &str) -> Option<i64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

impl Schedule {
    /// The NSE cash session: 09:15–15:30 IST, Monday to Friday.
    pub fn nse() -> Schedule {
        Schedule::Sessions {
            offset_secs: 5 * 3600 + 1800,
            weekdays_only: true,
            sessions: vec![(9 * 3600 + 15 * 60, 15 * 3600 + 30 * 60)],
        }
    }

    /// Parse `always`, `nse`, or `HH:MM[:SS]-HH:MM[:SS][,…][@±HH:MM]`.
    ///
    /// # Errors
    /// Anything else, with the accepted forms.
    pub fn parse(spec: &str) -> Result<Schedule> {
        match spec {
            "always" => return Ok(Schedule::Always),
            "nse" => return Ok(Schedule::nse()),
            _ => {}
        }
        let help =
            || format!("--market-hours `{spec}`: expected `always`, `nse`, or sessions like `09:15-15:30@+05:30`");
        let (list, offset) = spec.split_once('@').unwrap_or((spec, "+00:00"));
        let offset_secs = parse_offset(offset).with_context(help)?;
        let mut sessions = Vec::new();
        for part in list.split(',') {
            let (a, b) = part.split_once('-').with_context(help)?;
            let (a, b) = (parse_hms(a).with_context(help)?, parse_hms(b).with_context(help)?);
            if a == b {
                bail!("{}: a session cannot start and end at the same time", help());
            }
            sessions.push((a, b));
        }
        Ok(Schedule::Sessions { offset_secs, weekdays_only: false, sessions })
    }

    /// Is the market open at `now_ns` (ns since the Unix epoch)?
    pub fn is_open(&self, now_ns: u64) -> bool {
        let Schedule::Sessions { offset_secs, weekdays_only, sessions } = self else { return true };
        let local = (now_ns / 1_000_000_000) as i64 + offset_secs;
        let (day, secs) = (local.div_euclid(DAY), local.rem_euclid(DAY));
        // 1970-01-01 was a Thursday: weekday 0 = Monday.
        let weekday = |d: i64| (d + 3).rem_euclid(7);
        sessions.iter().any(|&(start, end)| {
            let (in_session, session_day) = if start < end {
                (secs >= start && secs < end, day)
            } else if secs >= start {
                (true, day)
            } else {
                (secs < end, day - 1) // the tail of yesterday's overnight session
            };
            in_session && (!weekdays_only || weekday(session_day) < 5)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ns at a UTC date-time (days since epoch computed by hand for 2025).
    fn utc(day_of_2025: i64, h: i64, m: i64) -> u64 {
        let jan1_2025 = 20_089; // days from 1970-01-01 to 2025-01-01
        (((jan1_2025 + day_of_2025) * DAY + h * 3600 + m * 60) * 1_000_000_000) as u64
    }

    #[test]
    fn nse_hours_with_an_injected_clock() {
        let nse = Schedule::nse();
        // 2025-01-01 was a Wednesday; 09:15 IST = 03:45 UTC, 15:30 IST = 10:00 UTC.
        let cases = [
            ("Wed 09:14 IST", utc(0, 3, 44), false),
            ("Wed 09:15 IST", utc(0, 3, 45), true),
            ("Wed 15:29 IST", utc(0, 9, 59), true),
            ("Wed 15:30 IST", utc(0, 10, 0), false),
            ("Sat 11:00 IST", utc(3, 5, 30), false),
            ("Sun 11:00 IST", utc(4, 5, 30), false),
            ("Mon 11:00 IST", utc(5, 5, 30), true),
        ];
        for (label, t, open) in cases {
            assert_eq!(nse.is_open(t), open, "{label}");
        }
    }

    #[test]
    fn custom_sessions_offsets_and_midnight() {
        let s = Schedule::parse("09:00-12:00,13:00:30-17:30@+01:00").unwrap();
        assert!(s.is_open(utc(0, 8, 0)), "09:00 local");
        assert!(!s.is_open(utc(0, 11, 30)), "12:30 local: lunch");
        assert!(!s.is_open(utc(0, 12, 0)), "13:00:00 local: not yet");
        assert!(s.is_open(utc(0, 12, 1)), "13:01 local");
        let night = Schedule::parse("22:00-02:00").unwrap();
        assert!(night.is_open(utc(0, 23, 0)) && night.is_open(utc(1, 1, 0)) && !night.is_open(utc(1, 3, 0)));
        assert!(Schedule::Always.is_open(0));
    }

    #[test]
    fn bad_specs_say_what_is_accepted() {
        for spec in ["sometimes", "9-17", "09:00-25:00", "09:00-17:00@IST", "10:00-10:00"] {
            let err = Schedule::parse(spec).unwrap_err();
            assert!(format!("{err:#}").contains("--market-hours"), "{spec}: {err:#}");
        }
    }
}
