//! Plots of a run, as SVG files (`--plots DIR`): the latency of each transport and codec against
//! its floor, and the lossy network's p99 by loss rate. Plain SVG written here: grouped bars on
//! a log scale need no charting library, and SVG text needs no fonts on the machine.

use crate::scenario::Report;
use std::fmt::Write as _;
use std::path::Path;

/// One group of bars (an x position) with its label, and (series, value in µs) pairs.
struct Group {
    label: String,
    bars: Vec<(usize, u64)>,
}

const COLORS: [&str; 4] = ["#9aa5b1", "#3b6cf6", "#e8590c", "#22a06b"];

fn chart(title: &str, series: &[&str], groups: &[Group]) -> String {
    let (w, h) = (960.0, 460.0);
    let (left, right, top, bottom) = (70.0, 20.0, 50.0, 90.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = groups.iter().flat_map(|g| g.bars.iter().map(|b| b.1)).max().unwrap_or(1).max(10) as f64;
    // Log scale from 10 µs to the next power of ten above the largest value.
    let lo = 10f64.log10();
    let hi = 10f64.powf(max.log10().ceil()).log10().max(lo + 1.0);
    let y = |v: f64| top + plot_h * (1.0 - ((v.max(10.0)).log10() - lo) / (hi - lo));
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="#fff"/><text x="{}" y="28" font-size="17" text-anchor="middle">{title}</text>"##,
        w / 2.0
    );
    let mut tick = 10f64;
    while tick.log10() <= hi + 1e-9 {
        let ty = y(tick);
        let label = if tick >= 1000.0 { format!("{} ms", tick / 1000.0) } else { format!("{tick} µs") };
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{ty}" y2="{ty}" stroke="#e3e6ea"/><text x="{}" y="{}" text-anchor="end" fill="#6b7684">{label}</text>"##,
            w - right,
            left - 6.0,
            ty + 4.0
        );
        tick *= 10.0;
    }
    let gw = plot_w / groups.len().max(1) as f64;
    let bw = (gw * 0.8 / series.len().max(1) as f64).min(40.0);
    for (gi, g) in groups.iter().enumerate() {
        let mut bars = g.bars.clone();
        bars.sort_unstable();
        let g = Group { label: g.label.clone(), bars };
        let gx = left + gi as f64 * gw + (gw - bw * series.len() as f64) / 2.0;
        for &(si, v) in &g.bars {
            let (x, top_y) = (gx + si as f64 * bw, y(v as f64));
            let label = if v >= 1000 { format!("{:.1} ms", v as f64 / 1000.0) } else { format!("{v} µs") };
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{top_y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{label}</title></rect><text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{label}</text>"##,
                bw - 2.0,
                (top + plot_h - top_y).max(0.0),
                COLORS[si % COLORS.len()],
                x + bw / 2.0 - 1.0,
                top_y - 3.0
            );
        }
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
            left + gi as f64 * gw + gw / 2.0,
            top + plot_h + 18.0,
            g.label
        );
    }
    for (si, name) in series.iter().enumerate().filter(|(_, n)| !n.is_empty()) {
        let lx = left + si as f64 * 215.0;
        let ly = h - 30.0;
        let _ = write!(
            s,
            r##"<rect x="{lx}" y="{}" width="14" height="14" fill="{}"/><text x="{}" y="{}">{name}</text>"##,
            ly - 11.0,
            COLORS[si % COLORS.len()],
            lx + 20.0,
            ly
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes the plots this run's reports allow; returns the files written.
pub(crate) fn write(dir: &Path, reports: &[Report]) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut written = Vec::new();
    let latency: Vec<Group> = reports
        .iter()
        .filter(|r| r.scenario.starts_with("latency_1to1"))
        .map(|r| {
            let mut bars = vec![(1, r.p50_us), (2, r.p99_us)];
            if let Some(f) = r.floor_p50_us {
                bars.insert(0, (0, f));
            }
            Group { label: format!("{} {}", r.transport, r.codec), bars }
        })
        .collect();
    if !latency.is_empty() {
        let svg =
            chart("1:1 latency, sender to receiver (log scale)", &["floor p50", "confab p50", "confab p99"], &latency);
        let path = dir.join("latency.svg");
        std::fs::write(&path, svg).map_err(|e| e.to_string())?;
        written.push(path.display().to_string());
    }
    let mut lossy: Vec<Group> = Vec::new();
    for r in reports.iter().filter(|r| r.loss_percent.is_some()) {
        let label = match r.rtt_ms.filter(|&ms| ms > 0) {
            Some(ms) => format!("{}% loss, {ms} ms", r.loss_percent.unwrap_or(0)),
            None => format!("{}% loss", r.loss_percent.unwrap_or(0)),
        };
        let series = if r.transport == "webtransport" { 0 } else { 1 };
        let bars = [(series, r.p99_us), (series + 2, r.p999_us)];
        match lossy.iter_mut().find(|g| g.label == label) {
            Some(g) => g.bars.extend(bars),
            None => lossy.push(Group { label, bars: bars.to_vec() }),
        }
    }
    if !lossy.is_empty() {
        let svg = chart(
            "Lossy network: tail latency, one user in 10 conversations (log scale)",
            &[
                "WebTransport p99 (a stream each)",
                "WebSocket p99 (one TCP stream)",
                "WebTransport p99.9",
                "WebSocket p99.9",
            ],
            &lossy,
        );
        let path = dir.join("lossy.svg");
        std::fs::write(&path, svg).map_err(|e| e.to_string())?;
        written.push(path.display().to_string());
    }
    Ok(written)
}
