//! Rendering for people: aligned tables, colour only on a terminal and never with NO_COLOR.

use std::io::IsTerminal;

/// Whether stdout gets colour.
pub fn colour_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// A colour for a status word.
#[derive(Clone, Copy)]
pub enum Tone {
    Good,
    Warn,
    Bad,
    Dim,
    Plain,
}

/// Paints `text` when colour is on.
pub fn paint(text: &str, tone: Tone, colour: bool) -> String {
    if !colour || text.is_empty() {
        return text.to_string();
    }
    let code = match tone {
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "31",
        Tone::Dim => "2",
        Tone::Plain => return text.to_string(),
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// A table whose columns are padded to their widest cell; cells may carry a tone.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<(String, Tone)>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: vec![],
        }
    }

    pub fn row(&mut self, cells: Vec<(String, Tone)>) {
        self.rows.push(cells);
    }

    pub fn render(&self, colour: bool) -> String {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, (c, _)) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<(String, Tone)>, out: &mut String| {
            let last = cells.len().saturating_sub(1);
            for (i, (c, tone)) in cells.into_iter().enumerate() {
                let pad = if i == last {
                    0
                } else {
                    widths[i] - c.chars().count() + 2
                };
                out.push_str(&paint(&c, tone, colour));
                out.push_str(&" ".repeat(pad));
            }
            // No trailing spaces (an empty last cell leaves its column's padding).
            out.truncate(out.trim_end_matches(' ').len());
            out.push('\n');
        };
        line(
            self.header
                .iter()
                .map(|h| (h.to_uppercase(), Tone::Dim))
                .collect(),
            &mut out,
        );
        for r in &self.rows {
            line(r.clone(), &mut out);
        }
        out
    }
}

/// Counts as `key=value` pairs, numbers with thousands separators.
pub fn counts(counts: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    counts
        .iter()
        .map(|(k, v)| match v.as_u64() {
            Some(n) => format!("{k}={}", cloudattach_sdk::thousands(n)),
            None => format!("{k}={v}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_have_no_trailing_spaces() {
        let mut t = Table::new(&["plugin", "sent", "error"]);
        t.row(vec![
            ("tenant-attach".into(), Tone::Plain),
            ("1,736".into(), Tone::Plain),
            (String::new(), Tone::Bad),
        ]);
        t.row(vec![
            ("co-management".into(), Tone::Plain),
            ("0".into(), Tone::Plain),
            ("boom".into(), Tone::Bad),
        ]);
        for colour in [false, true] {
            let text = t.render(colour);
            for line in text.lines() {
                assert_eq!(line, line.trim_end(), "colour={colour}: {line:?}");
            }
            assert!(text.contains("tenant-attach  1,736\n"), "{text:?}");
        }
    }
}
