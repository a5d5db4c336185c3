//! The latency plot of `tickcast bench --plot`: several runs' HdrHistogram
//! percentile distributions on one SVG, latency (log) against 1/(1−q)
//! (log), as HdrHistogram's own plotter draws them. Self-contained SVG, no
//! scripts, finite numbers only.
//!
//! A chart read later, away from the terminal that made it, carries what it
//! needs to be understood ([`Notes`]): the run's parameters and outcome
//! under the title and, for `--find-max`, the objective as a dashed line
//! (each step's verdict is in its legend label).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::report::fmt_tick;

/// `s` escaped for SVG text content and attribute values.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

// Plot geometry, px.
const PLOT_WIDTH: f64 = 900.0;
const PLOT_HEIGHT: f64 = 560.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 30.0;
const MARGIN_TOP: f64 = 50.0;
/// Height of one line of notes under the title, px.
const NOTE_LINE: f64 = 15.0;
const MARGIN_BOTTOM: f64 = 60.0;

/// Plot samples per decade of 1/(1−q).
const STEPS_PER_DECADE: u32 = 20;
/// Decades of 1/(1−q) on the x axis: up to 99.999%.
const X_DECADES: u32 = 5;
/// Labelled x positions, as (label, 1/(1−q)).
const X_TICKS: [(&str, f64); 6] =
    [("50%", 2.0), ("90%", 10.0), ("99%", 100.0), ("99.9%", 1e3), ("99.99%", 1e4), ("99.999%", 1e5)];
/// Line colours, one per run, repeating (Tableau 10).
const COLORS: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

/// The percentile distribution of `h` as (log10(1/(1−q)), latency ns) points at q = 1 − 10^(−i/20),
/// from q = 0 up to 99.999%, stopping at the histogram's max. Empty for an empty histogram.
fn curve(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    let mut points = Vec::new();
    if h.is_empty() {
        return points;
    }
    let max = h.max();
    for i in 0..=STEPS_PER_DECADE * X_DECADES {
        let decades = f64::from(i) / f64::from(STEPS_PER_DECADE);
        let q = 1.0 - 10f64.powf(-decades);
        let ns = h.value_at_quantile(q).min(max);
        points.push((decades, ns));
        if ns >= max {
            break;
        }
    }
    points
}

/// Exponents of the decades bounding `lo..=hi` (lo ≥ 1): the largest power of ten ≤ lo and the
/// smallest ≥ hi, at least one decade apart.
fn decade_bounds(lo: u64, hi: u64) -> (u32, u32) {
    let below = lo.max(1).ilog10();
    let mut above = 0;
    let mut p: u128 = 1;
    while p < u128::from(hi) {
        p *= 10;
        above += 1;
    }
    (below, above.max(below + 1))
}

/// What a plot says besides its curves.
#[derive(Clone, Debug, Default)]
pub struct Notes {
    /// Lines under the title: the run's parameters, outcome and date.
    pub lines: Vec<String>,
    /// An objective drawn across the plot as a dashed line: (latency ns, its label).
    pub slo: Option<(u64, String)>,
}

/// The plot area and its scales: x in decades of 1/(1−q), y in decades of ns (10^y_lo ..= 10^y_hi).
struct Frame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    y_lo: u32,
    y_hi: u32,
}

impl Frame {
    /// The frame for curves whose latencies span `lo..=hi` ns, or 1 µs .. 1 ms when there are none,
    /// below `notes` lines of notes.
    fn new(span: Option<(u64, u64)>, notes: usize) -> Frame {
        let (y_lo, y_hi) = span.map_or((3, 6), |(lo, hi)| decade_bounds(lo, hi));
        Frame {
            left: MARGIN_LEFT,
            right: PLOT_WIDTH - MARGIN_RIGHT,
            top: MARGIN_TOP + NOTE_LINE * notes as f64,
            bottom: PLOT_HEIGHT + NOTE_LINE * notes as f64 - MARGIN_BOTTOM,
            y_lo,
            y_hi,
        }
    }

