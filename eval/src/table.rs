//! The one markdown table renderer every report uses.

use std::fmt;

/// A markdown table: a header row and rows of already formatted cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<S: ToString>(header: impl IntoIterator<Item = S>) -> Table {
        Table { header: header.into_iter().map(|s| s.to_string()).collect(), rows: vec![] }
    }

    /// Appends a row; a row shorter than the header is padded with empty cells.
    pub fn row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Table {
        let mut row: Vec<String> = cells.into_iter().map(|s| s.to_string()).collect();
        if row.len() < self.header.len() {
            row.resize(self.header.len(), String::new());
        }
        self.rows.push(row);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl fmt::Display for Table {
    /// `| a | b |`, the `|---|---|` rule, then one line per row.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| writeln!(f, "| {} |", cells.join(" | "));
        line(f, &self.header)?;
        writeln!(f, "|{}", "---|".repeat(self.header.len()))?;
        self.rows.iter().try_for_each(|r| line(f, r))
    }
}

/// `x` as a percentage with two decimals and no sign.
pub fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_header_rule_and_padded_rows() {
        let mut t = Table::new(["model", "AUROC", "FPR"]);
        t.row(["a", "0.9990", "1.00"]).row(["b"]);
        assert_eq!(t.to_string(), "| model | AUROC | FPR |\n|---|---|---|\n| a | 0.9990 | 1.00 |\n| b |  |  |\n");
    }
}
