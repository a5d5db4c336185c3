//! Market hours: when the market is open, as a pure function of the time.
//!
//! A [`Schedule`] is `always` (the default: never closes) or daily sessions
//! in a time zone, on chosen weekdays, minus holidays. As a string (the
//! `--market-hours` flag, or `market-hours = "…"` in the config file):
//!
//! ```text
//! always
//! nse                                  09:15-15:30 Asia/Kolkata, Monday to Friday
//! nse;holidays=2026-01-26,2026-03-03   the same, closed on those dates
//! 09:30-16:00@America/New_York;days=mon-fri
//! 09:00-12:00,13:00:30-17:30@+01:00    a fixed UTC offset [default zone: UTC]
//! 22:00-02:00;days=sun-thu             an end before the start crosses midnight
//! ```
//!
//! `SESSIONS[@ZONE][;days=DAYS][;holidays=DATES]`: sessions are
//! `HH:MM[:SS]-HH:MM[:SS]` in local time (an end may be `24:00`); the zone is
//! an IANA name (daylight saving applies; a tz database is bundled) or
//! `±HH:MM`; days are names and ranges (`mon-fri`, `mon,wed,fri`,
//! `fri-mon`) [default: every day]; holidays are `YYYY-MM-DD` dates. `nse`
//! takes the same options (its holiday list is empty unless given: the
//! exchange publishes a new one each year). Or as a table in the file:
//!
//! ```toml
//! [market-hours]
//! preset = "nse"              # optional: start from a preset, override below
//! time-zone = "Asia/Kolkata"  # IANA name or ±HH:MM [default: UTC]
//! sessions = ["09:15-15:30"]
//! weekdays = ["mon-fri"]      # or ["mon", "tue", …] [default: every day]
//! holidays = ["2026-01-26", 2026-03-03]   # strings or TOML dates
//! ```
//!
//! A session belongs to the day it starts on: it does not open on a holiday
//! or an excluded weekday, while the tail of an overnight session that began
//! the day before still runs. Sessions are wall-clock times, so across a DST
//! change a 09:30 open stays 09:30 local; a boundary inside a skipped hour
//! takes effect when the clock jumps past it.
//!
//! Nothing here reads the clock but [`Clock`]: [`Schedule::is_open`] and
//! [`Schedule::next_transition`] take `now_ns`, so tests inject it. As a
//! testing and demo aid, `server::run` evaluates the schedule on the clock
//! named by the `TICKCAST_CLOCK` environment variable (see [`Clock`]).

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{bail, Context, Result};
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

mod clock;

pub use clock::{Clock, Watch};

/// Seconds in a day.
const DAY: i32 = 86_400;

/// Weekday names, Monday first (bit `i` of [`Hours::weekdays`]).
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Every day of the week.
const ALL_DAYS: u8 = 0x7f;

/// How far [`Schedule::next_transition`] looks ahead, in days.
const HORIZON_DAYS: i32 = 400;

/// When the market is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Always open.
    Always,
    /// Daily sessions in a time zone.
    Hours(Hours),
}

/// Daily sessions in a time zone, on some weekdays, minus holidays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hours {
    /// Where the sessions' wall-clock times are.
    pub zone: TimeZone,
    /// The zone as written (`Asia/Kolkata`, `+05:30`, `UTC`).
    pub zone_name: String,
    /// `[start, end)` in local seconds since midnight; `end` may be 86400;
    /// `end < start` crosses midnight.
    pub sessions: Vec<(i32, i32)>,
    /// Bit `i` set: sessions start on weekday `i` (0 = Monday).
    pub weekdays: u8,
    /// Local dates on which no session starts.
    pub holidays: BTreeSet<Date>,
}

/// `--market-hours` as given: a string spec, or (config file only) a table.
#[derive(Clone, Debug, PartialEq)]
pub enum HoursSpec {
    /// `always`, `nse`, `09:15-15:30@Asia/Kolkata;holidays=…` (module docs).
    Spec(String),
    /// `[market-hours]` in the config file.
    Table(HoursTable),
}

