//! `report.svg`: one panel per policy, each drawing every customer group's delivered rate per
//! second (solid) against its capacity (dashed), on a log scale so 10/s and 1,000/s fit one
//! panel. Hand-written SVG: no plotting dependency, opens in any browser.

use std::fmt::Write as _;

use super::Report;

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 240.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 80.0;
const GAP: f64 = 50.0;
/// One colour per group, cycled.
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// The whole chart.
pub(super) fn svg(report: &Report) -> String {
    let panels = report.runs.len().max(1) as f64;
    let height = TOP + panels * (PANEL_HEIGHT + GAP);
    let span = report.duration_secs + report.drain_secs;
    let top_rate = report
        .runs
        .iter()
        .flat_map(|run| &run.groups)
        .flat_map(|g| {
            let delivered = g.delivered_timeline.iter().map(|&d| f64::from(d));
            delivered.chain(g.capacity_timeline.iter().copied())
        })
        .fold(10.0, f64::max);
    // Headroom above the highest line, so a system at its capacity does not sit on the frame.
    let decades = (top_rate * 1.5).log10().ceil().max(1.0);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="16" font-weight="bold">{}: delivered per second (solid) against capacity (dashed)</text>"#,
        escape(&report.scenario)
    );
    legend(&mut svg, report);
    for (i, run) in report.runs.iter().enumerate() {
        let panel = Panel {
            top: TOP + i as f64 * (PANEL_HEIGHT + GAP),
            span,
            decades,
        };
        panel.frame(&mut svg, &run.policy, report);
        for (g, group) in run.groups.iter().enumerate() {
            let colour = COLOURS[g % COLOURS.len()];
            let capacity: Vec<f64> = group.capacity_timeline.clone();
            let delivered: Vec<f64> = group
                .delivered_timeline
                .iter()
                .map(|&d| f64::from(d))
                .collect();
            panel.line(&mut svg, &capacity, colour, true);
            panel.line(&mut svg, &delivered, colour, false);
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn legend(svg: &mut String, report: &Report) {
    let Some(run) = report.runs.first() else {
        return;
    };
    let mut x = LEFT;
    for (g, group) in run.groups.iter().enumerate() {
        let colour = COLOURS[g % COLOURS.len()];
        let label = if group.customers == 1 {
            group.name.clone()
        } else {
            format!("{} (×{})", group.name, group.customers)
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="44" x2="{:.1}" y2="44" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="48">{}</text>"#,
            x + 20.0,
            x + 25.0,
            escape(&label)
        );
        x += 40.0 + 7.0 * label.len() as f64;
    }
}

/// One policy's panel: time on x, log rate on y.
struct Panel {
    top: f64,
    /// Seconds on the x axis.
    span: f64,
    /// Powers of ten on the y axis (from 1/s).
    decades: f64,
}

impl Panel {
    fn x(&self, second: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * second / self.span.max(1.0)
    }

    /// Rates below 1/s sit on the axis.
    fn y(&self, rate: f64) -> f64 {
        let level = rate.max(1.0).log10() / self.decades;
        self.top + PANEL_HEIGHT * (1.0 - level)
    }

    fn frame(&self, svg: &mut String, policy: &str, report: &Report) {
        let bottom = self.top + PANEL_HEIGHT;
        let right = WIDTH - RIGHT;
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
            self.top - 8.0,
            escape(policy)
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{}" width="{}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##,
            self.top,
            right - LEFT
        );
        for decade in 0..=self.decades as u32 {
            let rate = 10f64.powi(decade as i32);
            let y = self.y(rate);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{rate}/s</text>"##,
                LEFT - 6.0,
                y + 4.0
            );
        }
        let step = if self.span > 30.0 { 10 } else { 5 };
        for second in (0..=self.span as u32).step_by(step) {
            let x = self.x(f64::from(second));
            let _ = writeln!(
                svg,
                r#"<text x="{x:.1}" y="{}" text-anchor="middle">{second}s</text>"#,
                bottom + 16.0
            );
        }
        let mut mark = |at: f64, colour: &str, label: &str| {
            let x = self.x(at);
            let _ = writeln!(
                svg,
                r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{bottom}" stroke="{colour}" stroke-dasharray="2,3"/><text x="{:.1}" y="{}" fill="{colour}">{label}</text>"#,
                self.top,
                x + 3.0,
                self.top + 12.0
            );
        };
        mark(report.warmup_secs, "#888", "warmup ends");
        mark(report.duration_secs, "#888", "load ends");
        if let Some(at) = report.crash_at_secs {
            mark(at, "#d00", "SIGKILL");
        }
        for event in &report.node_events {
            let (colour, what) = if event.killed {
                ("#d00", "SIGKILL")
            } else {
                ("#070", "join")
            };
            mark(event.at_secs, colour, &format!("{what} {}", event.node));
        }
    }

    /// A polyline through one value per second (drawn at the middle of its second).
    fn line(&self, svg: &mut String, values: &[f64], colour: &str, dashed: bool) {
        if values.is_empty() {
            return;
        }
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(s, &v)| format!("{:.1},{:.1}", self.x(s as f64 + 0.5), self.y(v)))
            .collect();
        let style = if dashed {
            r#" stroke-dasharray="6,4" stroke-width="1.5""#
        } else {
            r#" stroke-width="2""#
        };
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}"{style} points="{}"/>"#,
            points.join(" ")
        );
    }
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
