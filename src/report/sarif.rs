//! SARIF 2.1.0 for code-scanning UIs. Checked against the official schema in the test-suite.
//!
//! `partialFingerprints["guard/v1"]` carries the finding id, so a SARIF consumer tracks a leaked
//! secret across commits the same way `--baseline` does.

use std::io::{self, Write};

use serde_json::{json, Value};

use super::{secret_field, FindingSink, Totals};
use crate::finding::{Finding, Reveal};
use crate::rules::{Confidence, Ruleset};

pub struct Sarif<'a> {
    out: Box<dyn Write + 'a>,
    rules: &'a Ruleset,
    reveal: Reveal,
    results: Vec<Value>,
    /// A stored-value finding was reported (its rule descriptor is added).
    stored: bool,
}

impl<'a> Sarif<'a> {
    pub fn new(out: Box<dyn Write + 'a>, rules: &'a Ruleset, reveal: Reveal) -> Sarif<'a> {
        Sarif {
            out,
            rules,
            reveal,
            results: Vec::new(),
            stored: false,
        }
    }
}

fn level(c: Confidence) -> &'static str {
    match c {
        Confidence::High => "error",
        Confidence::Medium => "warning",
        Confidence::Low => "note",
    }
}

/// A path as a relative URI reference (RFC 3986): forward slashes, reserved bytes escaped.
fn uri(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl FindingSink for Sarif<'_> {
    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        // A stored value (fingerprint hit) has no rule in the set: its descriptor goes last.
        let n = self.rules.rules().len();
        let index = match &f.stored {
            Some(_) => {
                self.stored = true;
                n
            }
            None => self
                .rules
                .rules()
                .iter()
                .position(|r| r.id == f.rule)
                .unwrap_or(0),
        };
        let mut properties = json!({ "origin": f.origin });
        if let Some(e) = &f.encoding {
            properties["encoding"] = json!(e);
        }
        self.results.push(json!({
            "ruleId": f.rule.0,
            "ruleIndex": index,
            "level": level(f.confidence),
            "message": { "text": format!("{} found: {}", f.rule_name, secret_field(f, self.reveal)) },
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": { "uri": uri(f.origin.path()) },
                    "region": {
                        "startLine": f.location.line,
                        "startColumn": f.location.column,
                        "endLine": f.location.end_line,
                        "endColumn": f.location.end_column,
                        "snippet": { "text": f.snippet },
                    }
                }
            }],
            "partialFingerprints": { "guard/v1": f.id.0 },
            "properties": properties,
        }));
        Ok(())
    }

    fn finish(&mut self, _t: &Totals) -> io::Result<()> {
        let mut rules: Vec<Value> = self
            .rules
            .rules()
            .iter()
            .map(|r| {
                let mut v = json!({
                    "id": r.id.0,
                    "name": r.spec.name,
                    "shortDescription": { "text": r.spec.name },
                    "fullDescription": { "text": if r.spec.description.is_empty() { &r.spec.name } else { &r.spec.description } },
                    "defaultConfiguration": { "level": level(r.spec.confidence) },
                    "properties": { "confidence": r.spec.confidence.as_str(), "tags": ["security", "secret"] },
                });
                if let Some(u) = r.spec.references.first() {
                    v["helpUri"] = json!(u);
                }
                v
            })
            .collect();
        if self.stored {
            rules.push(json!({
                "id": crate::finding::STORED_VALUE_RULE,
                "name": "Stored secret",
                "shortDescription": { "text": "A value stored in the vault" },
                "fullDescription": { "text": "A value stored in the vault, recognised by its fingerprints (any version, in any encoding the fingerprint set holds)" },
                "defaultConfiguration": { "level": "error" },
                "properties": { "confidence": "high", "tags": ["security", "secret"] },
            }));
        }
        let doc = json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": { "driver": {
                    "name": "guard",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }},
                "results": std::mem::take(&mut self.results),
            }]
        });
        serde_json::to_writer_pretty(&mut self.out, &doc).map_err(io::Error::other)?;
        writeln!(self.out)?;
        self.out.flush()
    }
}
