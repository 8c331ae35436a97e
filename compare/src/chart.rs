//! The chart of durable append throughput against writer count, as plain SVG.

use std::fmt::Write;

use crate::Results;
use crate::numbers::{compact, int};
use crate::systems::Sys;

fn color(s: Sys) -> &'static str {
    match s {
        Sys::Annal => "#c0392b",
        Sys::Sqlite => "#2471a3",
        Sys::Postgres => "#1e8449",
    }
}

fn marker(s: Sys, x: f64, y: f64) -> String {
    let c = color(s);
    match s {
        Sys::Annal => format!(r##"<circle cx="{x:.1}" cy="{y:.1}" r="4.5" fill="{c}"/>"##),
        Sys::Sqlite => format!(
            r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="{c}"/>"#,
            x - 4.0,
            y - 4.0
        ),
        Sys::Postgres => format!(
            r#"<path d="M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z" fill="{c}"/>"#,
            x,
            y - 5.5,
            x + 5.0,
            y + 4.0,
            x - 5.0,
            y + 4.0
        ),
    }
}

/// Durable single-event appends/s of each system at each writer count, log-log, with the
/// disk's one-fdatasync-per-event rate as a reference line.
pub fn writers_chart(counts: &[usize], systems: &[Sys], res: &Results) -> String {
    let (w, h) = (840.0, 470.0);
    let (left, right, top, bottom) = (80.0, 280.0, 60.0, 62.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let series: Vec<(Sys, Vec<(usize, f64)>)> = systems
        .iter()
        .map(|s| {
            let pts = counts
                .iter()
                .filter_map(|n| res.get(&format!("writers/{n}"), *s).map(|v| (*n, v)))
                .filter(|(_, v)| *v > 0.0)
                .collect();
            (*s, pts)
        })
        .collect();
    let fsync = res.raw.get("fsync_overwrite").map(|f| f.value);
    let values: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
        .chain(fsync)
        .collect();
    let (lo, hi) = if values.is_empty() {
        (2.0, 6.0)
    } else {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(0.0, f64::max);
        let lo = min.log10().floor();
        let hi = max.log10().ceil().max(lo + 1.0);
        (lo, hi)
    };
    let (x0, x1) = (
        (*counts.iter().min().unwrap_or(&1) as f64).log2(),
        (*counts.iter().max().unwrap_or(&128) as f64).log2().max(1.0),
    );
    let x = |n: usize| left + (n as f64).log2().clamp(x0, x1).sub_frac(x0, x1) * pw;
    let y = |v: f64| top + ph - (v.log10() - lo) / (hi - lo) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="{w}" height="{h}" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="24" font-size="16" font-weight="bold">Durable single-event appends by number of concurrent writers</text>"##
    );
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="42" fill="#555">events/s, log scale; each writer appends to its own stream and waits for durability (annal: Durability::Always)</text>"##
    );
    // Horizontal grid: decades, with 2 and 5 in between.
    for d in lo as i32..=hi as i32 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(d);
            if v.log10() > hi + 1e-9 {
                continue;
            }
            let yy = y(v);
            let (stroke, width) = if m == 1.0 { ("#bbb", 1.0) } else { ("#e5e5e5", 0.8) };
            let _ = writeln!(
                s,
                r#"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{stroke}" stroke-width="{width}"/>"#,
                left + pw
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{}">{}</text>"#,
                left - 8.0,
                yy + 4.0,
                if m == 1.0 { "#333" } else { "#999" },
                compact(v)
            );
        }
    }
    // Vertical grid at each writer count.
    for n in counts {
        let xx = x(*n);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#e5e5e5"/>"##,
            top + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{n}</text>"#,
            top + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">concurrent writers (log scale)</text>"#,
        left + pw / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20,{:.1}) rotate(-90)" text-anchor="middle">events/s</text>"#,
        top + ph / 2.0
    );
    if let Some(f) = fsync {
        let yy = y(f);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#777" stroke-width="1.5" stroke-dasharray="6,4"/>"##,
            left + pw
        );
    }
    for (sys, pts) in &series {
        if pts.len() > 1 {
            let path: Vec<String> = pts.iter().map(|(n, v)| format!("{:.1},{:.1}", x(*n), y(*v))).collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.2"/>"#,
                path.join(" "),
                color(*sys)
            );
        }
        for (n, v) in pts {
            let _ = writeln!(s, "{}", marker(*sys, x(*n), y(*v)));
        }
    }
    // Value labels right of the points, pushed apart where values are close, with a white halo.
    for n in counts {
        let mut labels: Vec<(f64, Sys, f64)> = series
            .iter()
            .filter_map(|(sys, pts)| pts.iter().find(|(m, _)| m == n).map(|(_, v)| (y(*v) + 4.0, *sys, *v)))
            .collect();
        labels.sort_by(|a, b| a.0.total_cmp(&b.0));
        for i in 1..labels.len() {
            labels[i].0 = labels[i].0.max(labels[i - 1].0 + 13.0);
        }
        for (ly, sys, v) in labels {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{ly:.1}" fill="{}" font-size="11" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"#,
                x(*n) + 8.0,
                color(sys),
                compact(v)
            );
        }
    }
    // Legend.
    let lx = left + pw + 70.0;
    let mut ly = top + 14.0;
    for (sys, _) in &series {
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{}" stroke-width="2.2"/>"#,
            lx + 28.0,
            color(*sys)
        );
        let _ = writeln!(s, "{}", marker(*sys, lx + 14.0, ly));
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 36.0,
            ly + 4.0,
            sys.name()
        );
        ly += 24.0;
    }
    if let Some(f) = fsync {
        let _ = writeln!(
            s,
            r##"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="#777" stroke-width="1.5" stroke-dasharray="6,4"/>"##,
            lx + 28.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">disk: one fdatasync</text>"#,
            lx + 36.0,
            ly + 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">per event ({}/s)</text>"#,
            lx + 36.0,
            ly + 19.0,
            int(f)
        );
    }
    s.push_str("</svg>\n");
    s
}

