//! HdrHistogram interval logs: `--hlog` writes one interval per measured
//! second of each run, tagged with the run's label; `--plot-hlog` reads
//! such logs back and sums each tag's intervals, so runs made by separate
//! invocations (a server flag changed between them) share one plot.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::report::Report;
use crate::metrics::new_histogram;

/// A run's label as an hlog tag (tags cannot hold commas or white space).
fn tag_of(label: &str) -> String {
    label.replace(|c: char| c == ',' || c.is_whitespace(), "_")
}

/// Write an interval log: one interval per measured second of each run
/// (by the ticks' scheduled time), tagged with the run's label; each
/// shared-memory reader's curves as one interval over the run, tagged with
/// their names (see [`Report::shm_curves`]).
///
/// # Errors
/// The file cannot be written.
pub fn write(path: &Path, reports: &[Report], intervals: &[Vec<Histogram<u64>>]) -> Result<()> {
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let mut w = IntervalLogWriterBuilder::new()
        .add_comment("tickcast bench: one interval per measured second of each run, latency in ns")
        .with_max_value_divisor(1e6)
        .begin_log_with(&mut out, &mut ser)
        .map_err(|e| anyhow::anyhow!("hlog: {e:?}"))?;
    let mut at = 0.0;
    for (r, secs) in reports.iter().zip(intervals) {
        let tag = tag_of(&r.label);
        for (i, h) in secs.iter().enumerate().filter(|_| r.clients > 0) {
            let start = Duration::from_secs_f64(at + i as f64);
            w.write_histogram(h, start, Duration::from_secs(1), Tag::new(&tag))
                .map_err(|e| anyhow::anyhow!("hlog: {e:?}"))?;
        }
        for (name, h) in r.shm_curves() {
            w.write_histogram(
                h,
                Duration::from_secs_f64(at),
                Duration::from_secs_f64(r.secs),
                Tag::new(&tag_of(&name)),
            )
            .map_err(|e| anyhow::anyhow!("hlog: {e:?}"))?;
        }
        at += r.secs.ceil();
    }
    drop(w);
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Read interval logs back: each file's tags' intervals summed into one
/// histogram per (file, tag), in order of first appearance, named by the tag
/// (`_` shown as a space; untagged intervals go under the file name). A tag
/// found in several files is one run per file, its name suffixed with the
/// file's (two runs left with the default label stay two curves).
///
/// # Errors
/// A file that cannot be read, or is not an interval log.
pub fn read(paths: &[impl AsRef<Path>]) -> Result<Vec<(String, Histogram<u64>)>> {
    use base64::Engine;
    let mut runs: Vec<(usize, String, Histogram<u64>)> = Vec::new();
    let mut de = Deserializer::new();
    for (file, path) in paths.iter().enumerate() {
        let path = path.as_ref();
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for entry in IntervalLogIterator::new(&bytes) {
            let entry = entry.map_err(|e| anyhow::anyhow!("{}: not an HdrHistogram log ({e:?})", path.display()))?;
            let LogEntry::Interval(iv) = entry else { continue };
            let name = iv.tag().map_or_else(|| path.display().to_string(), |t| t.as_str().replace('_', " "));
            let raw = base64::engine::general_purpose::STANDARD
                .decode(iv.encoded_histogram())
                .with_context(|| format!("{}: an interval is not base64", path.display()))?;
            let h: Histogram<u64> = de
                .deserialize(&mut raw.as_slice())
                .map_err(|e| anyhow::anyhow!("{}: an interval does not decode ({e:?})", path.display()))?;
            let i = match runs.iter().position(|(f, n, _)| *f == file && *n == name) {
                Some(i) => i,
                None => {
                    runs.push((file, name, new_histogram()));
                    runs.len() - 1
                }
            };
            runs[i].2.add(&h).context("merging intervals")?;
        }
    }
    if runs.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.as_ref().display().to_string()).collect();
        anyhow::bail!("no intervals in {}", names.join(", "));
    }
    let repeated = |name: &str| runs.iter().filter(|(_, n, _)| n == name).count() > 1;
    let named: Vec<String> = runs
        .iter()
        .map(|(f, n, _)| match repeated(n) {
            true => format!("{n} ({})", paths[*f].as_ref().display()),
            false => n.clone(),
        })
        .collect();
    Ok(named.into_iter().zip(runs).map(|(name, (_, _, h))| (name, h)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(label: &str) -> Report {
        Report {
            label: label.into(),
            scenario: "custom".into(),
            url: String::new(),
            format: "json".into(),
            rate: 1,
            secs: 2.0,
            clients: 1,
            subs: 1,
            tokens: 1,
            expected: 0,
            delivered: 0,
            bytes: 0,
            client_cpu: 0.0,
            server_cpu: None,
            server_writes: None,
            client_reads: 0,
            latency: new_histogram(),
            feeder_lag: new_histogram(),
            shm: Vec::new(),
            shm_expected: 0,
        }
    }

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn logs_read_back_as_one_summed_histogram_per_run() {
        let dir = std::env::temp_dir().join(format!("tickcast-hlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.hlog"), dir.join("b.hlog"));
        let park = vec![histogram(&[100, 200]), histogram(&[300])];
        let spin = vec![histogram(&[50]), histogram(&[60, 70, 80_000])];
        write(&a, &[report("hft park 100000/s")], &[park]).unwrap();
        write(&b, &[report("hft spin, pinned")], &[spin]).unwrap();
        let runs = read(&[&a, &b]).unwrap();
        let names: Vec<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["hft park 100000/s", "hft spin  pinned"]);
        let a2 = dir.join("a2.hlog");
        write(&a2, &[report("hft park 100000/s")], &[vec![histogram(&[7])]]).unwrap();
        let same_label: Vec<String> = read(&[&a, &a2]).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            same_label,
            [format!("hft park 100000/s ({})", a.display()), format!("hft park 100000/s ({})", a2.display())],
            "one curve per file, told apart"
        );
        assert_eq!((runs[0].1.len(), runs[0].1.max()), (3, 300));
        assert_eq!(runs[1].1.len(), 4);
        assert!(runs[1].1.equivalent(runs[1].1.max(), 80_000));
        let not_a_log = dir.join("c.hlog");
        std::fs::write(&not_a_log, "hello\n").unwrap();
        assert!(read(&[&not_a_log]).is_err(), "a file without intervals is an error");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