    /// Horizontal position of `decades` = log10(1/(1−q)).
    fn x(&self, decades: f64) -> f64 {
        self.left + decades / f64::from(X_DECADES) * (self.right - self.left)
    }

    /// Vertical position of a latency in ns (values below 1 ns are drawn at 1 ns).
    fn y(&self, ns: f64) -> f64 {
        let span = f64::from(self.y_hi - self.y_lo);
        self.bottom - (ns.max(1.0).log10() - f64::from(self.y_lo)) / span * (self.bottom - self.top)
    }

    /// Grid lines, tick labels, the frame and the axis titles. The y axis gets a labelled line per
    /// decade and faint lines at 2..9 × each decade, also labelled at 2 and 5 when the range spans
    /// no more than two decades.
    fn write_axes(&self, svg: &mut String, height: f64) {
        let Frame { left, right, top, bottom, y_lo, y_hi } = *self;
        let few_decades = y_hi - y_lo <= 2;
        // A grid line at m × 10^e ns: major (and labelled) at m = 1, faint otherwise.
        let y_tick = |svg: &mut String, m: u128, e: u32| {
            let ns = m * 10u128.pow(e);
            let y = self.y(ns as f64);
            let (stroke, fill) = if m == 1 { ("#ccc", "#000") } else { ("#eee", "#666") };
            let _ =
                writeln!(svg, r#"<line x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="{stroke}"/>"#);
            let labelled = m == 1 || (few_decades && (m == 2 || m == 5));
            if let (true, Ok(ns)) = (labelled, u64::try_from(ns)) {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{fill}">{}</text>"#,
                    left - 6.0,
                    y + 4.0,
                    fmt_tick(ns)
                );
            }
        };
        for e in y_lo..=y_hi {
            y_tick(svg, 1, e);
            if e < y_hi {
                for m in 2..=9 {
                    y_tick(svg, m, e);
                }
            }
        }
        for (label, inverse_tail) in X_TICKS {
            let x = self.x(inverse_tail.log10());
            let _ = writeln!(svg, r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#ccc"/>"##);
            let _ = writeln!(svg, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#, bottom + 18.0);
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
            right - left,
            bottom - top
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
            (left + right) / 2.0,
            height - 18.0
        );
        let mid = (top + bottom) / 2.0;
        let _ = writeln!(
            svg,
            r#"<text x="18" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 18 {mid:.1})">latency</text>"#
        );
    }

    /// The objective: a dashed line at `ns` across the plot, labelled at its right end.
    fn write_slo(&self, svg: &mut String, ns: u64, label: &str) {
        let y = self.y(ns as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#c00" stroke-width="1.5" stroke-dasharray="6 4"/>"##,
            self.left, self.right
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#c00">{}</text>"##,
            self.right - 6.0,
            y - 5.0,
            xml_escape(label)
        );
    }

    /// One line per curve, in `COLORS` order, each ending in a dot at its last sample.
    fn write_curves(&self, svg: &mut String, curves: &[Vec<(f64, u64)>]) {
        for (points, color) in curves.iter().zip(COLORS.iter().cycle()) {
            let coords: Vec<String> =
                points.iter().map(|&(d, ns)| format!("{:.1},{:.1}", self.x(d), self.y(ns as f64))).collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round" points="{}"/>"#,
                coords.join(" ")
            );
            if let Some(&(d, ns)) = points.last() {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    self.x(d),
                    self.y(ns as f64)
                );
            }
        }
    }

