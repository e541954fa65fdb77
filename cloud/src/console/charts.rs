//! Server-side SVG charts of the admin-center console, drawn with `plotters`' SVG backend.
//!
//! Every chart is a standalone `<svg>` element (no XML prologue) with `role="img"`, an
//! `aria-label` and a `<title>` that tell the data in words, a `viewBox` and no fixed
//! `width`/`height`, so it scales with the CSS width of its container. Text is real `<text>`
//! elements: plotters' SVG backend writes text as such and leaves the glyphs to the browser, so
//! no font is embedded and no font feature of plotters is enabled. Without a font the crate can
//! not measure text, so the layouts here never depend on measured widths: labels stand on a line
//! of their own above their bar, numbers are anchored to the end of the bar, and long labels are
//! cut (with `…`) by a conservative estimate of their width; the full text stays in the title.
//!
//! The output is deterministic: the same input gives the same bytes.

use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Width of the bar charts (funnel and bars), in viewBox units.
const WIDTH: u32 = 640;
/// Left and right margin.
const PAD: i32 = 20;
/// Height of one row (label line + bar + gap).
const ROW: i32 = 52;
/// Height of a bar.
const BAR: i32 = 20;
/// Top of the first row (below the heading).
const TOP: i32 = 52;

/// Near-black text (contrast 17:1 on white).
const INK: RGBColor = RGBColor(0x1F, 0x1F, 0x1F);
/// Secondary text: counts, percentages, empty states (contrast 7:1 on white).
const MUTED: RGBColor = RGBColor(0x59, 0x59, 0x59);
/// Bars and the gauge's value arc (contrast 6.6:1 on white).
const ACCENT: RGBColor = RGBColor(0x0B, 0x5C, 0xAD);
/// The gauge's track and the stub of a zero bar: decoration only, never the sole carrier of data.
const TRACK: RGBColor = RGBColor(0xDD, 0xDD, 0xDD);

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// The co-management enrollment funnel: one horizontal bar per stage, in the given order, each
/// labelled with its name, its count and its share of the first stage ("n/a" when the first
/// stage is 0). No stages draws "No data".
pub(crate) fn funnel(stages: &[(&str, u64)]) -> String {
    const HEADING: &str = "Co-management enrollment funnel";
    let first = stages.first().map_or(0, |s| s.1);
    let rows: Vec<(String, u64, String)> = stages
        .iter()
        .map(|&(name, count)| {
            let value = format!("{} ({})", thousands(count), percent(count, first));
            (name.to_owned(), count, value)
        })
        .collect();
    let description = if stages.is_empty() {
        format!("{HEADING}: no data.")
    } else {
        let parts: Vec<String> = stages
            .iter()
            .map(|&(name, count)| {
                format!(
                    "{name} {} ({} of {})",
                    thousands(count),
                    percent(count, first),
                    stages[0].0
                )
            })
            .collect();
        format!("{HEADING}: {}.", parts.join("; "))
    };
    bar_rows(HEADING, &rows, &description)
}

/// A horizontal bar chart of labelled counts under a heading. Zero counts keep their row (a
/// grey stub and "0"); an empty list draws "No data".
pub(crate) fn bars(title: &str, items: &[(&str, u64)]) -> String {
    let rows: Vec<(String, u64, String)> = items
        .iter()
        .map(|&(name, count)| (name.to_owned(), count, thousands(count)))
        .collect();
    let description = if items.is_empty() {
        format!("{title}: no data.")
    } else {
        let parts: Vec<String> = items
            .iter()
            .map(|&(name, count)| format!("{name} {}", thousands(count)))
            .collect();
        format!("{title}: {}.", parts.join("; "))
    };
    bar_rows(title, &rows, &description)
}

