//! What `tickcast bench` shows: one [`Report`] per measured run, rendered as the human table
//! ([`Report::table`]), as JSON ([`Report::json`]), as warnings a reader must not miss
//! ([`Report::warnings`]); several runs at once are plotted by `bench::plot`.
//!
//! This module owns presentation and the arithmetic derived from the raw counts (loss, rates,
//! percentiles). It measures nothing: the feeder and the clients fill a [`Report`] in.
//!
//! Latencies are in nanoseconds throughout. Durations are shown with units (ns, µs, ms, s) to three
//! significant figures, e.g. "812 ns", "12.3 µs", "1.05 ms". An empty histogram reads as zeros
//! in the table and JSON, and as a legend entry without a line in the plot.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// The reported quantiles below the maximum, as (label, quantile).
const QUANTILES: [(&str, f64); 5] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999)];

/// Duration units, each 1000× the one before, the base being ns.
const TIME_UNITS: [&str; 4] = ["ns", "µs", "ms", "s"];

/// SI prefixes, each 1000× the one before.
const SI_PREFIXES: [&str; 5] = ["", "k", "M", "G", "T"];

/// One measured run.
pub struct Report {
    /// What the run is called in tables and plot legends, e.g. "hft json 100000/s".
    pub label: String,
    /// Scenario preset: "hft", "retail", "broadcast" or "custom".
    pub scenario: String,
    /// WebSocket URL the clients connected to.
    pub url: String,
    /// Frame encoding the clients asked for: "json" or "rkyv".
    pub format: String,
    /// Offered load, ticks/s.
    pub rate: u64,
    /// Measured duration, seconds.
    pub secs: f64,
    /// WebSocket clients.
    pub clients: usize,
    /// Tokens each client subscribed to.
    pub subs: usize,
    /// Instruments the feeder draws ticks from.
    pub tokens: usize,
    /// Deliveries expected in the measured window (ticks × subscribers of each tick).
    pub expected: u64,
    /// Deliveries seen in the measured window.
    pub delivered: u64,
    /// Payload bytes received in the window.
    pub bytes: u64,
    /// CPU the benchmark harness used over the run (warm-up included), in cores (e.g. 0.85).
    pub client_cpu: f64,
    /// CPU the spawned server used over the run (warm-up included), in cores (`None` for a server not
    /// spawned).
    pub server_cpu: Option<f64>,
    /// The server's write system calls and the data frames it queued over the run (warm-up
    /// included), from its `/status` (`None` when it has none to read: not tickcast, or keys needed).
    pub server_writes: Option<(u64, u64)>,
    /// Reads by the clients that returned data during the measured window.
    pub client_reads: u64,
    /// Latency (client receive time − the tick's scheduled send time), ns, 3 significant digits.
    pub latency: Histogram<u64>,
    /// The feeder's own lag per datagram (send time − its first tick's scheduled time), ns: the
    /// harness's share of `latency` (its sleep overshoot, its core shared with the clients).
    pub feeder_lag: Histogram<u64>,
    /// Shared-memory reader processes (`--shm-readers`), each expecting every tick.
    pub shm: Vec<super::shm::ShmResult>,
    /// Ticks scheduled in the window: what each shared-memory reader should see.
    pub shm_expected: u64,
}