trait SubFrac {
    /// Where `self` lies between `a` and `b`, as a fraction.
    fn sub_frac(self, a: f64, b: f64) -> f64;
}

impl SubFrac for f64 {
    fn sub_frac(self, a: f64, b: f64) -> f64 {
        if b > a { (self - a) / (b - a) } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_every_point_and_label() {
        let mut res = Results::default();
        for (sys, vals) in [
            (Sys::Annal, [432.0, 23_052.0, 60_458.0, 82_345.0]),
            (Sys::Sqlite, [708.0, 4028.0, 2702.0, 2806.0]),
            (Sys::Postgres, [258.0, 5851.0, 4729.0, 4754.0]),
        ] {
            for (n, v) in [1, 8, 32, 128].iter().zip(vals) {
                res.push_run(&format!("writers/{n}"), sys, v);
            }
        }
        res.push_raw("fsync_overwrite", 1956.0);
        let svg = writers_chart(&[1, 8, 32, 128], &Sys::ALL, &res);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("paint-order").count(), 12);
        for label in ["432", "708", "258", "82.3k", "1,956/s"] {
            assert!(
                svg.contains(&format!(">{label}<")) || svg.contains(label),
                "{label} missing"
            );
        }
        if let Some(path) = std::env::var_os("ANNAL_COMPARE_CHART_SAMPLE") {
            std::fs::write(path, &svg).unwrap();
        }
    }

    #[test]
    fn compact_values() {
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(7_912.0), "7.9k");
        assert_eq!(compact(10_000.0), "10k");
        assert_eq!(compact(75_400.0), "75.4k");
        assert_eq!(compact(290_000.0), "290k");
        assert_eq!(compact(1_000_000.0), "1M");
        assert_eq!(compact(2_730_000.0), "2.73M");
    }
}