/// Draws rows of (label, count, value text): the label on a line, below it a bar as long as the
/// count (relative to the largest) and the value text just after the bar's end.
fn bar_rows(heading: &str, rows: &[(String, u64, String)], description: &str) -> String {
    let height = if rows.is_empty() {
        TOP + 60
    } else {
        TOP + ROW * rows.len() as i32 + 8
    };
    let size = (WIDTH, height as u32);
    let inner = WIDTH as i32 - 2 * PAD;
    render(size, description, |area| {
        area.draw(&Text::new(
            fit(heading, inner, 17.0 * 1.1),
            (PAD, 28),
            font(17.0, FontStyle::Bold, &INK, HPos::Left, VPos::Bottom),
        ))?;
        if rows.is_empty() {
            area.draw(&Text::new(
                "No data".to_owned(),
                (WIDTH as i32 / 2, TOP + 24),
                font(16.0, FontStyle::Normal, &MUTED, HPos::Center, VPos::Center),
            ))?;
            return Ok(());
        }
        // Room kept right of the longest bar for the longest value text.
        let value_room = rows
            .iter()
            .map(|r| estimate_width(&r.2, 14.0))
            .max()
            .unwrap_or(0)
            + 12;
        let bar_room = (inner - value_room).max(inner / 3);
        let max = rows.iter().map(|r| r.1).max().unwrap_or(0);
        for (i, (label, count, value)) in rows.iter().enumerate() {
            let y = TOP + ROW * i as i32;
            area.draw(&Text::new(
                fit(label, inner, 14.0),
                (PAD, y + 14),
                font(14.0, FontStyle::Normal, &INK, HPos::Left, VPos::Bottom),
            ))?;
            let bar_top = y + 20;
            let len = if max == 0 {
                0
            } else {
                // u128: no overflow for any u64 count.
                ((*count as u128 * bar_room as u128 + max as u128 / 2) / max as u128) as i32
            };
            if *count == 0 {
                area.draw(&Rectangle::new(
                    [(PAD, bar_top), (PAD + 3, bar_top + BAR)],
                    TRACK.filled(),
                ))?;
            } else {
                let len = len.max(2);
                area.draw(&Rectangle::new(
                    [(PAD, bar_top), (PAD + len, bar_top + BAR)],
                    ACCENT.filled(),
                ))?;
            }
            area.draw(&Text::new(
                value.clone(),
                (PAD + len.max(3) + 8, bar_top + BAR / 2),
                font(14.0, FontStyle::Normal, &MUTED, HPos::Left, VPos::Center),
            ))?;
        }
        Ok(())
    })
}

/// An Endpoint analytics score (0–100) as a semicircular gauge with the number in its middle;
/// `None` (or a NaN) draws an empty grey gauge reading "Insufficient data". Scores outside
/// 0–100 are clamped for the arc; the number shown is the score, rounded to one decimal.
pub(crate) fn gauge(label: &str, score: Option<f64>) -> String {
    const W: i32 = 320;
    const H: i32 = 220;
    const CX: i32 = W / 2;
    const CY: i32 = 176;
    const OUTER: f64 = 120.0;
    const INNER: f64 = 90.0;
    let score = score.filter(|s| s.is_finite());
    let shown = score.map(score_text);
    let description = match &shown {
        Some(s) => format!("{label}: score {s} out of 100."),
        None => format!("{label}: insufficient data."),
    };
    render((W as u32, H as u32), &description, |area| {
        area.draw(&Text::new(
            fit(label, W - 2 * PAD, 16.0 * 1.1),
            (CX, 28),
            font(16.0, FontStyle::Bold, &INK, HPos::Center, VPos::Bottom),
        ))?;
        area.draw(&Polygon::new(
            band(CX, CY, INNER, OUTER, 1.0),
            TRACK.filled(),
        ))?;
        match (score, &shown) {
            (Some(s), Some(text)) => {
                let fraction = (s / 100.0).clamp(0.0, 1.0);
                if fraction > 0.0 {
                    area.draw(&Polygon::new(
                        band(CX, CY, INNER, OUTER, fraction),
                        ACCENT.filled(),
                    ))?;
                }
                area.draw(&Text::new(
                    text.clone(),
                    (CX, CY - 16),
                    font(40.0, FontStyle::Bold, &INK, HPos::Center, VPos::Bottom),
                ))?;
                area.draw(&Text::new(
                    "out of 100".to_owned(),
                    (CX, CY - 2),
                    font(12.5, FontStyle::Normal, &MUTED, HPos::Center, VPos::Bottom),
                ))?;
            }
            _ => {
                area.draw(&Text::new(
                    "Insufficient data".to_owned(),
                    (CX, CY - 12),
                    font(16.0, FontStyle::Normal, &MUTED, HPos::Center, VPos::Bottom),
                ))?;
            }
        }
        for (x, text) in [
            (CX - ((OUTER + INNER) / 2.0) as i32, "0"),
            (CX + ((OUTER + INNER) / 2.0) as i32, "100"),
        ] {
            area.draw(&Text::new(
                text.to_owned(),
                (x, CY + 8),
                font(12.0, FontStyle::Normal, &MUTED, HPos::Center, VPos::Top),
            ))?;
        }
        Ok(())
    })
}