/// Percentiles of `h` as in [`Report::percentiles`].
fn percentiles_of(h: &Histogram<u64>) -> [(&'static str, u64); 6] {
    let [a, b, c, d, e] = QUANTILES.map(|(label, q)| (label, at(h, q)));
    [a, b, c, d, e, ("max", at(h, 1.0))]
}

impl super::shm::ShmResult {
    /// Records lost to laps, percent of those written while attached.
    pub fn lap_loss_pct(&self) -> f64 {
        if self.written == 0 {
            return 0.0;
        }
        100.0 * self.lost as f64 / self.written as f64
    }

    /// Ticks missing of `expected`, percent.
    pub fn loss_pct(&self, expected: u64) -> f64 {
        if expected == 0 {
            return 0.0;
        }
        100.0 * expected.saturating_sub(self.received) as f64 / expected as f64
    }
}

impl Report {
    /// Deliveries missing, as a percentage of those expected: 0 when nothing was expected, and never
    /// negative (more deliveries than expected count as no loss).
    pub fn loss_pct(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        100.0 * self.expected.saturating_sub(self.delivered) as f64 / self.expected as f64
    }

    /// Deliveries per second over the measured window (0 if the window is empty).
    pub fn msgs_per_sec(&self) -> f64 {
        per_sec(self.delivered, self.secs)
    }

    /// Payload bytes received per second over the measured window (0 if the window is empty).
    pub fn bytes_per_sec(&self) -> f64 {
        per_sec(self.bytes, self.secs)
    }

    /// Percentiles in ns: p50, p90, p99, p99.9, p99.99, max (max = histogram max), labelled exactly
    /// "p50", "p90", "p99", "p99.9", "p99.99", "max". All zero for an empty histogram.
    pub fn percentiles(&self) -> [(&'static str, u64); 6] {
        percentiles_of(&self.latency)
    }

    /// Each shared-memory reader's latency curves, named for plots and logs:
    /// `LABEL shm0 spin receipt` (feed receipt → reader) and, with the UDP
    /// feeder, `LABEL shm0 spin scheduled`.
    pub fn shm_curves(&self) -> Vec<(String, &Histogram<u64>)> {
        let mut out = Vec::new();
        for (i, r) in self.shm.iter().enumerate() {
            out.push((format!("{} shm{i} {} receipt", self.label, r.wait), &r.recv));
            if self.shm_expected > 0 {
                out.push((format!("{} shm{i} {} scheduled", self.label, r.wait), &r.sched));
            }
        }
        out
    }

    /// Every latency curve of the run: the WebSocket clients' (if any), then
    /// the shared-memory readers'.
    pub fn curves(&self) -> Vec<(String, &Histogram<u64>)> {
        let ws = (self.clients > 0).then(|| (self.label.clone(), &self.latency));
        ws.into_iter().chain(self.shm_curves()).collect()
    }

    /// The run's loss and p99 for `--find-max`: the WebSocket clients', or
    /// without clients the worst shared-memory reader's (scheduled time → reader).
    pub fn verdict(&self) -> (f64, u64) {
        if self.clients > 0 || self.shm.is_empty() {
            return (self.loss_pct(), self.percentiles()[2].1);
        }
        let loss = self.shm.iter().map(|r| r.loss_pct(self.shm_expected).max(r.lap_loss_pct())).fold(0.0, f64::max);
        (loss, self.shm.iter().map(|r| at(&r.sched, 0.99)).max().unwrap_or(0))
    }

    /// Did the run hold the `--find-max` objective: loss under 0.1% and p99 within `slo_ns`?
    pub fn held(&self, slo_ns: u64) -> bool {
        let (loss, p99) = self.verdict();
        loss < 0.1 && p99 <= slo_ns
    }

    /// A `--find-max` step's verdict: "held (p99 812 µs, loss 0%)" or "failed (…)".
    pub fn verdict_text(&self, slo_ns: u64) -> String {
        let (loss, p99) = self.verdict();
        let word = if self.held(slo_ns) { "held" } else { "failed" };
        format!("{word} (p99 {}, loss {})", fmt_duration(p99), fmt_pct(loss))
    }

    /// The offered load and audience: "2,000 ticks/s for 2.00 s; 4 clients × 5 subs of 20 tokens".
    pub fn load_line(&self) -> String {
        let audience = match self.clients {
            0 => format!("{} tokens, no WebSocket clients", thousands(self.tokens as u64)),
            c => format!(
                "{} clients × {} subs of {} tokens",
                thousands(c as u64),
                thousands(self.subs as u64),
                thousands(self.tokens as u64)
            ),
        };
        let readers = match self.shm.len() {
            0 => String::new(),
            n => format!(", {n} shared-memory readers"),
        };
        format!("{} ticks/s for {}; {audience}{readers}", thousands(self.rate), fmt_secs(self.secs))
    }

    /// What the run measured, for a plot: "7,890 samples, loss 0%, feeder lag p99 12.0 µs"
    /// (samples and loss of the clients, or without clients of the shared-memory readers).
    pub fn outcome_line(&self) -> String {
        let samples = match self.clients {
            0 => self.shm.iter().map(|r| r.recv.len()).sum(),
            _ => self.latency.len(),
        };
        format!(
            "{} samples, loss {}, feeder lag p99 {}",
            thousands(samples),
            fmt_pct(self.verdict().0),
            fmt_duration(at(&self.feeder_lag, 0.99))
        )
    }

    /// Feeder lag p50, p99 and max in ns, labelled "p50", "p99", "max" (zero when empty).
    pub fn feeder_lag(&self) -> [(&'static str, u64); 3] {
        [("p50", 0.5), ("p99", 0.99), ("max", 1.0)].map(|(label, q)| (label, at(&self.feeder_lag, q)))
    }

    /// The human table `tickcast bench` prints by default: the run's set-up, deliveries and loss,
    /// throughput, harness CPU, and latency percentiles with units. Ends with a newline.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "  {key:<12}{value}");
        };
        line("scenario", format!("{}, {} frames, {}", self.scenario, self.format, self.url));
        line("load", self.load_line());
        if self.clients > 0 {
            line(
                "delivered",
                format!(
                    "{} of {} expected, loss {}",
                    thousands(self.delivered),
                    thousands(self.expected),
                    fmt_pct(self.loss_pct())
                ),
            );
        }
        if self.clients > 0 {
            let (msgs, msgs_prefix) = sig3(round_u64(self.msgs_per_sec()), &SI_PREFIXES);
            let (bytes, bytes_prefix) = sig3(round_u64(self.bytes_per_sec()), &SI_PREFIXES);
            line("throughput", format!("{msgs}{msgs_prefix} msgs/s, {bytes} {bytes_prefix}B/s"));
        }
        line("harness CPU", format!("{:.2} cores", finite(self.client_cpu)));
        if let Some(c) = self.server_cpu {
            line("server CPU", format!("{:.2} cores", finite(c)));
        }
        if self.clients > 0 {
            let server = self.server_writes_per_msg().map_or(String::new(), |w| format!("server {w:.3} writes/msg, "));
            line("syscalls", format!("{server}clients {:.3} reads/msg", self.client_reads_per_msg()));
        }
        let lag = self.feeder_lag().map(|(label, ns)| format!("{label} {}", fmt_duration(ns)));
        line("feeder lag", format!("{} (the harness's share of the latency below)", lag.join(", ")));
        if self.clients > 0 {
            line("latency", format!("{} samples", thousands(self.latency.len())));
        }

        let (header, values) = percentile_rows(&self.latency);
        let mut text = format!("{}\n", self.label);
        if self.clients > 0 {
            text.push_str(&format!("{out}{header}\n{values}\n"));
        } else {
            text.push_str(&out);
        }
        for (i, r) in self.shm.iter().enumerate() {
            let delivered = match self.shm_expected {
                0 => String::new(), // no feeder: the server's own source
                e => format!(
                    "{} of {} scheduled ticks, loss {}; ",
                    thousands(r.received),
                    thousands(e),
                    fmt_pct(r.loss_pct(e))
                ),
            };
            let _ = writeln!(
                text,
                "  shm reader {i} ({}): {delivered}took {} of {} records written ({}/s), {} lost to {} laps ({}), CPU {:.2} cores",
                r.wait,
                thousands(r.taken),
                thousands(r.written),
                {
                    let (v, p) = sig3(round_u64(per_sec(r.written, r.wall)), &SI_PREFIXES);
                    format!("{v}{p}")
                },
                thousands(r.lost),
                thousands(r.gaps),
                fmt_pct(r.lap_loss_pct()),
                finite(r.cpu),
            );
            let both = [("feed receipt → reader", &r.recv), ("scheduled → reader", &r.sched)];
            // The simulator stamps both times alike: one table.
            for (what, h) in both.into_iter().take(if self.shm_expected == 0 { 1 } else { 2 }) {
                let (header, values) = percentile_rows(h);
                let _ = writeln!(text, "    {what}\n  {header}\n  {values}");
            }
        }
        text
    }

    /// The server's write system calls per data frame it queued (a frame is one delivery).
    pub fn server_writes_per_msg(&self) -> Option<f64> {
        self.server_writes.map(|(calls, frames)| if frames == 0 { 0.0 } else { calls as f64 / frames as f64 })
    }

    /// The clients' reads (that returned data) per delivery, over the measured window.
    pub fn client_reads_per_msg(&self) -> f64 {
        if self.delivered == 0 {
            0.0
        } else {
            self.client_reads as f64 / self.delivered as f64
        }
    }

    /// The machine-readable form, keys in this order: "label", "scenario", "url", "format", "rate",
    /// "secs", "clients", "subs", "tokens", "expected", "delivered", "loss_pct", "msgs_per_sec",
    /// "bytes_per_sec", "client_cpu", "server_cpu" (null unless spawned), "server_writes_per_msg" (null when the
    /// server's `/status` could not be read), "client_reads_per_msg", "feeder_lag_ns": {"p50", "p99", "max"}, "latency_ns": {"p50",
    /// "p90", "p99", "p99.9", "p99.99", "max", "count", "mean"}, "shm_readers": [{"wait", "received", "expected", "loss_pct",
    /// "written", "taken", "lost_records", "lap_loss_pct", "gaps", "written_per_sec", "cpu", "recv_latency_ns", "sched_latency_ns"}]
    /// (empty without `--shm-readers`). Counts and percentiles are integers; rates, ratios, `secs` and `mean` are
    /// floats, with non-finite values written as 0 so every field keeps its type.
    pub fn json(&self) -> Value {
        let shm: Vec<Value> = self
            .shm
            .iter()
            .map(|r| {
                json!({"wait": r.wait, "received": r.received, "expected": self.shm_expected,
                    "loss_pct": r.loss_pct(self.shm_expected), "written": r.written, "taken": r.taken,
                    "lost_records": r.lost, "lap_loss_pct": r.lap_loss_pct(), "gaps": r.gaps,
                    "written_per_sec": per_sec(r.written, r.wall),
                    "cpu": finite(r.cpu),
                    "recv_latency_ns": latency_json(&r.recv), "sched_latency_ns": latency_json(&r.sched)})
            })
            .collect();
        json!({
            "label": self.label,
            "scenario": self.scenario,
            "url": self.url,
            "format": self.format,
            "rate": self.rate,
            "secs": finite(self.secs),
            "clients": self.clients,
            "subs": self.subs,
            "tokens": self.tokens,
            "expected": self.expected,
            "delivered": self.delivered,
            "loss_pct": self.loss_pct(),
            "msgs_per_sec": self.msgs_per_sec(),
            "bytes_per_sec": self.bytes_per_sec(),
            "client_cpu": finite(self.client_cpu),
            "server_cpu": self.server_cpu.map(finite),
            "server_writes_per_msg": self.server_writes_per_msg(),
            "client_reads_per_msg": self.client_reads_per_msg(),
            "feeder_lag_ns": Value::Object(self.feeder_lag().iter().map(|&(l, ns)| (l.to_owned(), json!(ns))).collect()),
            "latency_ns": latency_json(&self.latency),
            "shm_readers": shm,
        })
    }

    /// Warnings a reader must see next to the numbers, most severe first: "no deliveries" when
    /// nothing arrived; "loss 3.2% — deliveries missing" when loss is at least 0.1%; and "harness CPU
    /// 1.9 cores (of 2): the client may be the bottleneck" when the harness used more than 90% of the
    /// `harness_cores` available to it (0 is taken as 1). Empty when the run looks sound.
    pub fn warnings(&self, harness_cores: usize) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.delivered == 0 && self.clients > 0 {
            warnings.push("no deliveries".to_owned());
        }
        for (i, r) in self.shm.iter().enumerate() {
            let loss = r.loss_pct(self.shm_expected).max(r.lap_loss_pct());
            if loss >= 0.1 {
                warnings.push(format!("shm reader {i}: loss {} — ticks missing", fmt_pct(loss)));
            }
        }
        let loss = self.loss_pct();
        if loss >= 0.1 {
            warnings.push(format!("loss {} — deliveries missing", fmt_pct(loss)));
        }
        let cores = harness_cores.max(1);
        if self.client_cpu > 0.9 * cores as f64 {
            warnings.push(format!(
                "harness CPU {:.1} cores (of {cores}): the client may be the bottleneck",
                self.client_cpu
            ));
        }
        warnings
    }
}

