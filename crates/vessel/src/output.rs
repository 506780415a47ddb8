//! What the CLI prints: tables, JSON and YAML documents, sizes and durations for people.

use std::fmt;
use std::io::{self, Write};

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde::Serialize;
use vessel_api::OperationStatus;

/// How listings and info are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// For people: a table (listings) or a block of fields (info).
    #[default]
    Table,
    /// The API's objects as pretty-printed JSON.
    Json,
    /// The API's objects as YAML.
    Yaml,
}

/// Standard output was closed by the reader (e.g. `vessel list | head -1`): stop quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes bytes to standard output and flushes.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}

/// Prints `text` and a newline on standard output.
pub fn println(text: impl AsRef<str>) -> Result<()> {
    let mut s = text.as_ref().to_string();
    s.push('\n');
    write_stdout(s.as_bytes())
}

/// Prints `value` as JSON or YAML; `Table` is the caller's business and prints JSON here.
pub fn print_document<T: Serialize + ?Sized>(format: Format, value: &T) -> Result<()> {
    let text = match format {
        Format::Yaml => serde_yaml::to_string(value).context("cannot encode YAML")?,
        Format::Json | Format::Table => {
            let mut s = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
            s.push('\n');
            s
        }
    };
    write_stdout(text.as_bytes())
}

/// A size for people, in powers of 1024: `512B`, `256MiB`, `1.5GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let exact = n & ((1u64 << (10 * (unit + 1))) - 1) == 0;
    if exact {
        format!("{}{}", value as u64, UNITS[unit])
    } else {
        let text = format!("{value:.1}");
        // 1023.95 rounds to "1024.0": say so in the next unit instead.
        if text == "1024.0" && unit < UNITS.len() - 1 {
            format!("1.0{}", UNITS[unit + 1])
        } else {
            format!("{text}{}", UNITS[unit])
        }
    }
}

/// CPU time for people: nanoseconds as seconds with two decimals.
pub fn format_cpu(ns: u64) -> String {
    format!("{:.2}s", ns as f64 / 1e9)
}

/// A table of text cells drawn with ASCII borders, headers centred, like Incus' tables.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Puts a column first (one cell per row, in order).
    pub fn prepend_column(&mut self, header: &str, cells: Vec<String>) {
        self.headers.insert(0, header.to_string());
        for (row, cell) in self.rows.iter_mut().zip(cells) {
            row.insert(0, cell);
        }
    }

    /// Adds a column at the right.
    pub fn append_column(&mut self, header: &str, cells: Vec<String>) {
        self.headers.push(header.to_string());
        for (row, cell) in self.rows.iter_mut().zip(cells) {
            row.push(cell);
        }
    }

    /// An empty table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text, one line per border or row, ending in a newline.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| width(&r[i]))
                    .chain([width(&self.headers[i])])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let border: String = widths.iter().fold("+".to_string(), |mut s, w| {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
            s
        });
        let mut out = String::new();
        out.push_str(&border);
        out.push('\n');
        out.push('|');
        for (h, w) in self.headers.iter().zip(&widths) {
            let pad = w - width(h);
            let left = pad / 2;
            out.push_str(&format!(
                " {}{}{} |",
                " ".repeat(left),
                h,
                " ".repeat(pad - left)
            ));
        }
        out.push('\n');
        out.push_str(&border);
        out.push('\n');
        for row in &self.rows {
            out.push('|');
            for (cell, w) in row.iter().zip(&widths) {
                out.push_str(&format!(" {}{} |", cell, " ".repeat(w - width(cell))));
            }
            out.push('\n');
            out.push_str(&border);
            out.push('\n');
        }
        out
    }

    /// Prints the table on standard output.
    pub fn print(&self) -> Result<()> {
        write_stdout(self.render().as_bytes())
    }
}

/// A block of `Label: value` lines with optional indented sections, for `info` commands.
#[derive(Debug, Default, Clone)]
pub struct Block {
    lines: Vec<String>,
}

impl Block {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `label: value`.
    pub fn field(&mut self, label: &str, value: impl fmt::Display) -> &mut Self {
        self.lines.push(format!("{label}: {value}"));
        self
    }

    /// Adds `label:` followed by indented `key: value` lines; `empty` when there are none.
    pub fn section(&mut self, label: &str, items: &[(String, String)], empty: &str) -> &mut Self {
        if items.is_empty() {
            self.lines.push(format!("{label}: {empty}"));
        } else {
            self.lines.push(format!("{label}:"));
            for (k, v) in items {
                self.lines.push(format!("  {k}: {v}"));
            }
        }
        self
    }

    /// The block as text ending in a newline.
    pub fn render(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    /// Prints the block on standard output.
    pub fn print(&self) -> Result<()> {
        write_stdout(self.render().as_bytes())
    }
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Lower-case name of an operation status, as on the wire.
pub fn operation_status(s: OperationStatus) -> &'static str {
    match s {
        OperationStatus::Pending => "pending",
        OperationStatus::Running => "running",
        OperationStatus::Success => "success",
        OperationStatus::Failure => "failure",
        OperationStatus::Cancelled => "cancelled",
    }
}

/// The first `n` characters of `s` (fingerprints in tables).
pub fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_people() {
        assert_eq!(format_bytes(0), "0B");
        assert_eq!(format_bytes(1023), "1023B");
        assert_eq!(format_bytes(1024), "1KiB");
        assert_eq!(format_bytes(1536), "1.5KiB");
        assert_eq!(format_bytes(256 << 20), "256MiB");
        assert_eq!(format_bytes(12_345_678), "11.8MiB");
        assert_eq!(format_bytes(3 << 29), "1.5GiB");
        assert_eq!(format_bytes((1 << 20) - 1), "1.0MiB");
        assert_eq!(format_bytes(u64::MAX), "16.0EiB");
    }

    #[test]
    fn cpu_time() {
        assert_eq!(format_cpu(0), "0.00s");
        assert_eq!(format_cpu(1_234_567_890), "1.23s");
    }

    #[test]
    fn table_layout() {
        let mut t = Table::new(&["NAME", "STATUS", "PID"]);
        t.row(vec!["web-1".into(), "RUNNING".into(), "4242".into()]);
        t.row(vec!["db".into(), "STOPPED".into()]);
        let want = "\
+-------+---------+------+
| NAME  | STATUS  | PID  |
+-------+---------+------+
| web-1 | RUNNING | 4242 |
+-------+---------+------+
| db    | STOPPED |      |
+-------+---------+------+
";
        assert_eq!(t.render(), want);
    }

    #[test]
    fn empty_table_has_headers() {
        let t = Table::new(&["FINGERPRINT", "SIZE"]);
        assert_eq!(
            t.render(),
            "+-------------+------+\n| FINGERPRINT | SIZE |\n+-------------+------+\n"
        );
    }

    #[test]
    fn block_layout() {
        let mut b = Block::new();
        b.field("Name", "c1")
            .section("Limits", &[("memory".into(), "256MiB".into())], "none");
        b.section("Devices", &[], "none");
        assert_eq!(
            b.render(),
            "Name: c1\nLimits:\n  memory: 256MiB\nDevices: none\n"
        );
    }
}
