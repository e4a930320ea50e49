//! Writing the Prometheus text exposition format (version 0.0.4): each metric family once with
//! its `# HELP` and `# TYPE`, then its samples, label values escaped. Small enough to keep by
//! hand, and it keeps the output exactly what `promtool check metrics` expects.

use std::fmt::Write as _;

use super::metrics::Histogram;

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Exposition {
    /// Starts a family: its help text and type. Call once per name, before its samples.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A histogram's samples: cumulative buckets, `+Inf`, sum and count.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let snapshot = histogram.snapshot();
        let mut cumulative = 0;
        for (bound, count) in snapshot.bounds.iter().zip(&snapshot.counts) {
            cumulative += count;
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&number(*bound)));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_bucket");
        write_labels(&mut self.out, labels, Some("+Inf"));
        let _ = writeln!(self.out, " {}", snapshot.count);
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(snapshot.sum));
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", snapshot.count);
    }

    /// The finished page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// `{a="1",b="2"}`, with `le` last for histogram buckets; nothing for no labels.
fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (name, value) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{name}=\"{}\"", escape(value));
    }
    out.push('}');
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus numbers: integers without a fraction, `NaN` and infinities spelled its way.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut page = Exposition::default();
        page.family("floodgate_x_total", Kind::Counter, "Things.");
        page.sample("floodgate_x_total", &[("customer", "a\"b\\c")], 3.0);
        page.sample("floodgate_x_total", &[], 0.5);
        let text = page.finish();
        assert_eq!(
            text,
            "# HELP floodgate_x_total Things.\n# TYPE floodgate_x_total counter\n\
             floodgate_x_total{customer=\"a\\\"b\\\\c\"} 3\nfloodgate_x_total 0.5\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let histogram = Histogram::new(&[0.1, 1.0]);
        histogram.observe(0.05);
        histogram.observe(0.5);
        histogram.observe(5.0);
        let mut page = Exposition::default();
        page.histogram("h", &[("op", "claim")], &histogram);
        let text = page.finish();
        assert!(
            text.contains("h_bucket{op=\"claim\",le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("h_bucket{op=\"claim\",le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("h_bucket{op=\"claim\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("h_sum{op=\"claim\"} 5.55\n"), "{text}");
        assert!(text.contains("h_count{op=\"claim\"} 3\n"), "{text}");
    }
}
