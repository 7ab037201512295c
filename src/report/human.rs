//! Human output: one block per finding, coloured when writing to a terminal.

use std::io::{self, Write};

use super::{secret_field, FindingSink, Totals};
use crate::finding::{Finding, Reveal};
use crate::rules::Confidence;

pub struct Human<'a> {
    out: Box<dyn Write + 'a>,
    reveal: Reveal,
    color: bool,
}

impl<'a> Human<'a> {
    pub fn new(out: Box<dyn Write + 'a>, reveal: Reveal, color: bool) -> Human<'a> {
        Human { out, reveal, color }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

impl FindingSink for Human<'_> {
    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        let conf_color = match f.confidence {
            Confidence::High => "1;31",
            Confidence::Medium => "33",
            Confidence::Low => "36",
        };
        let loc = format!("{}:{}:{}", f.origin, f.location.line, f.location.column);
        let head = format!(
            "{}  {}  {}\n",
            self.paint("1", &loc),
            self.paint(
                conf_color,
                &format!("{} ({})", f.rule, f.confidence.as_str())
            ),
            self.paint("2", &format!("id {}", f.id)),
        );
        self.out.write_all(head.as_bytes())?;
        writeln!(self.out, "    {}", f.rule_name)?;
        writeln!(self.out, "    secret: {}", secret_field(f, self.reveal))?;
        writeln!(self.out, "    {}", f.snippet.trim())?;
        writeln!(self.out)?;
        self.out.flush()
    }

    fn finish(&mut self, t: &Totals) -> io::Result<()> {
        let verdict = if t.findings == 0 {
            self.paint("32", "no secrets found")
        } else {
            self.paint("1;31", &format!("{} finding(s)", t.findings))
        };
        let mut extra = Vec::new();
        if t.suppressed_by_baseline > 0 {
            extra.push(format!("{} in baseline", t.suppressed_by_baseline));
        }
        if t.skipped_binary > 0 {
            extra.push(format!("{} binary skipped", t.skipped_binary));
        }
        if t.suppressed_by_allowlist > 0 {
            extra.push(format!("{} allowlisted", t.suppressed_by_allowlist));
        }
        if t.skipped_large > 0 {
            extra.push(format!("{} too large skipped", t.skipped_large));
        }
        if t.truncated > 0 {
            extra.push(format!("{} cut at the size limit", t.truncated));
        }
        if t.ignored > 0 {
            extra.push(format!(
                "{} path(s) ignored by .gitignore/--exclude",
                t.ignored
            ));
        }
        if t.errors > 0 {
            extra.push(format!("{} error(s)", t.errors));
        }
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(" ({})", extra.join(", "))
        };
        writeln!(
            self.out,
            "{verdict} in {} file(s), {} bytes{extra}",
            t.files, t.bytes
        )?;
        self.out.flush()
    }
}
