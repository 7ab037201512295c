//! JSON lines (fluentd `exec_filter`, Vector / Redpanda Connect `exec`-style pipelines): one
//! record per line; the string values of the chosen fields (or of every field) are redacted and
//! the record re-serialized. A record that is not valid JSON is redacted as text — never passed
//! through unexamined. A record with nothing to redact is written byte-identical.
//! A record longer than [`MAX_RECORD`] is not parsed: it is redacted as a text stream up to its
//! newline, so one huge line cannot grow memory without bound.

use std::io::{BufRead, Write};
use std::sync::Arc;

use serde_json::Value;

use super::{BlockRedactor, RedactError, RedactOptions, Redaction};
use crate::engine::known::KnownMatcher;
use crate::engine::Engine;

/// Longest record parsed as JSON.
pub const MAX_RECORD: usize = 8 << 20;

pub struct JsonLines<'e> {
    block: BlockRedactor<'e>,
    /// Top-level field names (a dotted path reaches into objects); empty = every string value.
    fields: Vec<String>,
}

impl<'e> JsonLines<'e> {
    /// `fields`: top-level field names (a dotted path reaches into objects); empty = every
    /// string value.
    pub fn new(
        engine: &'e Engine,
        known: Option<Arc<KnownMatcher>>,
        opts: RedactOptions,
        fields: Vec<String>,
    ) -> Result<JsonLines<'e>, crate::engine::EngineError> {
        Ok(JsonLines {
            block: BlockRedactor::new(engine, known, opts)?,
            fields,
        })
    }

    /// Copies `input` to `out` record by record, flushing after each; `on` sees each
    /// replacement with its id and the record's offset in the input.
    pub fn run(
        &self,
        input: &mut dyn BufRead,
        out: &mut dyn Write,
        on: &mut dyn FnMut(&Redaction, &str, u64),
    ) -> Result<(), RedactError> {
        let mut line = Vec::new();
        let mut offset = 0u64;
        loop {
            line.clear();
            let n = std::io::Read::take(&mut *input, MAX_RECORD as u64 + 1)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            if line.len() > MAX_RECORD && line.last() != Some(&b'\n') {
                offset += self.oversized(&line, input, out, offset, on)?;
            } else {
                let rec = self.record(&line)?;
                for (r, id) in &rec.1 {
                    on(r, id, offset);
                }
                out.write_all(&rec.0)?;
                offset += n as u64;
            }
            out.flush()?;
        }
    }

    /// Redacts one record (with its newline, if any).
    pub fn record(&self, line: &[u8]) -> Result<super::Redacted, RedactError> {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
            return self.block.redact(line);
        };
        let mut log = Vec::new();
        let mut changed = false;
        if self.fields.is_empty() {
            self.walk(&mut v, &mut changed, &mut log)?;
        } else {
            for f in &self.fields {
                let mut at = Some(&mut v);
                for part in f.split('.') {
                    at = at.and_then(|x| x.get_mut(part));
                }
                if let Some(x) = at {
                    self.walk(x, &mut changed, &mut log)?;
                }
            }
        }
        if !changed {
            return Ok((line.to_vec(), log));
        }
        let mut out = serde_json::to_vec(&v).map_err(std::io::Error::other)?;
        if line.ends_with(b"\n") {
            out.push(b'\n');
        }
        Ok((out, log))
    }

    fn walk(
        &self,
        v: &mut Value,
        changed: &mut bool,
        log: &mut Vec<(Redaction, String)>,
    ) -> Result<(), RedactError> {
        match v {
            Value::String(s) => {
                let (out, l) = self.block.redact(s.as_bytes())?;
                if !l.is_empty() {
                    *s = String::from_utf8(out)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    *changed = true;
                    log.extend(l);
                }
            }
            Value::Array(a) => {
                for x in a {
                    self.walk(x, changed, log)?;
                }
            }
            Value::Object(o) => {
                for (_, x) in o.iter_mut() {
                    self.walk(x, changed, log)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A record too long to parse: redacted as text, streamed through to its newline.
    fn oversized(
        &self,
        head: &[u8],
        input: &mut dyn BufRead,
        out: &mut dyn Write,
        offset: u64,
        on: &mut dyn FnMut(&Redaction, &str, u64),
    ) -> Result<u64, RedactError> {
        let mut r = self.block.stream()?;
        let mut total = head.len() as u64;
        r.feed(head, out)?;
        loop {
            let buf = input.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let (take, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            r.feed(&buf[..take], out)?;
            input.consume(take);
            total += take as u64;
            for x in r.take_log() {
                on(&x, r.label_id(x.label), offset);
            }
            if done {
                break;
            }
        }
        r.finish(out)?;
        for x in r.take_log() {
            on(&x, r.label_id(x.label), offset);
        }
        Ok(total)
    }
}