/// The points of a semicircular band from the left end (score 0) clockwise over the top, as far
/// as `fraction` of the half turn.
fn band(cx: i32, cy: i32, inner: f64, outer: f64, fraction: f64) -> Vec<(i32, i32)> {
    // A point every two degrees: smooth at this radius, and a short `points` list.
    let steps = ((fraction * 90.0).ceil() as usize).max(1);
    let angle = |i: usize| std::f64::consts::PI * (1.0 - fraction * i as f64 / steps as f64);
    let point = |r: f64, a: f64| {
        (
            cx + (r * a.cos()).round() as i32,
            cy - (r * a.sin()).round() as i32,
        )
    };
    let mut points: Vec<(i32, i32)> = (0..=steps).map(|i| point(outer, angle(i))).collect();
    points.extend((0..=steps).rev().map(|i| point(inner, angle(i))));
    points
}

/// Draws with `draw` into an SVG of `size` on white and makes the result accessible: the
/// backend's opening tag is replaced by one with `role="img"`, an `aria-label` and a `<title>`.
fn render<F>(size: (u32, u32), description: &str, draw: F) -> String
where
    F: for<'a, 'b> FnOnce(&'b Area<'a>) -> DrawResult,
{
    let mut buf = String::new();
    let drawn = {
        let area = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        area.fill(&WHITE)
            .and_then(|()| draw(&area))
            .and_then(|()| area.present())
            .is_ok()
    };
    let body = match buf.split_once('\n') {
        // The first line is the backend's `<svg …>` tag; the rest ends with `</svg>\n`.
        Some((open, rest)) if drawn && open.starts_with("<svg") => rest.trim_end().to_owned(),
        _ => "<text x=\"10\" y=\"20\">Chart unavailable</text>\n</svg>".to_owned(),
    };
    let label = escape(description);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"{label}\" font-family=\"sans-serif\">\n<title>{label}</title>\n{body}",
        w = size.0,
        h = size.1,
    )
}

/// A text style of `px` pixels. Plotters writes `font-size` as the given size divided by 1.24,
/// so the size given is the float nearest `px * 1.24` that divides back to exactly `px`. Not
/// every `px` has one (13 and 15 do not; 12, 12.5, 14, 16, 17 and 40 do): use those that do, or
/// the output carries a `13.000000000000002`.
fn font<'a>(px: f64, style: FontStyle, color: &'a RGBColor, h: HPos, v: VPos) -> TextStyle<'a> {
    let scaled = px * 1.24;
    let (mut down, mut up) = (scaled, scaled);
    let mut size = scaled;
    for _ in 0..64 {
        if let Some(s) = [down, up].into_iter().find(|s| s / 1.24 == px) {
            size = s;
            break;
        }
        (down, up) = (down.next_down(), up.next_up());
    }
    FontDesc::new(FontFamily::SansSerif, size, style)
        .color(color)
        .pos(Pos::new(h, v))
}

/// Escapes text for SVG/XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A generous estimate of the width of `text` at `px` pixels in a wide sans-serif font (DejaVu
/// Sans; bold adds about a tenth): capitals and the widest lower-case letters at 0.9 em, narrow
/// punctuation at 0.4 em, other ASCII at 0.64 em, anything else (accents, CJK, emoji) at a full em.
fn estimate_width(text: &str, px: f64) -> i32 {
    let ems: f64 = text
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'm' | 'w' | '@' | '%' => 0.9,
            ' ' | '.' | ',' | ':' | ';' | '\'' | '|' | 'i' | 'j' | 'l' | '!' => 0.4,
            c if c.is_ascii() => 0.64,
            _ => 1.0,
        })
        .sum();
    (ems * px).ceil() as i32
}

/// `text` cut with `…` so its estimated width at `px` stays within `room`.
fn fit(text: &str, room: i32, px: f64) -> String {
    if estimate_width(text, px) <= room {
        return text.to_owned();
    }
    let mut out = String::new();
    for c in text.chars() {
        out.push(c);
        if estimate_width(&out, px) + px as i32 > room {
            out.pop();
            break;
        }
    }
    out.push('…');
    out
}

