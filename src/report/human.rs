//! Human output: one block per finding, coloured when writing to a terminal.

use std::io::{self, Write};

use super::{secret_field, FindingSink, Totals};
use crate::finding::{Finding, Origin, Reveal};
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
        match &f.encoding {
            Some(e) => writeln!(self.out, "    {} (inside {e}-encoded content)", f.rule_name)?,
            None => writeln!(self.out, "    {}", f.rule_name)?,
        }
        if let Origin::GitBlob {
            commit: Some(c),
            commits,
            blob,
            ..
        } = &f.origin
        {
            writeln!(
                self.out,
                "    introduced in {} by {} on {}: {} (blob {}, in {commits} commit(s))",
                &c.id[..c.id.len().min(12)],
                c.author,
                c.date,
                c.subject,
                &blob[..blob.len().min(12)]
            )?;
        }
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
        let extra = t.notes();
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
