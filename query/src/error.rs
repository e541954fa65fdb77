//! The error of a query that does not parse or does not fit its entity's schema.

use std::fmt;

/// Why a query was refused, and where: every error points at a position in the query text.
///
/// `Display` gives `query:LINE:COLUMN: MESSAGE`; [`QueryError::render`] adds the query line
/// with a caret under the position:
///
/// ```
/// let err = cloudattach_query::parse("Device | project nmae").unwrap_err();
/// assert_eq!((err.offset, err.line, err.column), (17, 1, 18));
/// assert!(err.to_string().starts_with("query:1:18: unknown column \"nmae\" in Device (columns: resource_id, name,"));
/// assert_eq!(err.render().lines().skip(1).collect::<Vec<_>>(), [
///     "Device | project nmae",
///     "                 ^",
/// ]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// The byte offset in the query text.
    pub offset: usize,
    /// The line, 1-based.
    pub line: usize,
    /// The column, 1-based, in characters.
    pub column: usize,
    /// What is wrong, e.g. `unknown column "nmae" in Device (columns: …)`.
    pub message: String,
    /// What would have been accepted at the position (keywords, operators, column names), when
    /// the parser knows; empty otherwise. The message already mentions them.
    pub expected: Vec<String>,
    /// The query's line holding the position, for [`QueryError::render`].
    line_text: String,
}

impl QueryError {
    pub(crate) fn new(text: &str, offset: usize, message: impl Into<String>) -> Self {
        let offset = offset.min(text.len());
        // An offset inside a character (never produced by the parser) is moved back to it.
        let offset = (0..=offset)
            .rev()
            .find(|&o| text.is_char_boundary(o))
            .unwrap_or(0);
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
        QueryError {
            offset,
            line: before.matches('\n').count() + 1,
            column: text[line_start..offset].chars().count() + 1,
            message: message.into(),
            expected: Vec::new(),
            line_text: text[line_start..line_end]
                .trim_end_matches('\r')
                .to_string(),
        }
    }

    pub(crate) fn with_expected(mut self, expected: Vec<String>) -> Self {
        self.expected = expected;
        self
    }

    /// The error as three lines: the `Display` form, the query line holding the position, and
    /// a caret under the position (tabs of the line are kept so that the caret lines up).
    pub fn render(&self) -> String {
        let pad: String = self
            .line_text
            .chars()
            .take(self.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        format!("{self}\n{}\n{pad}^", self.line_text)
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "query:{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for QueryError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_count_characters() {
        let text = "Device\n| where name == \"é\" and nmae == 1";
        let offset = text.find("nmae").unwrap();
        let e = QueryError::new(text, offset, "x");
        assert_eq!((e.line, e.column), (2, 25));
        assert_eq!(
            e.render(),
            "query:2:25: x\n| where name == \"é\" and nmae == 1\n                        ^"
        );
        let end = QueryError::new(text, text.len(), "end");
        assert_eq!((end.line, end.column), (2, 34));
    }
}