/// `count` with thousands separators: 1234567 → "1,234,567".
fn thousands(count: u64) -> String {
    let digits = count.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// `part` as a percentage of `whole`, rounded to one decimal, without a trailing ".0"; "n/a"
/// when `whole` is 0. Integer arithmetic, so the text is exact and deterministic.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "n/a".to_owned();
    }
    let tenths = (part as u128 * 1000 + whole as u128 / 2) / whole as u128;
    if tenths.is_multiple_of(10) {
        format!("{}%", tenths / 10)
    } else {
        format!("{}.{}%", tenths / 10, tenths % 10)
    }
}

/// A score rounded to one decimal, without a trailing ".0".
fn score_text(score: f64) -> String {
    let tenths = (score * 10.0).round();
    if tenths % 10.0 == 0.0 {
        format!("{}", tenths / 10.0)
    } else {
        format!("{:.1}", tenths / 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the frame every chart shares and that tags are balanced.
    fn check_frame(svg: &str) {
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert!(!svg.starts_with("<?xml"));
        assert!(svg.contains("role=\"img\""));
        assert!(svg.contains("aria-label=\""));
        assert!(svg.contains("<title>"));
        assert!(svg.contains("viewBox=\"0 0 "));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert_eq!(
            svg.matches("<title>").count(),
            svg.matches("</title>").count()
        );
        // Well-formed enough: no raw `<` or `&` outside tags and entities.
        let mut depth = 0i32;
        let mut rest = svg;
        while let Some(i) = rest.find('<') {
            let tag_end = rest[i..].find('>').expect("unclosed tag") + i;
            let tag = &rest[i + 1..tag_end];
            assert!(!tag.contains('<'), "raw < in {tag}");
            if tag.starts_with('/') {
                depth -= 1;
            } else if !tag.ends_with('/') {
                depth += 1;
            }
            assert!(depth >= 0);
            let text = &rest[tag_end + 1..];
            let text = &text[..text.find('<').unwrap_or(text.len())];
            for (j, _) in text.match_indices('&') {
                let entity = &text[j..];
                assert!(
                    ["&lt;", "&gt;", "&amp;", "&quot;", "&apos;"]
                        .iter()
                        .any(|e| entity.starts_with(e)),
                    "raw & in {text}"
                );
            }
            rest = &rest[tag_end + 1..];
        }
        assert_eq!(depth, 0, "unbalanced tags");
    }

    /// The texts of the `<text>` elements.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .map(|t| {
                let start = t.find('>').unwrap() + 1;
                let end = t.find("</text>").unwrap();
                t[start..end].trim().to_owned()
            })
            .collect()
    }

    const FUNNEL: &[(&str, u64)] = &[
        ("Eligible", 1200),
        ("Scheduled", 800),
        ("Enrollment initiated", 300),
        ("Enrolled", 250),
    ];

    #[test]
    fn charts_funnel_labels_counts_and_shares() {
        let svg = funnel(FUNNEL);
        check_frame(&svg);
        let texts = texts(&svg);
        for label in ["Eligible", "Scheduled", "Enrollment initiated", "Enrolled"] {
            assert!(texts.iter().any(|t| t == label), "{label} in {texts:?}");
        }
        for value in ["1,200 (100%)", "800 (66.7%)", "300 (25%)", "250 (20.8%)"] {
            assert!(texts.iter().any(|t| t == value), "{value} in {texts:?}");
        }
        assert!(svg.contains("Enrolled 250 (20.8% of Eligible)"));
        assert_eq!(svg, funnel(FUNNEL), "deterministic");
    }

    #[test]
    fn charts_funnel_empty_and_zero_first_stage() {
        let svg = funnel(&[]);
        check_frame(&svg);
        assert!(texts(&svg).iter().any(|t| t == "No data"));
        let svg = funnel(&[("Eligible", 0), ("Enrolled", 0)]);
        check_frame(&svg);
        assert!(texts(&svg).iter().any(|t| t == "0 (n/a)"));
    }

    #[test]
    fn charts_gauge_score_and_insufficient_data() {
        let svg = gauge("Startup performance", Some(72.0));
        check_frame(&svg);
        let t = texts(&svg);
        assert!(t.iter().any(|t| t == "72"), "{t:?}");
        assert!(t.iter().any(|t| t == "Startup performance"));
        assert!(svg.contains("aria-label=\"Startup performance: score 72 out of 100.\""));
        assert!(!t.iter().any(|t| t == "Insufficient data"));
        assert_eq!(svg, gauge("Startup performance", Some(72.0)));
        assert!(texts(&gauge("x", Some(64.25))).iter().any(|t| t == "64.3"));
        check_frame(&gauge("x", Some(0.0)));
        check_frame(&gauge("x", Some(100.0)));
        check_frame(&gauge("x", Some(140.0)));

        for empty in [None, Some(f64::NAN)] {
            let svg = gauge("App reliability", empty);
            check_frame(&svg);
            assert!(texts(&svg).iter().any(|t| t == "Insufficient data"));
            assert!(svg.contains("insufficient data."));
        }
    }

    #[test]
    fn charts_bars_zero_items_and_empty() {
        let svg = bars(
            "Protection",
            &[("Protected", 1234567), ("Unprotected", 12), ("Unknown", 0)],
        );
        check_frame(&svg);
        let t = texts(&svg);
        for expected in [
            "Protection",
            "Protected",
            "1,234,567",
            "Unprotected",
            "12",
            "Unknown",
            "0",
        ] {
            assert!(t.iter().any(|t| t == expected), "{expected} in {t:?}");
        }
        let svg = bars("Eligibility", &[]);
        check_frame(&svg);
        assert!(texts(&svg).iter().any(|t| t == "No data"));
        let svg = bars("All zero", &[("a", 0), ("b", 0)]);
        check_frame(&svg);
        assert_eq!(texts(&svg).iter().filter(|t| *t == "0").count(), 2);
    }

    #[test]
    fn charts_escape_labels() {
        let evil = "<b>&\"quoted\" 'x'";
        let escaped = "&lt;b&gt;&amp;&quot;quoted&quot; &apos;x&apos;";
        for svg in [
            funnel(&[(evil, 3), ("ok", 1)]),
            gauge(evil, Some(50.0)),
            gauge(evil, None),
            bars(evil, &[(evil, 1)]),
        ] {
            check_frame(&svg);
            assert!(svg.contains("&lt;b&gt;&amp;"), "{svg}");
            assert!(svg.contains(escaped), "{svg}");
            assert!(!svg.contains("<b>"));
        }
    }

    #[test]
    fn charts_long_labels_are_cut_but_kept_in_the_title() {
        let long = "A very long eligibility class name that goes on and on ".repeat(4);
        let svg = bars("Eligibility", &[(long.as_str(), 5)]);
        check_frame(&svg);
        assert!(texts(&svg).iter().any(|t| t.ends_with('…')));
        assert!(svg.contains(&format!("{long} 5")));
    }

    #[test]
    fn charts_number_formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(2, 3), "66.7%");
        assert_eq!(percent(5, 0), "n/a");
        assert_eq!(percent(u64::MAX, u64::MAX), "100%");
        assert_eq!(score_text(72.0), "72");
        assert_eq!(score_text(99.96), "100");
        assert_eq!(score_text(0.04), "0");
    }

    /// Writes an example of each chart to `CHARTS_EXAMPLES_DIR` (when set), to look at.
    #[test]
    fn charts_write_examples() {
        let Some(dir) = std::env::var_os("CHARTS_EXAMPLES_DIR") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let examples = [
            ("funnel", funnel(FUNNEL)),
            ("gauge", gauge("Startup performance", Some(72.0))),
            ("gauge-empty", gauge("App reliability", None)),
            (
                "bars",
                bars(
                    "Defender protection <b>&",
                    &[("Protected", 1234), ("Unprotected", 87), ("Unknown", 0)],
                ),
            ),
            ("bars-empty", bars("Eligibility classes", &[])),
            (
                "bars-long",
                bars(
                    &"WIDE HEADING MMMM ".repeat(6),
                    &[
                        (&"ELIGIBLE WHEN MANAGED BY CONFIGMGR ".repeat(3), u64::MAX),
                        (
                            &"mixed Label with ümlauts and 漢字 ".repeat(3),
                            u64::MAX / 3,
                        ),
                        ("short", 1),
                    ],
                ),
            ),
            (
                "gauge-long",
                gauge(&"Work from anywhere MMMM ".repeat(3), Some(99.96)),
            ),
        ];
        for (name, svg) in examples {
            std::fs::write(dir.join(format!("{name}.svg")), svg).unwrap();
        }
    }
}