/// The percentile header and value rows (with the mean) of `h`.
fn percentile_rows(h: &Histogram<u64>) -> (String, String) {
    let mut columns: Vec<(&str, String)> =
        percentiles_of(h).iter().map(|&(label, ns)| (label, fmt_duration(ns))).collect();
    columns.push(("mean", fmt_duration(round_u64(h.mean()))));
    let mut header = String::from(" ");
    let mut values = String::from(" ");
    for (label, value) in &columns {
        let _ = write!(header, " {label:>9}");
        let _ = write!(values, " {value:>9}");
    }
    (header.trim_end().to_string(), values.trim_end().to_string())
}

/// Percentiles of `h` in ns as a JSON object with its count.
fn latency_json(h: &Histogram<u64>) -> Value {
    let mut m: Map<String, Value> =
        percentiles_of(h).iter().map(|&(label, ns)| (label.to_owned(), json!(ns))).collect();
    m.insert("count".to_owned(), json!(h.len()));
    m.insert("mean".to_owned(), json!(finite(h.mean())));
    Value::Object(m)
}

/// The value at quantile `q` of `h` (its max at 1.0), 0 when it is empty.
fn at(h: &Histogram<u64>, q: f64) -> u64 {
    match h.is_empty() {
        true => 0,
        false if q >= 1.0 => h.max(),
        false => h.value_at_quantile(q),
    }
}

