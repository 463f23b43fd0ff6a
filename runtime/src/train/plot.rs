//! The loss curve as a self-contained SVG (no plotting dependency).

use std::fmt::Write;

use super::trainer::StepReport;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;

/// An SVG of the training loss per update (skipped updates left out) and the
/// held-out loss `(step, loss)` points, with axes, ticks and a legend.
pub fn loss_curve_svg(title: &str, history: &[StepReport], heldout: &[(u64, f64)]) -> String {
    let train: Vec<(f64, f64)> = history
        .iter()
        .filter(|r| !r.skipped && r.loss.is_finite())
        .map(|r| (r.step as f64, r.loss))
        .collect();
    let held: Vec<(f64, f64)> = heldout
        .iter()
        .filter(|(_, l)| l.is_finite())
        .map(|&(s, l)| (s as f64, l))
        .collect();
    let all = train.iter().chain(&held);
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    if y_max - y_min < 1e-9 {
        y_max = y_min + 1.0;
    }
    let pad = 0.05 * (y_max - y_min);
    let (y_lo, y_hi) = ((y_min - pad).max(0.0), y_max + pad);
    let sx = |x: f64| LEFT + (W - LEFT - RIGHT) * x / x_max;
    let sy = |y: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (y - y_lo) / (y_hi - y_lo));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="{W}" height="{H}" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"##,
        W / 2.0,
        escape(title)
    );
    for i in 0..=5 {
        let y = y_lo + (y_hi - y_lo) * f64::from(i) / 5.0;
        let py = sy(y);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{y:.3}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            py + 4.0
        );
        let x = x_max * f64::from(i) / 5.0;
        let px = sx(x);
        let _ = writeln!(
            s,
            r##"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{x:.0}</text>"##,
            H - BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">update</text><text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">loss (nats/token)</text>"##,
        (LEFT + W - RIGHT) / 2.0,
        H - 8.0,
        H / 2.0,
        H / 2.0
    );
    let points = |pts: &[(f64, f64)]| -> String {
        pts.iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !train.is_empty() {
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.2" points="{}"/>"##,
            points(&train)
        );
    }
    if !held.is_empty() {
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{}"/>"##,
            points(&held)
        );
        for &(x, y) in &held {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#d62728"/>"##,
                sx(x),
                sy(y)
            );
        }
    }
    let lx = W - RIGHT - 150.0;
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="{t}" x2="{}" y2="{t}" stroke="#1f77b4" stroke-width="2"/><text x="{}" y="{}">train</text><line x1="{lx}" y1="{t2}" x2="{}" y2="{t2}" stroke="#d62728" stroke-width="2"/><text x="{}" y="{}">held-out</text>"##,
        lx + 24.0,
        lx + 30.0,
        TOP + 18.0,
        lx + 24.0,
        lx + 30.0,
        TOP + 34.0,
        t = TOP + 14.0,
        t2 = TOP + 30.0
    );
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
