//! rsyslog `mmexternal`, fail-closed.
//!
//! rsyslog runs the filter with `interface.input="fulljson"`: one JSON object per message per
//! line on stdin (raw bytes: invalid UTF-8 arrives unescaped, so this module parses bytes, not
//! strings). The filter answers exactly one JSON object per line, in order, flushed each time.
//! rsyslog's own interface fails open (a crashed filter, an invalid reply or a stray line lets
//! messages through unredacted, or shifts replies onto the wrong messages), so guard ships
//! `contrib/rsyslog/guard-redact.conf`: the ruleset sets `$!guard_nonce = $uuid` before the
//! action, guard echoes it as `{"$!":{"guard_ack":…}}` — with the redacted `msg` when something
//! was redacted — and a message whose ack does not match goes to a quarantine action.
//! guard acks a message only after redacting it; anything it cannot parse or redact is answered
//! `{}` (no ack: quarantined). Nothing but replies is ever written to stdout, nothing to stderr.

use std::io::{BufRead, Write};

use super::{BlockRedactor, Redaction};

/// Longest input line processed; a longer one is answered `{}` (quarantined) and skipped.
pub const MAX_LINE: usize = 16 << 20;

/// What one input line asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub msg: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

/// Parses a fulljson line: the top-level `msg` and `$!.guard_nonce`. `None` if it is not a JSON
/// object.
pub fn parse(line: &[u8]) -> Option<Message> {
    let mut p = Parser { s: line, i: 0 };
    p.ws();
    if p.peek()? != b'{' {
        return None;
    }
    let mut m = Message {
        msg: None,
        nonce: None,
    };
    p.object(&mut |path: &[&[u8]], v: Vec<u8>| match path {
        [b"msg"] => m.msg = Some(v),
        [b"$!", b"guard_nonce"] => m.nonce = Some(v),
        _ => {}
    })?;
    p.ws();
    (p.i == p.s.len()).then_some(m)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

type OnString<'f> = dyn FnMut(&[&[u8]], Vec<u8>) + 'f;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn object(&mut self, on: &mut OnString) -> Option<()> {
        self.walk_object(&mut Vec::new(), on, 0)
    }

    fn walk_object(
        &mut self,
        path: &mut Vec<Vec<u8>>,
        on: &mut OnString,
        depth: usize,
    ) -> Option<()> {
        if depth > 32 {
            return None;
        }
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.eat(b':')?;
            path.push(key);
            self.value(path, on, depth)?;
            path.pop();
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn value(&mut self, path: &mut Vec<Vec<u8>>, on: &mut OnString, depth: usize) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => {
                let v = self.string()?;
                let p: Vec<&[u8]> = path.iter().map(|k| k.as_slice()).collect();
                on(&p, v);
            }
            b'{' => self.walk_object(path, on, depth + 1)?,
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    path.push(b"[]".to_vec());
                    self.value(path, on, depth + 1)?;
                    path.pop();
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
            }
            _ => {
                // number, true, false, null
                let start = self.i;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || b"+-.".contains(&c))
                {
                    self.i += 1;
                }
                if self.i == start {
                    return None;
                }
            }
        }
        Some(())
    }

    /// A JSON string as raw bytes: escapes decoded, other bytes (invalid UTF-8 too) kept.
    fn string(&mut self) -> Option<Vec<u8>> {
        if self.peek()? != b'"' {
            return None;
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Some(out),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp)
                                && self.s.get(self.i..self.i + 2) == Some(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                cp = 0x10000
                                    + ((cp - 0xD800) << 10)
                                    + (lo.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                            let mut b = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                        }
                        _ => return None,
                    }
                }
                _ => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        self.i += 4;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    }
}

/// rsyslog's `#ooo` escapes of control characters decoded: the plain bytes, and for each plain
/// byte (plus the end) its offset in `msg`. `None` when there is no such escape.
fn unescape_control(msg: &[u8]) -> Option<(Vec<u8>, Vec<usize>)> {
    let is_oct = |c: u8| (b'0'..=b'7').contains(&c);
    let esc = |i: usize| -> Option<u8> {
        let d = msg.get(i + 1..i + 4)?;
        if msg[i] != b'#' || !d.iter().all(|&c| is_oct(c)) {
            return None;
        }
        let v = (d[0] - b'0') as u32 * 64 + (d[1] - b'0') as u32 * 8 + (d[2] - b'0') as u32;
        (v < 0x20 || v == 0x7f).then_some(v as u8)
    };
    memchr::memchr(b'#', msg)?;
    let mut plain = Vec::with_capacity(msg.len());
    let mut at = Vec::with_capacity(msg.len() + 1);
    let mut i = 0;
    let mut any = false;
    while i < msg.len() {
        if let Some(b) = esc(i) {
            plain.push(b);
            at.push(i);
            i += 4;
            any = true;
        } else {
            plain.push(msg[i]);
            at.push(i);
            i += 1;
        }
    }
    at.push(msg.len());
    any.then_some((plain, at))
}

/// Appends `b` as the inside of a JSON string: quotes, backslashes and control bytes escaped,
/// every other byte as is (rsyslog reads bytes; invalid UTF-8 stays what it was).
pub fn escape_into(out: &mut Vec<u8>, b: &[u8]) {
    for &c in b {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            _ => out.push(c),
        }
    }
}

pub struct Rsyslog<'e> {
    /// `None`: the engine (or the fingerprint file) could not be loaded; every message is
    /// answered `{}` (quarantined).
    pub redactor: Option<BlockRedactor<'e>>,
}