/// `n` per second over `secs`, or 0 when `secs` is not a positive finite number.
fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 && secs.is_finite() {
        n as f64 / secs
    } else {
        0.0
    }
}

/// `x`, or 0 if it is NaN or infinite (JSON has no such numbers).
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// `x` rounded to an integer; negative and NaN become 0, huge values saturate.
fn round_u64(x: f64) -> u64 {
    // `as` saturates float → int conversions, and maps NaN to 0.
    x.round() as u64
}

/// `n` to three significant figures in the largest of `units` (each 1000× the one before) that keeps
/// the integer part below 1000, or in the last unit. Values below 1000 are shown exactly. Returns
/// the number and its unit.
fn sig3(n: u64, units: &[&'static str]) -> (String, &'static str) {
    if n < 1000 || units.len() < 2 {
        return (n.to_string(), units.first().copied().unwrap_or(""));
    }
    let mut digits = n.ilog10() + 1; // ≥ 4
    let scale = 10u64.pow(digits - 3);
    let mut r = n / scale + u64::from(n % scale >= scale / 2); // three digits, or 1000 after rounding up
    if r == 1000 {
        r = 100;
        digits += 1;
    }
    // The value is now r × 10^(digits − 3) with r in 100..=999.
    let unit = ((digits - 1) / 3).min(units.len() as u32 - 1);
    let number = match digits - 3 * unit {
        1 => format!("{}.{:02}", r / 100, r % 100),
        2 => format!("{}.{}", r / 10, r % 10),
        3 => r.to_string(),
        k => (r * 10u64.pow(k - 3)).to_string(),
    };
    (number, units[unit as usize])
}

/// A duration in ns with its unit, to three significant figures: "812 ns", "12.3 µs", "1.05 ms".
fn fmt_duration(ns: u64) -> String {
    let (number, unit) = sig3(ns, &TIME_UNITS);
    format!("{number} {unit}")
}

/// A duration in seconds, as [`fmt_duration`] shows it.
fn fmt_secs(secs: f64) -> String {
    fmt_duration(round_u64(secs * 1e9))
}

/// A round axis value in ns, without trailing zeros: "1 µs", "2 ms", "50 s".
pub(super) fn fmt_tick(ns: u64) -> String {
    let (number, unit) = sig3(ns, &TIME_UNITS);
    let number = if number.contains('.') { number.trim_end_matches('0').trim_end_matches('.') } else { &number };
    format!("{number} {unit}")
}

/// A percentage: "0%", "<0.001%", "0.020%", "3.2%".
fn fmt_pct(p: f64) -> String {
    if p <= 0.0 || p.is_nan() {
        "0%".to_owned()
    } else if p < 0.001 {
        "<0.001%".to_owned()
    } else if p < 1.0 {
        format!("{p:.3}%")
    } else {
        format!("{p:.1}%")
    }
}

/// `n` with thousands separators: "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A JSON key and the check its value's type must pass.
    type KeyType = (&'static str, fn(&Value) -> bool);

    pub(in crate::bench) fn histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
    }

    /// 1..=100_000 µs, once each.
    pub(in crate::bench) fn uniform_histogram() -> Histogram<u64> {
        let mut h = histogram();
        for us in 1..=100_000u64 {
            h.record(us * 1000).expect("value within histogram bounds");
        }
        h
    }

    fn report(expected: u64, delivered: u64, secs: f64, latency: Histogram<u64>) -> Report {
        Report {
            label: "hft json 100000/s".to_owned(),
            scenario: "hft".to_owned(),
            url: "ws://127.0.0.1:9001/ws".to_owned(),
            format: "json".to_owned(),
            rate: 100_000,
            secs,
            clients: 1000,
            subs: 50,
            tokens: 5000,
            expected,
            delivered,
            bytes: delivered * 120,
            client_cpu: 0.85,
            server_cpu: None,
            server_writes: None,
            client_reads: delivered / 2,
            latency,
            feeder_lag: histogram(),
            shm: Vec::new(),
            shm_expected: 0,
        }
    }

    #[test]
    fn shm_readers_are_reported_beside_the_clients() {
        let mut r = report(1000, 1000, 10.0, uniform_histogram());
        r.shm_expected = 1000;
        r.shm.push(crate::bench::shm::ShmResult {
            wait: "spin".into(),
            received: 990,
            lost: 10,
            written: 1000,
            taken: 990,
            gaps: 1,
            wall: 2.0,
            cpu: 1.0,
            recv: uniform_histogram(),
            sched: uniform_histogram(),
        });
        let t = r.table();
        assert!(t.contains("shm reader 0 (spin): 990 of 1,000 scheduled ticks, loss 1.0%; took 990 of 1,000 records written (500/s), 10 lost to 1 laps (1.0%), CPU 1.00 cores"), "{t}");
        assert!(t.contains("feed receipt → reader") && t.contains("scheduled → reader"), "{t}");
        let v = r.json();
        let shm = &v["shm_readers"][0];
        assert_eq!(
            (shm["received"].as_u64(), shm["loss_pct"].as_f64(), shm["lap_loss_pct"].as_f64()),
            (Some(990), Some(1.0), Some(1.0))
        );
        assert_eq!(shm["written_per_sec"], 500.0);
        assert_eq!(shm["recv_latency_ns"]["max"], uniform_histogram().max());
        assert_eq!(r.warnings(1), vec!["shm reader 0: loss 1.0% — ticks missing".to_string()]);
        let names: Vec<String> = r.curves().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["hft json 100000/s", "hft json 100000/s shm0 spin receipt", "hft json 100000/s shm0 spin scheduled"]
        );
        r.clients = 0;
        assert_eq!(r.verdict().0, 1.0, "without clients the readers decide --find-max");
        assert!(!r.table().contains("delivered"), "no client lines without clients");
    }

    #[test]
    fn loss_and_rates() {
        struct Case {
            name: &'static str,
            expected: u64,
            delivered: u64,
            secs: f64,
            loss: f64,
            msgs: f64,
        }
        let cases = [
            Case { name: "no loss", expected: 1000, delivered: 1000, secs: 10.0, loss: 0.0, msgs: 100.0 },
            Case { name: "some loss", expected: 1000, delivered: 968, secs: 2.0, loss: 3.2, msgs: 484.0 },
            Case { name: "all lost", expected: 1000, delivered: 0, secs: 1.0, loss: 100.0, msgs: 0.0 },
            Case { name: "nothing expected", expected: 0, delivered: 0, secs: 1.0, loss: 0.0, msgs: 0.0 },
            Case { name: "nothing expected, some seen", expected: 0, delivered: 5, secs: 1.0, loss: 0.0, msgs: 5.0 },
            Case { name: "delivered > expected", expected: 100, delivered: 110, secs: 1.0, loss: 0.0, msgs: 110.0 },
            Case { name: "empty window", expected: 100, delivered: 100, secs: 0.0, loss: 0.0, msgs: 0.0 },
            Case { name: "NaN window", expected: 100, delivered: 100, secs: f64::NAN, loss: 0.0, msgs: 0.0 },
        ];
        for c in cases {
            let r = report(c.expected, c.delivered, c.secs, histogram());
            assert!((r.loss_pct() - c.loss).abs() < 1e-9, "{}: loss {}", c.name, r.loss_pct());
            assert!((r.msgs_per_sec() - c.msgs).abs() < 1e-9, "{}: msgs/s {}", c.name, r.msgs_per_sec());
            assert!((r.bytes_per_sec() - 120.0 * c.msgs).abs() < 1e-6, "{}: bytes/s {}", c.name, r.bytes_per_sec());
        }
    }

    #[test]
    fn duration_formatting() {
        let cases = [
            ("zero", 0, "0 ns"),
            ("ns", 812, "812 ns"),
            ("largest ns", 999, "999 ns"),
            ("1 µs", 1000, "1.00 µs"),
            ("µs, two decimals", 1234, "1.23 µs"),
            ("µs, rounds half up", 1235, "1.24 µs"),
            ("µs, one decimal", 12_345, "12.3 µs"),
            ("µs, no decimals", 999_499, "999 µs"),
            ("rounds up into ms", 999_500, "1.00 ms"),
            ("ms", 1_049_999, "1.05 ms"),
            ("rounds up a digit", 9_995_000, "10.0 ms"),
            ("s", 60_000_000_000, "60.0 s"),
            ("beyond the last unit", 1_234_567_890_123, "1230 s"),
            ("u64::MAX", u64::MAX, "18400000000 s"),
        ];
        for (name, ns, want) in cases {
            assert_eq!(fmt_duration(ns), want, "{name}");
        }
    }

    #[test]
    fn other_formatting() {
        let ticks = [(1, "1 ns"), (10, "10 ns"), (1000, "1 µs"), (2000, "2 µs"), (50_000_000_000, "50 s")];
        for (ns, want) in ticks {
            assert_eq!(fmt_tick(ns), want, "tick {ns}");
        }
        let pcts = [(0.0, "0%"), (f64::NAN, "0%"), (0.0001, "<0.001%"), (0.02, "0.020%"), (3.2, "3.2%")];
        for (p, want) in pcts {
            assert_eq!(fmt_pct(p), want, "pct {p}");
        }
        let groups = [(0, "0"), (999, "999"), (1000, "1,000"), (1_234_567, "1,234,567")];
        for (n, want) in groups {
            assert_eq!(thousands(n), want);
        }
        assert_eq!(fmt_secs(10.0), "10.0 s");
        assert_eq!(fmt_secs(0.25), "250 ms");
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let r = report(100_000, 100_000, 10.0, uniform_histogram());
        let want = [
            ("p50", 50_000_000.0),
            ("p90", 90_000_000.0),
            ("p99", 99_000_000.0),
            ("p99.9", 99_900_000.0),
            ("p99.99", 99_990_000.0),
            ("max", 100_000_000.0),
        ];
        for ((label, ns), (want_label, want_ns)) in r.percentiles().into_iter().zip(want) {
            assert_eq!(label, want_label);
            // 3 significant digits: within 0.1%.
            assert!((ns as f64 - want_ns).abs() / want_ns <= 1e-3, "{label}: {ns}");
        }
    }

    #[test]
    fn percentiles_of_an_empty_histogram_are_zero() {
        let r = report(0, 0, 10.0, histogram());
        assert!(r.percentiles().iter().all(|&(_, ns)| ns == 0), "{:?}", r.percentiles());
    }

    #[test]
    fn json_has_exactly_the_documented_keys_and_types() {
        let string = |v: &Value| v.is_string();
        let uint = |v: &Value| v.is_u64();
        let float = |v: &Value| v.is_f64();
        let top: [KeyType; 21] = [
            ("label", string),
            ("scenario", string),
            ("url", string),
            ("format", string),
            ("rate", uint),
            ("secs", float),
            ("clients", uint),
            ("subs", uint),
            ("tokens", uint),
            ("expected", uint),
            ("delivered", uint),
            ("loss_pct", float),
            ("msgs_per_sec", float),
            ("bytes_per_sec", float),
            ("client_cpu", float),
            ("server_cpu", |v: &Value| v.is_null()),
            ("server_writes_per_msg", |v: &Value| v.is_null()),
            ("client_reads_per_msg", float),
            ("feeder_lag_ns", Value::is_object),
            ("latency_ns", Value::is_object),
            ("shm_readers", Value::is_array),
        ];
        let latency: [KeyType; 8] = [
            ("p50", uint),
            ("p90", uint),
            ("p99", uint),
            ("p99.9", uint),
            ("p99.99", uint),
            ("max", uint),
            ("count", uint),
            ("mean", float),
        ];
        let cases = [
            ("known distribution", report(100_000, 99_000, 10.0, uniform_histogram())),
            ("empty", report(0, 0, 0.0, histogram())),
            ("non-finite secs", report(10, 10, f64::INFINITY, histogram())),
        ];
        for (name, r) in cases {
            let v = r.json();
            let obj = v.as_object().expect("json() is an object");
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            assert_eq!(keys, top.map(|(k, _)| k), "{name}: keys");
            for (key, is_type) in top {
                assert!(is_type(&obj[key]), "{name}: {key} = {}", obj[key]);
            }
            let lat = obj["latency_ns"].as_object().expect("latency_ns is an object");
            let keys: Vec<&str> = lat.keys().map(String::as_str).collect();
            assert_eq!(keys, latency.map(|(k, _)| k), "{name}: latency keys");
            for (key, is_type) in latency {
                assert!(is_type(&lat[key]), "{name}: latency_ns.{key} = {}", lat[key]);
            }
        }
        let mut r = report(100_000, 99_000, 10.0, uniform_histogram());
        r.feeder_lag = uniform_histogram();
        r.server_cpu = Some(0.5);
        let v = r.json();
        assert_eq!(v["server_cpu"], 0.5);
        let lag = v["feeder_lag_ns"].as_object().expect("feeder_lag_ns is an object");
        assert_eq!(lag.keys().map(String::as_str).collect::<Vec<_>>(), ["p50", "p99", "max"]);
        assert_eq!(lag["max"], uniform_histogram().max());
        assert!(lag["p50"].as_u64() < lag["p99"].as_u64(), "{lag:?}");
        assert_eq!(v["label"], "hft json 100000/s");
        assert_eq!(v["delivered"], 99_000);
        assert_eq!(v["loss_pct"], 1.0);
        assert_eq!(v["latency_ns"]["count"], 100_000);
        assert_eq!(v["latency_ns"]["max"], uniform_histogram().max());
    }

    #[test]
    fn table_shows_percentiles_and_loss() {
        let cases = [
            ("known distribution", report(100_000, 96_800, 10.0, uniform_histogram()), "loss 3.2%"),
            ("empty", report(0, 0, 0.0, histogram()), "loss 0%"),
        ];
        for (name, r, loss) in cases {
            let table = r.table();
            assert!(table.starts_with("hft json 100000/s\n"), "{name}:\n{table}");
            assert!(table.contains(loss), "{name}: no {loss:?} in\n{table}");
            assert!(table.contains("feeder lag  p50 "), "{name}: no feeder lag line in\n{table}");
            for (label, ns) in r.percentiles() {
                assert!(table.contains(label), "{name}: no {label} in\n{table}");
                assert!(table.contains(&fmt_duration(ns)), "{name}: no {label} value in\n{table}");
            }
            assert!(table.ends_with('\n'), "{name}");
        }
        let table = report(100_000, 96_800, 10.0, uniform_histogram()).table();
        assert!(table.contains("100 ms"), "max of 100 ms shown with units:\n{table}");
        assert!(table.contains("96,800 of 100,000 expected"), "{table}");
    }

    #[test]
    fn warnings() {
        struct Case {
            name: &'static str,
            cpu: f64,
            cores: usize,
            expected: u64,
            delivered: u64,
            want: &'static [&'static str],
        }
        let cases = [
            Case { name: "sound run", cpu: 0.85, cores: 2, expected: 1000, delivered: 1000, want: &[] },
            Case { name: "just under loss limit", cpu: 0.5, cores: 2, expected: 10_000, delivered: 9991, want: &[] },
            Case {
                name: "loss at limit",
                cpu: 0.5,
                cores: 2,
                expected: 10_000,
                delivered: 9990,
                want: &["loss 0.100% — deliveries missing"],
            },
            Case {
                name: "loss",
                cpu: 0.5,
                cores: 2,
                expected: 1000,
                delivered: 968,
                want: &["loss 3.2% — deliveries missing"],
            },
            Case {
                name: "nothing arrived",
                cpu: 0.1,
                cores: 2,
                expected: 1000,
                delivered: 0,
                want: &["no deliveries", "loss 100.0% — deliveries missing"],
            },
            Case {
                name: "nothing expected or seen",
                cpu: 0.1,
                cores: 2,
                expected: 0,
                delivered: 0,
                want: &["no deliveries"],
            },
            Case {
                name: "harness saturated",
                cpu: 1.9,
                cores: 2,
                expected: 1000,
                delivered: 1000,
                want: &["harness CPU 1.9 cores (of 2): the client may be the bottleneck"],
            },
            Case { name: "harness at 90%", cpu: 1.8, cores: 2, expected: 1000, delivered: 1000, want: &[] },
            Case {
                name: "zero cores taken as one",
                cpu: 0.95,
                cores: 0,
                expected: 1000,
                delivered: 1000,
                want: &["harness CPU 0.9 cores (of 1): the client may be the bottleneck"],
            },
        ];
        for c in cases {
            let mut r = report(c.expected, c.delivered, 10.0, histogram());
            r.client_cpu = c.cpu;
            assert_eq!(r.warnings(c.cores), c.want, "{}", c.name);
        }
    }
}