/// The `[market-hours]` table of the config file.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HoursTable {
    /// `nse` or `always`, then overridden by the other keys.
    pub preset: Option<String>,
    /// IANA name or `±HH:MM` [default: UTC].
    pub time_zone: Option<String>,
    /// `HH:MM[:SS]-HH:MM[:SS]` each.
    pub sessions: Option<Vec<String>>,
    /// Day names or ranges: `["mon-fri"]`, `["mon", "wed"]`.
    pub weekdays: Option<Vec<String>>,
    /// `YYYY-MM-DD` dates (strings or TOML dates).
    pub holidays: Option<Vec<HolidayDate>>,
}

/// A holiday in the config file: `"2026-01-26"` or a bare TOML date.
#[derive(Clone, Debug, PartialEq)]
pub struct HolidayDate(pub String);

impl<'de> Deserialize<'de> for HolidayDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Str(String),
            Toml(toml::value::Datetime),
        }
        Ok(HolidayDate(match Either::deserialize(d)? {
            Either::Str(s) => s,
            Either::Toml(t) => t.to_string(),
        }))
    }
}

impl std::str::FromStr for HoursSpec {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(HoursSpec::Spec(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for HoursSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HoursSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a spec like \"nse\" or a table with time-zone, sessions, weekdays, holidays")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<HoursSpec, E> {
                Ok(HoursSpec::Spec(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> std::result::Result<HoursSpec, A::Error> {
                HoursTable::deserialize(de::value::MapAccessDeserializer::new(m)).map(HoursSpec::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// `HH:MM[:SS]` as seconds since midnight; `24:00` only if `end`.
fn parse_hms(s: &str, end: bool) -> Option<i32> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let num = |p: &str| (p.len() == 2).then(|| p.parse::<i32>().ok()).flatten();
    let (h, m, sec) = match parts.as_slice() {
        [h, m] => (num(h)?, num(m)?, 0),
        [h, m, s] => (num(h)?, num(m)?, num(s)?),
        _ => return None,
    };
    if end && (h, m, sec) == (24, 0, 0) {
        return Some(DAY);
    }
    ((0..24).contains(&h) && (0..60).contains(&m) && (0..60).contains(&sec)).then_some(h * 3600 + m * 60 + sec)
}

fn fmt_hms(secs: i32) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if s == 0 {
        format!("{h:02}:{m:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// `±HH:MM` as seconds east of UTC.
fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    // Digits only: `parse` alone takes a sign (`+5:-80000001` overflowed).
    let digits = |d: &str, len| d.len() == len && d.bytes().all(|b| b.is_ascii_digit());
    if !(digits(h, 1) || digits(h, 2)) || !digits(m, 2) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// An IANA name or `±HH:MM`.
fn parse_zone(s: &str) -> Result<TimeZone> {
    let s = s.trim();
    if s.starts_with(['+', '-']) {
        let secs = parse_offset(s).with_context(|| format!("`{s}` is not an offset like +05:30"))?;
        return Ok(TimeZone::fixed(Offset::from_seconds(secs)?));
    }
    iana(s).with_context(|| format!("unknown time zone `{s}` (IANA names like Asia/Kolkata, or +05:30)"))
}

/// An IANA zone from the system's tz database, else from the bundled copy
/// (machines without `/usr/share/zoneinfo`).
fn iana(name: &str) -> Result<TimeZone> {
    TimeZone::get(name).or_else(|_| jiff::tz::TimeZoneDatabase::bundled().get(name)).map_err(Into::into)
}

fn parse_sessions<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Vec<(i32, i32)>> {
    let mut out = Vec::new();
    for part in items.into_iter().flat_map(|s| s.split(',')) {
        let bad = || format!("`{part}` is not a session like 09:15-15:30");
        let (a, b) = part.split_once('-').with_context(bad)?;
        let (a, b) = (parse_hms(a, false).with_context(bad)?, parse_hms(b, true).with_context(bad)?);
        if a == b {
            bail!("session `{part}` starts and ends at the same time");
        }
        out.push((a, b));
    }
    if out.is_empty() {
        bail!("no sessions");
    }
    Ok(out)
}

fn parse_day(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_lowercase();
    const FULL: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    (0..7u8).find(|&i| s == DAYS[i as usize] || s == FULL[i as usize])
}

/// Day names and ranges (`mon-fri`, `fri-mon` wraps) as a weekday mask.
fn parse_days<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<u8> {
    let mut mask = 0u8;
    for part in items.into_iter().flat_map(|s| s.split(',')) {
        let bad = || format!("`{part}` is not a weekday or a range like mon-fri");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_day(a).with_context(bad)?, parse_day(b).with_context(bad)?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => mask |= 1 << parse_day(part).with_context(bad)?,
        }
    }
    if mask == 0 {
        bail!("no weekdays");
    }
    Ok(mask)
}

/// A weekday mask as names and ranges; a run through Sunday wraps (`sun-thu`).
fn fmt_days(mask: u8) -> String {
    let on = |d: usize| mask & (1 << (d % 7)) != 0;
    if mask & ALL_DAYS == ALL_DAYS {
        return "mon-sun".into();
    }
    // Start at the first day that begins a run.
    let Some(first) = (0..7).find(|&d| on(d) && !on(d + 6)) else { return String::new() };
    let mut out: Vec<String> = Vec::new();
    let mut d = first;
    while d < first + 7 {
        if !on(d) {
            d += 1;
            continue;
        }
        let start = d;
        while d + 1 < first + 7 && on(d + 1) {
            d += 1;
        }
        let (a, b) = (DAYS[start % 7], DAYS[d % 7]);
        out.push(match d - start {
            0 => a.to_string(),
            1 => format!("{a},{b}"),
            _ => format!("{a}-{b}"),
        });
        d += 1;
    }
    out.join(",")
}

fn parse_holidays<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<BTreeSet<Date>> {
    let mut out = BTreeSet::new();
    for d in items.into_iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || format!("`{d}` is not a date like 2026-01-26");
        if d.len() != 10 {
            bail!(bad());
        }
        out.insert(d.parse::<Date>().ok().with_context(bad)?);
    }
    Ok(out)
}

/// ns since the epoch → timestamp (every `u64` is in jiff's range).
fn ts(now_ns: u64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(now_ns)).unwrap_or(Timestamp::MAX)
}

/// Timestamp → ns since the epoch, clamped to `u64`.
fn ns(t: Timestamp) -> u64 {
    t.as_nanosecond().clamp(0, i128::from(u64::MAX)) as u64
}

impl Hours {
    /// Do sessions start on `date`?
    fn trading_day(&self, date: Date) -> bool {
        self.weekdays & (1 << date.weekday().to_monday_zero_offset()) != 0 && !self.holidays.contains(&date)
    }

    fn is_open_at(&self, t: Timestamp) -> bool {
        let local = self.zone.to_datetime(t);
        let (day, tm) = (local.date(), local.time());
        let secs = i32::from(tm.hour()) * 3600 + i32::from(tm.minute()) * 60 + i32::from(tm.second());
        self.sessions.iter().any(|&(start, end)| {
            if start < end {
                secs >= start && secs < end && self.trading_day(day)
            } else if secs >= start {
                self.trading_day(day)
            } else {
                // The tail of yesterday's overnight session.
                secs < end && day.yesterday().is_ok_and(|y| self.trading_day(y))
            }
        })
    }

    /// Every instant at which `is_open_at` may change, in `(after, until)`:
    /// each instant whose local time is a session boundary, plus the
    /// zone's transitions (a jump can cross a boundary).
    fn boundaries(&self, after: Timestamp, days: i32) -> Vec<Timestamp> {
        let first = self.zone.to_datetime(after).date().yesterday().unwrap_or(Date::MIN);
        let mut out = Vec::new();
        let mut day = first;
        for _ in 0..days + 2 {
            for &(start, end) in &self.sessions {
                for (secs, next_day) in [(start, false), (end % DAY, end >= DAY || end < start)] {
                    let date = if next_day { day.tomorrow().unwrap_or(Date::MAX) } else { day };
                    let time = Time::new((secs / 3600) as i8, (secs / 60 % 60) as i8, (secs % 60) as i8, 0)
                        .unwrap_or(Time::MIN);
                    let amb = self.zone.to_ambiguous_timestamp(DateTime::from_parts(date, time));
                    out.extend(amb.earlier().ok());
                    out.extend(amb.later().ok());
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        let until = out.iter().copied().max().unwrap_or(after);
        out.extend(self.zone.following(after).map(|t| t.timestamp()).take_while(|&t| t <= until));
        out.retain(|&t| t > after);
        out.sort();
        out.dedup();
        out
    }
}

impl Schedule {
    /// The NSE cash session: 09:15–15:30 Asia/Kolkata, Monday to Friday,
    /// no holidays (give them with `nse;holidays=…`).
    pub fn nse() -> Schedule {
        Schedule::Hours(Hours {
            zone: TimeZone::fixed(Offset::from_seconds(5 * 3600 + 1800).expect("IST is a valid offset")),
            zone_name: "Asia/Kolkata".into(),
            sessions: vec![(9 * 3600 + 15 * 60, 15 * 3600 + 30 * 60)],
            weekdays: 0b1_1111,
            holidays: BTreeSet::new(),
        })
        .with_iana_zone()
    }

    /// Use the tz database's zone for `zone_name` when there is one (the
    /// fixed offset above stays if not: IST has had no DST since 1945).
    fn with_iana_zone(mut self) -> Schedule {
        if let Schedule::Hours(h) = &mut self {
            if let Ok(z) = iana(&h.zone_name) {
                h.zone = z;
            }
        }
        self
    }

    /// Parse a string spec (module docs).
    ///
    /// # Errors
    /// Anything else, quoting `spec` and naming the accepted forms (the
    /// caller names where the spec came from: `--market-hours`, a file).
    pub fn parse(spec: &str) -> Result<Schedule> {
        Schedule::parse_inner(spec).with_context(|| {
            format!("`{spec}`: expected `always`, `nse[;holidays=YYYY-MM-DD,…]`, or sessions like `09:15-15:30@Asia/Kolkata[;days=mon-fri][;holidays=…]`")
        })
    }

    fn parse_inner(spec: &str) -> Result<Schedule> {
        let mut parts = spec.trim().split(';');
        let base = parts.next().unwrap_or_default().trim();
        let mut hours = match base {
            "always" => {
                if let Some(opt) = parts.next() {
                    bail!("`always` takes no options, got `{opt}`");
                }
                return Ok(Schedule::Always);
            }
            "nse" => match Schedule::nse() {
                Schedule::Hours(h) => h,
                Schedule::Always => unreachable!("nse has hours"),
            },
            _ => {
                let (list, zone) = base.split_once('@').unwrap_or((base, "UTC"));
                Hours {
                    zone: parse_zone(zone)?,
                    zone_name: zone.trim().to_string(),
                    sessions: parse_sessions([list])?,
                    weekdays: ALL_DAYS,
                    holidays: BTreeSet::new(),
                }
            }
        };
        for opt in parts.map(str::trim).filter(|s| !s.is_empty()) {
            match opt.split_once('=') {
                Some(("days", v)) => hours.weekdays = parse_days([v])?,
                Some(("holidays", v)) => hours.holidays = parse_holidays([v])?,
                _ => bail!("unknown option `{opt}` (options: `days=mon-fri`, `holidays=2026-01-26,…`)"),
            }
        }
        Ok(Schedule::Hours(hours))
    }

    /// The `[market-hours]` table of the config file.
    ///
    /// # Errors
    /// A bad or missing value, naming the key within the table (the caller
    /// names the file).
    pub fn from_table(t: &HoursTable) -> Result<Schedule> {
        let ctx = "[market-hours]";
        let mut hours = match t.preset.as_deref() {
            None => None,
            Some("nse") => match Schedule::nse() {
                Schedule::Hours(h) => Some(h),
                Schedule::Always => None,
            },
            Some("always") => {
                if t.time_zone.is_some() || t.sessions.is_some() || t.weekdays.is_some() || t.holidays.is_some() {
                    bail!("{ctx}: preset `always` takes no other keys");
                }
                return Ok(Schedule::Always);
            }
            Some(p) => bail!("{ctx}: preset `{p}`: expected `nse` or `always`"),
        };
        let zone_name = t.time_zone.clone().or_else(|| hours.as_ref().map(|h| h.zone_name.clone()));
        let zone_name = zone_name.unwrap_or_else(|| "UTC".into());
        let sessions = match (&t.sessions, &hours) {
            (Some(s), _) => parse_sessions(s.iter().map(String::as_str)).with_context(|| format!("{ctx}: sessions"))?,
            (None, Some(h)) => h.sessions.clone(),
            (None, None) => bail!("{ctx}: needs `sessions = [\"09:15-15:30\"]` (or `preset = \"nse\"`)"),
        };
        let h = hours.get_or_insert_with(|| Hours {
            zone: TimeZone::UTC,
            zone_name: String::new(),
            sessions: Vec::new(),
            weekdays: ALL_DAYS,
            holidays: BTreeSet::new(),
        });
        h.zone = parse_zone(&zone_name).with_context(|| format!("{ctx}: time-zone"))?;
        h.zone_name = zone_name.trim().to_string();
        h.sessions = sessions;
        if let Some(days) = &t.weekdays {
            h.weekdays = parse_days(days.iter().map(String::as_str)).with_context(|| format!("{ctx}: weekdays"))?;
        }
        if let Some(list) = &t.holidays {
            h.holidays =
                parse_holidays(list.iter().map(|d| d.0.as_str())).with_context(|| format!("{ctx}: holidays"))?;
        }
        Ok(Schedule::Hours(hours.expect("set above")))
    }

    /// The configured value, or `always` when there is none.
    ///
    /// # Errors
    /// See [`Schedule::parse`] and [`Schedule::from_table`].
    pub fn from_spec(spec: Option<&HoursSpec>) -> Result<Schedule> {
        match spec {
            None => Ok(Schedule::Always),
            Some(HoursSpec::Spec(s)) => Schedule::parse(s),
            Some(HoursSpec::Table(t)) => Schedule::from_table(t),
        }
    }

    /// Is the market open at `now_ns` (ns since the Unix epoch)?
    pub fn is_open(&self, now_ns: u64) -> bool {
        match self {
            Schedule::Always => true,
            Schedule::Hours(h) => h.is_open_at(ts(now_ns)),
        }
    }

    /// The first instant after `now_ns` at which the market opens or
    /// closes (ns since the epoch); `None` if never (`always`, or not
    /// within about a year).
    pub fn next_transition(&self, now_ns: u64) -> Option<u64> {
        let Schedule::Hours(h) = self else { return None };
        let now = ts(now_ns);
        let open = h.is_open_at(now);
        h.boundaries(now, HORIZON_DAYS).into_iter().find(|&t| h.is_open_at(t) != open).map(ns)
    }

    /// `now_ns` as a local date-time in the schedule's zone, for logs.
    pub fn local(&self, now_ns: u64) -> String {
        match self {
            Schedule::Always => ts(now_ns).to_string(),
            Schedule::Hours(h) => ts(now_ns).to_zoned(h.zone.clone()).strftime("%a %Y-%m-%d %H:%M:%S %:z").to_string(),
        }
    }
}

/// The string form: `parse(&s.to_string()) == s`.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let Schedule::Hours(h) = self else { return f.write_str("always") };
        let sessions: Vec<String> = h.sessions.iter().map(|&(a, b)| format!("{}-{}", fmt_hms(a), fmt_hms(b))).collect();
        write!(f, "{}@{}", sessions.join(","), h.zone_name)?;
        if h.weekdays != ALL_DAYS {
            write!(f, ";days={}", fmt_days(h.weekdays))?;
        }
        if !h.holidays.is_empty() {
            let days: Vec<String> = h.holidays.iter().map(Date::to_string).collect();
            write!(f, ";holidays={}", days.join(","))?;
        }
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::clock::parse_time;
    use super::*;

    /// ns at an RFC 3339 time.
    fn at(s: &str) -> u64 {
        parse_time(s).unwrap()
    }

    fn check(schedule: &Schedule, cases: &[(&str, bool)]) {
        for &(t, open) in cases {
            assert_eq!(schedule.is_open(at(t)), open, "{schedule} at {t}");
        }
    }

    fn next(schedule: &Schedule, from: &str) -> Option<String> {
        schedule.next_transition(at(from)).map(|t| ts(t).to_string())
    }

    #[test]
    fn nse_hours_with_an_injected_clock() {
        let nse = Schedule::parse("nse").unwrap();
        assert_eq!(nse, Schedule::nse());
        assert_eq!(nse.to_string(), "09:15-15:30@Asia/Kolkata;days=mon-fri");
        // 2025-01-01 was a Wednesday.
        check(
            &nse,
            &[
                ("2025-01-01T09:14:59+05:30", false),
                ("2025-01-01T09:15:00+05:30", true),
                ("2025-01-01T03:45:00Z", true),
                ("2025-01-01T15:29:59+05:30", true),
                ("2025-01-01T15:30:00+05:30", false),
                ("2025-01-04T11:00:00+05:30", false), // Saturday
                ("2025-01-05T11:00:00+05:30", false), // Sunday
                ("2025-01-06T11:00:00+05:30", true),
            ],
        );
        assert_eq!(next(&nse, "2025-01-01T12:00:00+05:30").as_deref(), Some("2025-01-01T10:00:00Z"));
        // Friday after the close: Monday's open.
        assert_eq!(next(&nse, "2025-01-03T15:30:00+05:30").as_deref(), Some("2025-01-06T03:45:00Z"));
    }

    #[test]
    fn holidays_close_whole_days() {
        let s = Schedule::parse("nse;holidays=2026-01-26,2026-03-03").unwrap();
        check(
            &s,
            &[
                ("2026-01-23T10:00:00+05:30", true),  // Friday
                ("2026-01-26T10:00:00+05:30", false), // Monday, Republic Day
                ("2026-01-27T10:00:00+05:30", true),
                ("2026-03-03T10:00:00+05:30", false),
            ],
        );
        assert_eq!(next(&s, "2026-01-23T15:30:00+05:30").as_deref(), Some("2026-01-27T03:45:00Z"));
        // An overnight session belongs to the day it starts.
        let night = Schedule::parse("22:00-02:00;days=mon-fri;holidays=2026-01-07").unwrap();
        check(
            &night,
            &[
                ("2026-01-05T23:00:00Z", true),  // Monday night
                ("2026-01-06T01:00:00Z", true),  // its tail, Tuesday
                ("2026-01-07T23:00:00Z", false), // the holiday's night
                ("2026-01-08T01:00:00Z", false),
                ("2026-01-09T23:00:00Z", true),  // Friday night
                ("2026-01-10T01:30:00Z", true),  // ... into Saturday
                ("2026-01-10T23:00:00Z", false), // Saturday night
                ("2026-01-12T01:00:00Z", false), // Sunday night's tail
            ],
        );
        assert_eq!(next(&night, "2026-01-07T12:00:00Z").as_deref(), Some("2026-01-08T22:00:00Z"));
    }

    #[test]
    fn daylight_saving_moves_the_utc_hours() {
        let nyse = Schedule::parse("09:30-16:00@America/New_York;days=mon-fri").unwrap();
        check(
            &nyse,
            &[
                ("2025-03-07T14:30:00Z", true), // Friday 09:30 EST
                ("2025-03-07T14:29:59Z", false),
                ("2025-03-10T13:30:00Z", true), // Monday 09:30 EDT
                ("2025-03-10T13:29:59Z", false),
                ("2025-03-10T19:59:59Z", true),
                ("2025-03-10T20:00:00Z", false),
                ("2025-11-03T14:30:00Z", true), // Monday 09:30 EST again
                ("2025-11-03T13:30:00Z", false),
            ],
        );
        // Friday's close (EST) to Monday's open (EDT), across the change.
        assert_eq!(next(&nyse, "2025-03-07T21:00:00Z").as_deref(), Some("2025-03-10T13:30:00Z"));
        // A session starting in the skipped hour (02:00→03:00 on 2025-03-09)
        // opens when the clock jumps.
        let gap = Schedule::parse("02:30-03:30@America/New_York").unwrap();
        assert!(!gap.is_open(at("2025-03-09T06:59:59Z")) && gap.is_open(at("2025-03-09T07:00:00Z")));
        assert_eq!(next(&gap, "2025-03-09T06:00:00Z").as_deref(), Some("2025-03-09T07:00:00Z"));
        assert_eq!(next(&gap, "2025-03-09T07:00:00Z").as_deref(), Some("2025-03-09T07:30:00Z"));
        // In the repeated hour (01:00–02:00 on 2025-11-02) 01:30 happens twice.
        let fold = Schedule::parse("01:30-01:45@America/New_York").unwrap();
        assert!(fold.is_open(at("2025-11-02T05:30:00Z")) && fold.is_open(at("2025-11-02T06:30:00Z")));
        assert_eq!(next(&fold, "2025-11-02T05:50:00Z").as_deref(), Some("2025-11-02T06:30:00Z"));
    }

    #[test]
    fn custom_sessions_offsets_and_midnight() {
        let s = Schedule::parse("09:00-12:00,13:00:30-17:30@+01:00").unwrap();
        check(
            &s,
            &[
                ("2025-01-01T08:00:00Z", true),
                ("2025-01-01T11:30:00Z", false),
                ("2025-01-01T12:00:00Z", false),
                ("2025-01-01T12:00:30Z", true),
                ("2025-01-04T08:00:00Z", true), // every day by default
            ],
        );
        assert_eq!(next(&s, "2025-01-01T11:00:00Z").as_deref(), Some("2025-01-01T12:00:30Z"));
        let night = Schedule::parse("22:00-02:00").unwrap();
        check(
            &night,
            &[("2025-01-01T23:00:00Z", true), ("2025-01-02T01:00:00Z", true), ("2025-01-02T03:00:00Z", false)],
        );
        let whole = Schedule::parse("00:00-24:00@Asia/Kolkata;days=sat,sun").unwrap();
        check(
            &whole,
            &[
                ("2026-01-03T00:00:00+05:30", true),
                ("2026-01-04T23:59:59+05:30", true),
                ("2026-01-05T00:00:00+05:30", false),
            ],
        );
        assert_eq!(next(&whole, "2026-01-03T12:00:00+05:30").as_deref(), Some("2026-01-04T18:30:00Z"));
        assert!(Schedule::Always.is_open(0));
        assert_eq!(Schedule::Always.next_transition(0), None);
    }

    /// Found by the `market_hours` fuzz target: a signed minute count
    /// overflowed (a panic with overflow checks, a wrong zone without).
    #[test]
    fn offsets_are_digits_only() {
        for bad in ["+5:-80000001", "+-5:00", "++05:30", "+05:+3", "+05:3", "+123:00", "+15:00", "+05:60", "+:30"] {
            assert!(Schedule::parse(&format!("09:00-10:00@{bad}")).is_err(), "{bad}");
        }
        assert!(Schedule::parse("09:00-10:00@-14:00").is_ok());
    }

    #[test]
    fn the_tz_database_is_bundled() {
        let db = jiff::tz::TimeZoneDatabase::bundled();
        for zone in ["Asia/Kolkata", "America/New_York", "Europe/London", "UTC"] {
            assert!(db.get(zone).is_ok(), "{zone}");
        }
    }

    #[test]
    fn the_string_form_round_trips() {
        for spec in [
            "always",
            "09:15-15:30@Asia/Kolkata;days=mon-fri",
            "09:00-12:00,13:00:30-17:30@+01:00",
            "22:00-02:00@UTC;days=sun-thu;holidays=2026-01-01,2026-12-25",
            "00:00-24:00@Europe/London;days=mon,wed,fri",
            "10:00-11:00@-03:30;days=sat,sun",
        ] {
            let s = Schedule::parse(spec).unwrap();
            assert_eq!(s.to_string(), spec);
            assert_eq!(Schedule::parse(&s.to_string()).unwrap(), s);
        }
        let wrap = Schedule::parse("10:00-11:00;days=fri-mon").unwrap();
        assert_eq!(wrap.to_string(), "10:00-11:00@UTC;days=fri-mon");
        let odd = Schedule::parse("10:00-11:00;days=sun,mon,wed").unwrap();
        assert_eq!(Schedule::parse("10:00-11:00@+5:30").unwrap().to_string(), "10:00-11:00@+5:30");
        assert_eq!(odd.to_string(), "10:00-11:00@UTC;days=wed,sun,mon");
    }

    #[test]
    fn bad_specs_say_what_is_accepted() {
        let cases = [
            ("sometimes", "not a session"),
            ("9-17", "not a session"),
            ("09:00-25:00", "not a session"),
            ("09:00-17:00@IST", "unknown time zone `IST`"),
            ("09:00-17:00@Mars/Olympus", "unknown time zone"),
            ("10:00-10:00", "same time"),
            ("always;days=mon", "takes no options"),
            ("nse;days=funday", "not a weekday"),
            ("nse;holidays=26-01-2026", "not a date"),
            ("nse;holidays=2026-02-30", "not a date"),
            ("nse;hours=1", "unknown option"),
        ];
        for (spec, why) in cases {
            let err = format!("{:#}", Schedule::parse(spec).unwrap_err());
            assert!(err.contains(&format!("`{spec}`: expected")) && err.contains(why), "{spec}: {err}");
        }
    }

    #[derive(Deserialize)]
    struct File {
        #[serde(rename = "market-hours")]
        market_hours: HoursSpec,
    }

    fn from_toml(text: &str) -> Result<Schedule> {
        let f: File = toml::from_str(text)?;
        Schedule::from_spec(Some(&f.market_hours))
    }

    #[test]
    fn the_config_file_takes_a_string_or_a_table() {
        assert_eq!(from_toml("market-hours = \"nse\"").unwrap(), Schedule::nse());
        let table = r#"
            [market-hours]
            time-zone = "Asia/Kolkata"
            sessions = ["09:15-15:30"]
            weekdays = ["mon", "tue", "wed", "thu", "fri"]
            holidays = ["2026-01-26", 2026-03-03]
        "#;
        let s = from_toml(table).unwrap();
        assert_eq!(s, Schedule::parse("nse;holidays=2026-01-26,2026-03-03").unwrap());
        let preset = "[market-hours]\npreset = \"nse\"\nholidays = [\"2026-01-26\"]\n";
        assert_eq!(from_toml(preset).unwrap(), Schedule::parse("nse;holidays=2026-01-26").unwrap());
        let utc = from_toml("[market-hours]\nsessions = [\"22:00-02:00\"]\n").unwrap();
        assert_eq!(utc.to_string(), "22:00-02:00@UTC");
        let bad = [
            ("[market-hours]\ntimezone = \"UTC\"\n", "unknown field `timezone`"),
            ("[market-hours]\ntime-zone = \"UTC\"\n", "needs `sessions"),
            ("[market-hours]\npreset = \"lse\"\n", "preset `lse`"),
            ("[market-hours]\nsessions = [\"9-5\"]\n", "sessions"),
            ("[market-hours]\npreset = \"nse\"\nweekdays = []\n", "no weekdays"),
            ("[market-hours]\npreset = \"nse\"\ntime-zone = \"Nowhere/Town\"\n", "time-zone"),
        ];
        for (text, why) in bad {
            let err = format!("{:#}", from_toml(text).unwrap_err());
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn injected_clocks() {
        let real = at("2026-01-01T00:00:00Z");
        let Clock::Shifted(by) = Clock::parse("2026-01-05T15:29:50+05:30", real).unwrap() else { panic!("shifted") };
        assert_eq!(by, i128::from(at("2026-01-05T09:59:50Z") - real));
        assert!(matches!(Clock::parse("1767607190", real), Ok(Clock::Shifted(_))));
        assert!(Clock::parse("yesterday", real).is_err());
        let path = std::env::temp_dir().join(format!("tickcast-clock-{}", std::process::id()));
        std::fs::write(&path, "2026-01-05T09:15:00+05:30\n").unwrap();
        let mut clock = Clock::parse(&format!("@{}", path.display()), real).unwrap();
        assert_eq!(clock.now_ns(), at("2026-01-05T03:45:00Z"));
        std::fs::write(&path, "garbled").unwrap();
        assert_eq!(clock.now_ns(), at("2026-01-05T03:45:00Z"), "keeps the last good time");
        std::fs::write(&path, "1767607200").unwrap();
        assert_eq!(clock.now_ns(), 1_767_607_200_000_000_000);
        let flag = AtomicBool::new(true);
        let mut watch = Watch::new(Schedule::nse(), clock);
        assert!(!watch.update(&flag) && !flag.load(Ordering::Relaxed), "15:30 IST: closed");
        std::fs::write(&path, "2026-01-06T09:15:00+05:30").unwrap();
        assert!(watch.update(&flag) && flag.load(Ordering::Relaxed));
        std::fs::remove_file(&path).unwrap();
        assert!(Clock::parse(&format!("@{}", path.display()), real).is_err());
    }
}