    /// The legend, top left inside the frame (where low percentiles usually leave room): a swatch
    /// and the label per run, dashed and marked "(no data)" for a run without samples.
    fn write_legend(&self, svg: &mut String, labels: &[&str], curves: &[Vec<(f64, u64)>]) {
        if labels.is_empty() {
            return;
        }
        let entries: Vec<(String, bool)> = labels
            .iter()
            .zip(curves)
            .map(|(label, points)| {
                let empty = points.is_empty();
                (if empty { format!("{label} (no data)") } else { (*label).to_owned() }, empty)
            })
            .collect();
        let longest = entries.iter().map(|(text, _)| text.chars().count()).max().unwrap_or(0);
        let (x0, y0) = (self.left + 10.0, self.top + 10.0);
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="white" fill-opacity="0.85" stroke="#999"/>"##,
            44.0 + 7.0 * longest as f64,
            8.0 + 18.0 * entries.len() as f64
        );
        for (i, ((text, empty), color)) in entries.iter().zip(COLORS.iter().cycle()).enumerate() {
            let y = y0 + 16.0 + 18.0 * i as f64;
            let dash = if *empty { r#" stroke-dasharray="4 3""# } else { "" };
            let _ = writeln!(
                svg,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"{dash}/>"#,
                x0 + 8.0,
                y - 4.0,
                x0 + 32.0,
                y - 4.0
            );
            let _ = writeln!(svg, r#"<text x="{:.1}" y="{y:.1}">{}</text>"#, x0 + 38.0, xml_escape(text));
        }
    }
}

/// The percentile-distribution plot HdrHistogram users expect: latency (y, log scale, with unit
/// ticks) against percentile on an x axis of 1/(1−q) on a log scale, labelled "50%", "90%", "99%",
/// "99.9%", "99.99%", "99.999%"; one line per run, named by its label in the legend; `title` on top.
///
/// `notes` go under the title (a line each, pushing the plot down) and, with an objective, as a
/// dashed line across the plot (its latency within the y range).
///
/// Returns a complete standalone SVG document, 900 px wide (560 px high, plus a line per note),
/// with no external fonts or scripts. Each curve ends, with a dot, at its histogram's max (or at
/// 99.999% if the max lies beyond); an empty histogram gets a legend entry marked "(no data)" and
/// no line.
pub fn plot_svg(title: &str, runs: &[(&str, &Histogram<u64>)], notes: &Notes) -> String {
    let curves: Vec<Vec<(f64, u64)>> = runs.iter().map(|(_, h)| curve(h)).collect();
    let samples = curves.iter().flatten().map(|&(_, ns)| ns).chain(notes.slo.as_ref().map(|(ns, _)| *ns));
    let frame = Frame::new(samples.clone().min().zip(samples.max()), notes.lines.len());
    let height = PLOT_HEIGHT + NOTE_LINE * notes.lines.len() as f64;
    let labels: Vec<&str> = runs.iter().map(|&(label, _)| label).collect();
    let title = xml_escape(title);

    // Writing to a String cannot fail: the results of `writeln!` here and in `Frame` are ignored.
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{PLOT_WIDTH}" height="{height}" viewBox="0 0 {PLOT_WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, "<title>{title}</title>");
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="30" text-anchor="middle" font-size="16" font-weight="bold">{title}</text>"#,
        (frame.left + frame.right) / 2.0
    );
    for (i, line) in notes.lines.iter().enumerate() {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            (frame.left + frame.right) / 2.0,
            48.0 + NOTE_LINE * i as f64,
            xml_escape(line)
        );
    }
    frame.write_axes(&mut svg, height);
    if let Some((ns, label)) = &notes.slo {
        frame.write_slo(&mut svg, *ns, label);
    }
    frame.write_curves(&mut svg, &curves);
    frame.write_legend(&mut svg, &labels, &curves);
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::{histogram, uniform_histogram};

    /// Runs to plot, as `plot_svg` takes them.
    type Runs<'a> = Vec<(&'a str, &'a Histogram<u64>)>;

    fn assert_wellformed(svg: &str, what: &str) {
        assert!(svg.starts_with("<svg"), "{what}: starts with {:?}", &svg[..svg.len().min(20)]);
        assert!(svg.ends_with("</svg>\n"), "{what}: ends badly");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{what}: non-finite number in\n{svg}");
        assert_eq!(svg.matches("<svg").count(), 1, "{what}");
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count(), "{what}");
    }

    #[test]
    fn plot_has_legend_axes_and_finite_numbers() {
        let uniform = uniform_histogram();
        let mut narrow = histogram();
        for ns in [800, 900, 1000, 1100] {
            narrow.record(ns).expect("value within histogram bounds");
        }
        let mut single = histogram();
        single.record(5000).expect("value within histogram bounds");
        let svg = plot_svg(
            "tickcast bench: latency by percentile",
            &[("hft json", &uniform), ("retail rkyv", &narrow), ("one sample", &single)],
            &Notes::default(),
        );
        assert_wellformed(&svg, "three runs");
        for needle in ["hft json", "retail rkyv", "one sample", "tickcast bench: latency by percentile"] {
            assert!(svg.contains(needle), "no {needle:?}");
        }
        for label in ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
            assert!(svg.contains(&format!(">{label}</text>")), "no x label {label}");
        }
        for tick in ["100 ns", "1 µs", "100 ms"] {
            assert!(svg.contains(&format!(">{tick}</text>")), "no y tick {tick}");
        }
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains(r#"width="900" height="560""#));
    }

    #[test]
    fn plot_sampling_stops_at_max() {
        let mut rare_outlier = histogram();
        rare_outlier.record_n(1000, 10_000_000).expect("value within histogram bounds");
        rare_outlier.record(1_000_000).expect("value within histogram bounds");
        let mut few = histogram();
        for ns in 1..=10 {
            few.record(ns * 1000).expect("value within histogram bounds");
        }
        // (name, histogram, points expected, last point expected)
        let cases = [
            ("max beyond 99.999%", rare_outlier, 101, (5.0, 1000)),
            // The 10th of 10 samples is first reached at q > 0.9, i.e. at i = 21.
            ("max reached early", few.clone(), 22, (1.05, few.max())),
            // At 3 significant digits the bucket holding 100 ms is 65.5 µs wide: its ~65 samples make
            // the max the value at every q above about 1 − 10^−3.2.
            ("known distribution", uniform_histogram(), 66, (3.25, uniform_histogram().max())),
        ];
        for (name, h, len, last) in cases {
            let points = curve(&h);
            assert_eq!(points.len(), len, "{name}: {points:?}");
            assert!(points.windows(2).all(|w| w[0].1 <= w[1].1), "{name}: non-decreasing");
            let (x, ns) = *points.last().expect("a non-empty histogram has points");
            assert!((x - last.0).abs() < 1e-9 && ns == last.1, "{name}: last point {:?}", (x, ns));
        }
    }

    #[test]
    fn plot_with_empty_histograms() {
        let empty = histogram();
        let uniform = uniform_histogram();
        let cases: [(&str, Runs); 3] = [
            ("no runs", vec![]),
            ("only empty", vec![("idle", &empty)]),
            ("empty and full", vec![("idle", &empty), ("busy", &uniform)]),
        ];
        for (name, runs) in cases {
            let svg = plot_svg("empty", &runs, &Notes::default());
            assert_wellformed(&svg, name);
            for (label, _) in &runs {
                assert!(svg.contains(label), "{name}: no legend {label}");
            }
        }
    }

    #[test]
    fn plot_escapes_text() {
        let h = uniform_histogram();
        let svg = plot_svg("a < b & c", &[("<script>", &h)], &Notes::default());
        assert!(svg.contains("a &lt; b &amp; c"));
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"));
    }

    #[test]
    fn notes_go_under_the_title_and_the_objective_across_the_plot() {
        let h = uniform_histogram(); // 1 µs to 100 ms
        let notes = Notes {
            lines: vec!["2 clients × 5 subs".into(), "a < b".into()],
            slo: Some((1_000_000_000, "SLO: p99 ≤ 1s".into())),
        };
        let svg = plot_svg("t", &[("run: held", &h)], &notes);
        assert_wellformed(&svg, "notes");
        assert!(svg.contains(">2 clients × 5 subs</text>") && svg.contains(">a &lt; b</text>"), "{svg}");
        assert!(svg.contains(r#"height="590""#), "two note lines add 30 px: {svg}");
        assert!(svg.contains(">SLO: p99 ≤ 1s</text>") && svg.contains("stroke-dasharray=\"6 4\""), "{svg}");
        // The objective (1 s) is beyond the curve's 100 ms max: the y axis reaches it.
        assert!(svg.contains(">1 s</text>"), "{svg}");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(xml_escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
    }
}
