//! Report sinks: human, JSON, JSONL and SARIF 2.1.0, all from the same [`Finding`]s, each a
//! [`FindingSink`] of the pipeline. Line formats (human, JSONL) write and flush each finding as it
//! arrives; whole-document formats (JSON, SARIF) buffer in the sink.
//!
//! Every format redacts the secret unless the caller asked to reveal it ([`Reveal::Shown`]); the
//! redaction happens in one place ([`secret_field`]) so no format can forget it. Reports take the
//! rules' metadata ([`Ruleset`]), never the engine.

mod human;
mod sarif;

use std::io::{self, Write};

use serde::Serialize;

use crate::finding::{redact, Finding, Origin, Reveal};
pub use crate::pipeline::{FindingSink, Totals};
use crate::rules::Ruleset;

pub use human::Human;
pub use sarif::Sarif;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Jsonl,
    Sarif,
}

/// Creates the sink for `format`, writing to `out`.
pub fn sink<'a>(
    format: Format,
    out: Box<dyn Write + 'a>,
    rules: &'a Ruleset,
    reveal: Reveal,
    color: bool,
) -> Box<dyn FindingSink + 'a> {
    match format {
        Format::Human => Box::new(Human::new(out, reveal, color)),
        Format::Json => Box::new(Json {
            out,
            reveal,
            all: Vec::new(),
        }),
        Format::Jsonl => Box::new(Jsonl { out, reveal }),
        Format::Sarif => Box::new(Sarif::new(out, rules, reveal)),
    }
}

pub(crate) fn secret_field(f: &Finding, reveal: Reveal) -> String {
    match reveal {
        Reveal::Shown => String::from_utf8_lossy(f.secret.expose_secret()).into_owned(),
        Reveal::Redacted => redact(f.secret.expose_secret()),
    }
}

/// The JSON shape of one finding (also one JSONL line).
#[derive(Serialize)]
pub struct JsonFinding<'a> {
    pub id: &'a str,
    pub rule: &'a str,
    pub rule_name: &'a str,
    pub confidence: &'a str,
    pub path: &'a str,
    pub origin: &'a Origin,
    pub line: u64,
    pub column: u64,
    pub end_line: u64,
    pub end_column: u64,
    pub start_offset: u64,
    pub end_offset: u64,
    pub secret: String,
    pub redacted: bool,
    pub snippet: &'a str,
    /// Present when the secret was found inside encoded content (`base64`, `hex`, `url`, …):
    /// the location is then the encoded run's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'a str>,
    /// Present when the finding is a stored value recognised by its fingerprints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_secret: Option<&'a crate::finding::StoredValue>,
}

impl<'a> JsonFinding<'a> {
    pub fn new(f: &'a Finding, reveal: Reveal) -> JsonFinding<'a> {
        JsonFinding {
            id: &f.id.0,
            rule: &f.rule.0,
            rule_name: &f.rule_name,
            confidence: f.confidence.as_str(),
            path: f.origin.path(),
            origin: &f.origin,
            line: f.location.line,
            column: f.location.column,
            end_line: f.location.end_line,
            end_column: f.location.end_column,
            start_offset: f.location.start,
            end_offset: f.location.end,
            secret: secret_field(f, reveal),
            redacted: reveal == Reveal::Redacted,
            snippet: &f.snippet,
            encoding: f.encoding.as_deref(),
            stored_secret: f.stored.as_ref(),
        }
    }
}

struct Json<'a> {
    out: Box<dyn Write + 'a>,
    reveal: Reveal,
    all: Vec<serde_json::Value>,
}

impl FindingSink for Json<'_> {
    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        self.all.push(
            serde_json::to_value(JsonFinding::new(f, self.reveal)).map_err(io::Error::other)?,
        );
        Ok(())
    }
    fn finish(&mut self, totals: &Totals) -> io::Result<()> {
        let doc = serde_json::json!({ "version": 1, "findings": self.all, "totals": totals });
        serde_json::to_writer_pretty(&mut self.out, &doc).map_err(io::Error::other)?;
        writeln!(self.out)?;
        self.out.flush()
    }
}

struct Jsonl<'a> {
    out: Box<dyn Write + 'a>,
    reveal: Reveal,
}

impl FindingSink for Jsonl<'_> {
    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &JsonFinding::new(f, self.reveal))
            .map_err(io::Error::other)?;
        writeln!(self.out)?;
        self.out.flush()
    }
    fn finish(&mut self, _totals: &Totals) -> io::Result<()> {
        self.out.flush()
    }
}