impl Rsyslog<'_> {
    /// The reply line (with its newline) for one input line.
    pub fn reply(&self, line: &[u8], on: &mut dyn FnMut(&Redaction, &str)) -> Vec<u8> {
        const REFUSE: &[u8] = b"{}\n";
        let Some(redactor) = &self.redactor else {
            return REFUSE.to_vec();
        };
        let Some(m) = parse(line.strip_suffix(b"\n").unwrap_or(line)) else {
            return REFUSE.to_vec();
        };
        let (Some(msg), Some(nonce)) = (m.msg, m.nonce) else {
            return REFUSE.to_vec();
        };
        let Ok((out, log)) = redact_msg(redactor, &msg) else {
            return REFUSE.to_vec();
        };
        let mut r = Vec::with_capacity(out.len() + nonce.len() + 48);
        r.push(b'{');
        if !log.is_empty() {
            r.extend_from_slice(b"\"msg\":\"");
            escape_into(&mut r, &out);
            r.extend_from_slice(b"\",");
        }
        r.extend_from_slice(b"\"$!\":{\"guard_ack\":\"");
        escape_into(&mut r, &nonce);
        r.extend_from_slice(b"\"}}\n");
        for (x, id) in &log {
            on(x, id);
        }
        r
    }

    /// The filter loop: one reply per line, flushed, until EOF. A write error ends it. `on`
    /// gets each replacement, its id and the known set its label indexes; a newer set from
    /// `watch` (the vault daemon rewrote the file after a rotation) is used from the next
    /// message on.
    pub fn run(
        &mut self,
        input: &mut dyn BufRead,
        out: &mut dyn Write,
        on: &mut dyn FnMut(&Redaction, &str, Option<&crate::engine::known::KnownSet>),
        mut watch: Option<&mut crate::fingerprint::Watch>,
    ) -> std::io::Result<()> {
        let mut line = Vec::new();
        loop {
            if let (Some(w), Some(r)) = (watch.as_deref_mut(), self.redactor.as_mut()) {
                if let Some(m) = w.newer() {
                    r.set_known(m);
                }
            }
            line.clear();
            let n =
                std::io::Read::take(&mut *input, MAX_LINE as u64).read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            let reply = if line.len() >= MAX_LINE && line.last() != Some(&b'\n') {
                // Skip the rest of the oversized line; answer once.
                loop {
                    let buf = input.fill_buf()?;
                    if buf.is_empty() {
                        break;
                    }
                    match memchr::memchr(b'\n', buf) {
                        Some(i) => {
                            input.consume(i + 1);
                            break;
                        }
                        None => {
                            let l = buf.len();
                            input.consume(l);
                        }
                    }
                }
                b"{}\n".to_vec()
            } else {
                let set = self
                    .redactor
                    .as_ref()
                    .and_then(|r| r.known())
                    .map(|k| k.set());
                self.reply(&line, &mut |x, id| on(x, id, set))
            };
            out.write_all(&reply)?;
            out.flush()?;
        }
    }
}

/// Redacts a message as rsyslog delivers it. rsyslog escapes control characters on receipt
/// (`parser.escapeControlCharactersOnReceive`, on by default): a newline arrives as `#012`.
/// The engine sees the unescaped text — so a key split over lines is still one key — and
/// the replacements are mapped back onto the escaped text rsyslog will write.
fn redact_msg(redactor: &BlockRedactor, msg: &[u8]) -> Result<super::Redacted, super::RedactError> {
    let Some((plain, at)) = unescape_control(msg) else {
        return redactor.redact(msg);
    };
    let (_, log) = redactor.redact(&plain)?;
    let mut out = Vec::with_capacity(msg.len());
    let mut pos = 0;
    for (r, id) in &log {
        let (s, e) = (at[r.start as usize], at[r.end as usize]);
        if e <= pos {
            continue; // a known value inside the replacement just written
        }
        out.extend_from_slice(&msg[pos..s.max(pos)]);
        redactor.opts().template.render(id, &mut out);
        pos = pos.max(e);
    }
    out.extend_from_slice(&msg[pos..]);
    Ok((out, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_with_escapes_and_invalid_utf8() {
        let line = b"{ \"msg\": \" a\\\"b\\n\xff\xfe \\u00e9\\ud83d\\ude00\", \"n\": 5, \"x\": [1, {\"msg\": \"inner\"}], \"$!\": { \"guard_nonce\": \"AB12\" } }";
        let m = parse(line).expect("parses");
        assert_eq!(
            m.msg.as_deref(),
            Some(&b" a\"b\n\xff\xfe \xc3\xa9\xf0\x9f\x98\x80"[..])
        );
        assert_eq!(m.nonce.as_deref(), Some(&b"AB12"[..]));
        assert_eq!(parse(b"{\"msg\": \"unterminated}"), None);
        assert_eq!(parse(b"[1,2]"), None);
        assert_eq!(parse(b"{\"msg\":\"a\"} trailing"), None);
    }

    #[test]
    fn control_escapes_are_undone_and_mapped_back() {
        let (plain, at) = unescape_control(b"a#012b#0x #177").unwrap();
        assert_eq!(plain, b"a\nb#0x \x7f");
        assert_eq!(at, vec![0, 1, 5, 6, 7, 8, 9, 10, 14]);
        assert!(unescape_control(b"no escapes #999 here").is_none());
    }

    #[test]
    fn escape_round_trips_through_parse() {
        let raw = b"q\"b\\s\n\r\t\x01\x7f\xff end";
        let mut j = b"{\"msg\":\"".to_vec();
        escape_into(&mut j, raw);
        j.extend_from_slice(b"\"}");
        assert_eq!(parse(&j).unwrap().msg.as_deref(), Some(&raw[..]));
    }
}
