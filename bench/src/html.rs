//! The report as one self-contained HTML page: inline CSS and SVG bar charts of
//! the same numbers as the table, no scripts, nothing fetched from a network.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{BenchError, IoContext};
use crate::report::{
    format_duration, format_kib, format_seconds, Report, TargetKind, WorkloadReport,
};

/// The file [`Report::write_html`] writes inside its directory.
pub const HTML_FILE: &str = "index.html";

const CHART_WIDTH: f64 = 760.0;
const LABEL_WIDTH: f64 = 200.0;
const BAR_WIDTH: f64 = 380.0;
const ROW_HEIGHT: f64 = 26.0;
const BAR_HEIGHT: f64 = 14.0;
const TOP: f64 = 8.0;

const COLOR_REFERENCE: &str = "#7a7a7a";
const COLOR_LAMINA: &str = "#2b6cb0";
const COLOR_PEER: &str = "#c05621";

/// Escapes `text` for HTML and SVG text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Report {
    /// Writes the report as `index.html` in `dir` (created if missing); returns
    /// the file's path.
    pub fn write_html(&self, dir: &Path) -> Result<PathBuf, BenchError> {
        std::fs::create_dir_all(dir).ctx("create report directory", dir)?;
        let path = dir.join(HTML_FILE);
        std::fs::write(&path, self.to_html()).ctx("write", &path)?;
        Ok(path)
    }

    /// The report as one self-contained HTML page.
    pub fn to_html(&self) -> String {
        let mut out = String::new();
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        out.push_str("<title>lamina bench</title>\n<style>\n");
        out.push_str(
            "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#1a202c}\
             h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}\
             table{border-collapse:collapse;font-size:.9em;margin:.5em 0}\
             td,th{border-bottom:1px solid #e2e8f0;padding:.25em .6em;text-align:right}\
             td:first-child,th:first-child{text-align:left}\
             .note{color:#4a5568;font-size:.9em}.failed{color:#c53030}\
             svg text{font-size:12px;font-family:system-ui,sans-serif}\n",
        );
        out.push_str("</style>\n</head>\n<body>\n<h1>lamina bench</h1>\n");
        let _ = writeln!(
            out,
            "<p>{} · Linux {} · {} CPUs · {}{} repetition{} · {}</p>",
            escape(&self.lamina_version),
            escape(&self.kernel),
            self.cpus,
            if self.quick { "quick · " } else { "" },
            self.repetitions,
            if self.repetitions == 1 { "" } else { "s" },
            format_duration(self.duration_seconds)
        );
        let _ = writeln!(
            out,
            "<p class=\"note\">Bars are medians, whiskers span min to max; ratio = median / median of \
             the reference (<b>{}</b>, for import: overlay2) measured in the same run. Lower is faster. \
             <span style=\"color:{COLOR_REFERENCE}\">■</span> reference \
             <span style=\"color:{COLOR_LAMINA}\">■</span> Lamina \
             <span style=\"color:{COLOR_PEER}\">■</span> other filesystems</p>",
            escape(&self.reference)
        );
        out.push_str("<h2>Targets</h2>\n<table>\n<tr><th>target</th><th>what</th></tr>\n");
        for t in &self.targets {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                escape(&t.id),
                escape(&t.description)
            );
        }
        for s in &self.skipped {
            let hint = s
                .install_hint
                .as_ref()
                .map(|h| format!(" — install: <code>{}</code>", escape(h)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td style=\"text-align:left\">not measured: {}{hint}</td></tr>",
                escape(&s.target),
                escape(&s.reason)
            );
        }
        out.push_str("</table>\n");
        for w in &self.workloads {
            self.workload_section(w, &mut out);
        }
        out.push_str("</body>\n</html>\n");
        out
    }

    fn color_of(&self, target: &str, reference: Option<&str>) -> &'static str {
        if Some(target) == reference {
            return COLOR_REFERENCE;
        }
        match self.targets.iter().find(|t| t.id == target).map(|t| t.kind) {
            Some(TargetKind::Peer) => COLOR_PEER,
            _ => COLOR_LAMINA,
        }
    }

    fn workload_section(&self, w: &WorkloadReport, out: &mut String) {
        let _ = writeln!(
            out,
            "<h2 id=\"{0}\">{0}</h2>\n<p>{1}</p>",
            escape(&w.name),
            escape(&w.description)
        );
        if !w.results.is_empty() {
            self.chart(w, out);
            out.push_str(
                "<table>\n<tr><th>target</th><th>median</th><th>q1</th><th>q3</th><th>min</th>\
                 <th>max</th><th>ratio</th><th>daemon peak RSS</th><th>samples</th></tr>\n",
            );
            for r in &w.results {
                let samples: Vec<String> = r.samples.iter().map(|s| format_seconds(*s)).collect();
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&r.target),
                    format_seconds(r.summary.median),
                    format_seconds(r.summary.q1),
                    format_seconds(r.summary.q3),
                    format_seconds(r.summary.min),
                    format_seconds(r.summary.max),
                    r.ratio
                        .map(|x| format!("{x:.2}"))
                        .unwrap_or_else(|| "–".into()),
                    r.daemon_peak_rss_kib.map(format_kib).unwrap_or_default(),
                    escape(&samples.join(", "))
                );
            }
            out.push_str("</table>\n");
        }
        for s in &w.skipped {
            let _ = writeln!(
                out,
                "<p class=\"note\">skipped {}: {}</p>",
                escape(&s.target),
                escape(&s.reason)
            );
        }
        for s in &w.failed {
            let _ = writeln!(
                out,
                "<p class=\"failed\">failed {}: {}</p>",
                escape(&s.target),
                escape(&s.reason)
            );
        }
    }

    fn chart(&self, w: &WorkloadReport, out: &mut String) {
        let longest = w
            .results
            .iter()
            .map(|r| r.summary.max)
            .fold(0.0f64, f64::max);
        let scale = if longest > 0.0 {
            BAR_WIDTH / longest
        } else {
            0.0
        };
        let height = TOP * 2.0 + ROW_HEIGHT * w.results.len() as f64;
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" height=\"{height}\" \
             viewBox=\"0 0 {CHART_WIDTH} {height}\" role=\"img\" aria-label=\"{} medians\">",
            escape(&w.name)
        );
        let x0 = LABEL_WIDTH;
        for (i, r) in w.results.iter().enumerate() {
            let y = TOP + ROW_HEIGHT * i as f64;
            let mid = y + ROW_HEIGHT / 2.0;
            let color = self.color_of(&r.target, w.reference.as_deref());
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                x0 - 8.0,
                mid + 4.0,
                escape(&r.target)
            );
            let _ = writeln!(
                out,
                "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{BAR_HEIGHT}\" fill=\"{color}\">\
                 <title>{}: median {}</title></rect>",
                mid - BAR_HEIGHT / 2.0,
                (r.summary.median * scale).max(1.0),
                escape(&r.target),
                format_seconds(r.summary.median)
            );
            let (lo, hi) = (x0 + r.summary.min * scale, x0 + r.summary.max * scale);
            let _ = writeln!(
                out,
                "<path d=\"M{lo:.1} {mid:.1}H{hi:.1}M{lo:.1} {:.1}V{:.1}M{hi:.1} {:.1}V{:.1}\" \
                 stroke=\"#1a202c\" stroke-width=\"1\" fill=\"none\"/>",
                mid - 4.0,
                mid + 4.0,
                mid - 4.0,
                mid + 4.0
            );
            let ratio = r.ratio.map(|x| format!(" · ×{x:.2}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}{ratio}</text>",
                x0 + BAR_WIDTH + 10.0,
                mid + 4.0,
                format_seconds(r.summary.median)
            );
        }
        out.push_str("</svg>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    #[test]
    fn the_page_is_self_contained_and_escaped() {
        let html = sample_report().to_html();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<svg"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("src=\"http"));
        assert!(html.contains("&lt;warm&gt;"));
        assert!(html.contains("failed overlay2/fuse: mount failed"));
        assert!(html.contains("install: <code>cargo install fuse-overlayfs</code>"));
        // One bar per result, the reference in its own colour.
        assert_eq!(html.matches("<rect").count(), 2);
        assert!(html.contains(&format!("fill=\"{COLOR_REFERENCE}\"")));
        assert!(html.contains(&format!("fill=\"{COLOR_LAMINA}\"")));
    }

    #[test]
    fn write_html_creates_the_directory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample_report().write_html(&dir.path().join("out")).unwrap();
        assert_eq!(path, dir.path().join("out").join(HTML_FILE));
        assert!(std::fs::read_to_string(path).unwrap().contains("<svg"));
    }

    #[test]
    fn escaping_covers_markup_characters() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
    }
}
