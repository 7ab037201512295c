//! Redaction: a byte stream in, the same stream out with every finding replaced — the output guard
//! behind `guard redact`, `guard exec` and the log-shipper adapters.
//!
//! The contract (also in ARCHITECTURE.md):
//! - every rule match (its secret span) and every known value (the fingerprint stage, raw or
//!   encoded) is replaced by the [`Template`], `[REDACTED:<rule-or-secret-id>]` by default;
//!   overlapping spans are merged into one replacement. Every other byte passes unchanged: binary
//!   and invalid UTF-8 included.
//! - The output is the same for any chunking of the input: bytes are written once the engine's
//!   stream scanner says no pending match can still cover them ([`StreamScanner::settled`]), so
//!   a complete line with nothing pending goes out at once.
//! - Bounded memory, fail closed: if more than [`RedactOptions::max_hold`] bytes wait for the
//!   engine, the waiting bytes are replaced by `[REDACTED:guard.overflow]`, never passed through.
//! - An error from the engine is returned before anything more is written: callers stop and
//!   must not copy the rest of the input unexamined.
//!
//! Adapters over this: [`jsonl`] (JSON lines: fluentd, Vector) and [`rsyslog`] (mmexternal,
//! fail-closed). [`spool`] records leak events for known values.

pub mod jsonl;
pub mod rsyslog;
pub mod spool;

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use crate::engine::known::{Encoding, KnownMatcher};
use crate::engine::{Engine, EngineError, RuleIndex, StreamScanner};

/// Largest piece fed to the engine at once: the hold-back check runs between pieces. 1 MiB
/// halves the hand-offs to the engine's prefilter thread per GiB compared with 256 KiB
/// (measured ~5% faster on the 1 GiB benchmark); a pipe's read returns what is there, so
/// latency does not change.
const PIECE: usize = 1024 * 1024;

/// The replacement text: `{id}` is replaced by the rule id or the stored secret's name.
#[derive(Clone, Debug)]
pub struct Template {
    before: Vec<u8>,
    after: Option<Vec<u8>>,
}

impl Template {
    pub fn parse(t: &str) -> Template {
        match t.split_once("{id}") {
            Some((a, b)) => Template {
                before: a.as_bytes().to_vec(),
                after: Some(b.as_bytes().to_vec()),
            },
            None => Template {
                before: t.as_bytes().to_vec(),
                after: None,
            },
        }
    }

    pub fn render(&self, id: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.before);
        if let Some(after) = &self.after {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(after);
        }
    }
}

impl Default for Template {
    fn default() -> Self {
        Template::parse(DEFAULT_TEMPLATE)
    }
}

pub const DEFAULT_TEMPLATE: &str = "[REDACTED:{id}]";
/// The id written for bytes redacted because the hold-back cap was reached.
pub const OVERFLOW_ID: &str = "guard.overflow";

#[derive(Clone, Debug)]
pub struct RedactOptions {
    pub template: Template,
    /// Most bytes held waiting for the engine before they are redacted wholesale.
    pub max_hold: usize,
}

impl Default for RedactOptions {
    fn default() -> Self {
        RedactOptions {
            template: Template::default(),
            max_hold: 64 * 1024,
        }
    }
}

/// A redacted text and each replacement with the id written for it.
pub type Redacted = (Vec<u8>, Vec<(Redaction, String)>);

/// What was redacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    Rule(RuleIndex),
    /// An entry of the known set: a stored secret, in one encoding.
    Known(u32),
    Overflow,
}

/// One replacement written: input offsets `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redaction {
    pub start: u64,
    pub end: u64,
    pub label: Label,
}

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A span to replace is logged as what it is: a [`Redaction`].
type Span = Redaction;

impl Redaction {
    /// A rule match's secret span.
    fn of_match(m: &crate::engine::Match) -> Redaction {
        Redaction {
            start: m.secret_start,
            end: m.secret_end,
            label: Label::Rule(m.rule),
        }
    }

    /// A known value found by the fingerprint stage.
    fn of_known(h: &crate::engine::known::KnownHit) -> Redaction {
        Redaction {
            start: h.start,
            end: h.end,
            label: Label::Known(h.entry),
        }
    }
}

pub struct Redactor<'e> {
    engine: &'e Engine,
    known: Option<Arc<KnownMatcher>>,
    /// `None` once finished.
    scanner: Option<StreamScanner<'e>>,
    opts: RedactOptions,
    /// Input bytes not written yet; `held[0]` is at absolute offset `written`.
    held: Vec<u8>,
    written: u64,
    /// Spans found and not yet written, sorted by start.
    spans: Vec<Span>,
    /// Replacements written since the last [`Redactor::take_log`].
    log: Vec<Redaction>,
    out: Vec<u8>,
}

impl<'e> Redactor<'e> {
    pub fn new(
        engine: &'e Engine,
        known: Option<Arc<KnownMatcher>>,
        opts: RedactOptions,
    ) -> Result<Redactor<'e>, EngineError> {
        let mut scanner = StreamScanner::new(engine)?;
        if let Some(k) = &known {
            scanner = scanner.with_known(k.clone());
        }
        let opts = RedactOptions {
            // Never below what the engine itself may need to hold for a match in progress, plus
            // a piece whose fingerprint stage is still running (`feed_more`).
            max_hold: opts.max_hold.max(engine.max_holdback() + 2 * PIECE),
            ..opts
        };
        Ok(Redactor {
            engine,
            known,
            scanner: Some(scanner),
            opts,
            held: Vec::new(),
            written: 0,
            spans: Vec::new(),
            log: Vec::new(),
            out: Vec::new(),
        })
    }

    /// The id a label is written with.
    pub fn label_id(&self, l: Label) -> &str {
        label_id(self.engine, self.known.as_deref(), l)
    }

    /// The known values this redactor recognises (its labels index into them).
    pub fn known(&self) -> Option<&Arc<KnownMatcher>> {
        self.known.as_ref()
    }

    /// Whether every byte fed has been written and nothing is pending: the redactor can be
    /// replaced by a fresh one here without a match spanning the two.
    pub fn idle(&self) -> bool {
        self.held.is_empty() && self.spans.is_empty() && !self.lagging()
    }

    /// For a known-value label: the secret's name, version and the encoding found.
    pub fn known_entry(&self, l: Label) -> Option<(&str, u32, Encoding)> {
        match l {
            Label::Known(e) => {
                let e = self.known.as_ref()?.entry(e);
                Some((&e.id, e.version, e.encoding))
            }
            _ => None,
        }
    }

    /// Replacements written since the last call.
    pub fn take_log(&mut self) -> Vec<Redaction> {
        std::mem::take(&mut self.log)
    }

    /// Feeds `chunk` and writes every byte that is now final (not flushed: the caller decides).
    pub fn feed(&mut self, chunk: &[u8], out: &mut dyn Write) -> Result<(), RedactError> {
        self.feed_as(chunk, out, false)
    }

    /// [`Redactor::feed`] for a caller with more input at hand: the fingerprint stage may
    /// finish the last piece while the caller reads the next chunk
    /// ([`StreamScanner::feed_more`]). A caller about to wait for input calls
    /// [`Redactor::catch_up`] first, or the last piece is written only with the next feed.
    pub fn feed_more(&mut self, chunk: &[u8], out: &mut dyn Write) -> Result<(), RedactError> {
        self.feed_as(chunk, out, true)
    }

    /// Whether written output is behind the input (after [`Redactor::feed_more`]).
    pub fn lagging(&self) -> bool {
        self.scanner.as_ref().is_some_and(StreamScanner::lagging)
    }

    /// Waits for the engine to catch up with everything fed, and writes what is then final.
    pub fn catch_up(&mut self, out: &mut dyn Write) -> Result<(), RedactError> {
        let Some(scanner) = self.scanner.as_mut() else {
            return Ok(());
        };
        scanner.catch_up()?;
        let settled = self.take_settled();
        let total = self.written + self.held.len() as u64;
        self.write_upto(settled.min(total), out)?;
        Ok(())
    }

    /// Takes the scanner's known-value hits (as spans) and returns what it has settled.
    fn take_settled(&mut self) -> u64 {
        let scanner = self.scanner.as_mut().expect("a scanner until finish");
        let hits = scanner.take_known();
        let settled = scanner.settled();
        self.push_known(hits);
        settled
    }

    fn feed_as(
        &mut self,
        chunk: &[u8],
        out: &mut dyn Write,
        more: bool,
    ) -> Result<(), RedactError> {
        for piece in chunk.chunks(PIECE) {
            let spans = &mut self.spans;
            let scanner = self.scanner.as_mut().expect("feed after finish");
            let sink: &mut dyn FnMut(&crate::engine::Match, &crate::engine::View) =
                &mut |m, _| spans.push(Span::of_match(m));
            if more {
                scanner.feed_more(piece, sink)?;
            } else {
                scanner.feed(piece, sink)?;
            }
            let settled = self.take_settled();
            self.held.extend_from_slice(piece);
            let total = self.written + self.held.len() as u64;
            let mut upto = settled.min(total);
            if total - upto.max(self.written) > self.opts.max_hold as u64 {
                // Fail closed: what waits too long is redacted, not passed.
                self.spans.push(Span {
                    start: upto.max(self.written),
                    end: total,
                    label: Label::Overflow,
                });
                upto = total;
            }
            self.write_upto(upto, out)?;
        }
        Ok(())
    }

    /// Ends the input: writes everything left. Later calls do nothing.
    pub fn finish(&mut self, out: &mut dyn Write) -> Result<(), RedactError> {
        let Some(scanner) = self.scanner.take() else {
            return Ok(());
        };
        let spans = &mut self.spans;
        let known = scanner.finish(&mut |m, _| spans.push(Span::of_match(m)))?;
        self.push_known(known);
        let total = self.written + self.held.len() as u64;
        self.write_upto(total, out)?;
        Ok(())
    }

    fn push_known(&mut self, hits: Vec<crate::engine::known::KnownHit>) {
        self.spans.extend(hits.iter().map(Span::of_known));
    }

    /// Writes `held` up to absolute offset `upto` (or further, through a span that starts before
    /// it), replacing spans.
    fn write_upto(&mut self, upto: u64, out: &mut dyn Write) -> io::Result<()> {
        if self.spans.is_empty() {
            // Nothing to replace (the common case): straight from the held bytes.
            let n = (upto - self.written) as usize;
            if n > 0 {
                out.write_all(&self.held[..n])?;
                self.held.drain(..n);
                self.written = upto;
            }
            return Ok(());
        }
        self.out.clear();
        let (engine, known) = (self.engine, self.known.as_deref());
        let pos = render(
            &self.held,
            self.written,
            upto,
            &mut self.spans,
            &mut |l, o| self.opts.template.render(label_id(engine, known, l), o),
            &mut self.out,
            &mut self.log,
        );
        self.held.drain(..(pos - self.written) as usize);
        self.written = pos;
        if !self.out.is_empty() {
            out.write_all(&self.out)?;
        }
        Ok(())
    }
}

/// The id a label is written with.
fn label_id<'a>(engine: &'a Engine, known: Option<&'a KnownMatcher>, l: Label) -> &'a str {
    match l {
        Label::Rule(r) => &engine.rule(r).id.0,
        Label::Known(e) => &known.expect("known label").entry(e).id,
        Label::Overflow => OVERFLOW_ID,
    }
}

/// Writes `held` (which starts at absolute offset `base`) up to `upto` — or further, through a
/// span that starts before it — into `out`, each span (merged with those it overlaps) replaced
/// by `replace(label of its first span)`; consumed spans are removed and logged. Returns the
/// offset written up to. A known value is logged even where a rule's replacement covers it (its
/// leak event must not depend on that); such an entry lies inside the one logged before it.
fn render(
    held: &[u8],
    base: u64,
    upto: u64,
    spans: &mut Vec<Span>,
    replace: &mut dyn FnMut(Label, &mut Vec<u8>),
    out: &mut Vec<u8>,
    log: &mut Vec<Redaction>,
) -> u64 {
    spans.sort_unstable_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    let mut pos = base;
    let mut used = 0;
    while used < spans.len() {
        let first = spans[used];
        if first.end <= pos {
            // Inside a replacement already written.
            if let Label::Known(_) = first.label {
                log.push(first);
            }
            used += 1;
            continue;
        }
        let start = first.start.max(pos);
        if start >= upto {
            break;
        }
        let at_log = log.len();
        log.push(Redaction {
            start,
            end: first.end,
            label: first.label,
        });
        let mut end = first.end;
        used += 1;
        while used < spans.len() && spans[used].start < end {
            let s = spans[used];
            end = end.max(s.end);
            if let Label::Known(_) = s.label {
                log.push(s);
            }
            used += 1;
        }
        log[at_log].end = end;
        let at = |x: u64| (x - base) as usize;
        out.extend_from_slice(&held[at(pos)..at(start)]);
        replace(first.label, out);
        pos = end;
    }
    spans.drain(..used);
    let upto = upto.max(pos);
    out.extend_from_slice(&held[(pos - base) as usize..(upto - base) as usize]);
    upto
}

/// Redacts whole in-memory texts — a log message, a JSON field — in block mode, reusing one
/// scratch: the same spans as the stream (stream mode returns block mode's matches), without
/// opening a Hyperscan stream per text (that cost ~1 ms a message under rsyslog).
pub struct BlockRedactor<'e> {
    engine: &'e Engine,
    known: Option<Arc<KnownMatcher>>,
    opts: RedactOptions,
    scratch: std::cell::RefCell<crate::engine::Scratch>,
}

impl<'e> BlockRedactor<'e> {
    pub fn new(
        engine: &'e Engine,
        known: Option<Arc<KnownMatcher>>,
        opts: RedactOptions,
    ) -> Result<BlockRedactor<'e>, EngineError> {
        Ok(BlockRedactor {
            scratch: std::cell::RefCell::new(engine.scratch()?),
            engine,
            known,
            opts,
        })
    }

    pub fn opts(&self) -> &RedactOptions {
        &self.opts
    }

    /// The known values this redactor recognises (its labels index into them).
    pub fn known(&self) -> Option<&Arc<KnownMatcher>> {
        self.known.as_ref()
    }

    /// Recognises `known` from the next text on (each text is redacted whole, so any point
    /// between two is a safe one to switch).
    pub fn set_known(&mut self, known: Arc<KnownMatcher>) {
        self.known = Some(known);
    }

    /// A stream [`Redactor`] with the same engine, known values and options (for a text too
    /// long to hold).
    pub fn stream(&self) -> Result<Redactor<'e>, EngineError> {
        Redactor::new(self.engine, self.known.clone(), self.opts.clone())
    }

    /// The redacted text and each replacement with its id.
    pub fn redact(&self, input: &[u8]) -> Result<Redacted, RedactError> {
        let mut spans: Vec<Span> = self
            .engine
            .scan_block(&mut self.scratch.borrow_mut(), input)?
            .iter()
            .map(Span::of_match)
            .collect();
        if let Some(k) = &self.known {
            spans.extend(k.find_all(input).iter().map(Span::of_known));
        }
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut log = Vec::new();
        let (engine, known) = (self.engine, self.known.as_deref());
        render(
            input,
            0,
            input.len() as u64,
            &mut spans,
            &mut |l, o| self.opts.template.render(label_id(engine, known, l), o),
            &mut out,
            &mut log,
        );
        let named = log
            .into_iter()
            .map(|x| (x, label_id(engine, known, x.label).to_string()))
            .collect();
        Ok((out, named))
    }
}

/// Redacts a whole input at once (same path as the stream: the result equals any chunking).
/// Returns the output and each replacement with its id.
pub fn redact_bytes(
    engine: &Engine,
    known: Option<Arc<KnownMatcher>>,
    opts: &RedactOptions,
    input: &[u8],
) -> Result<Redacted, RedactError> {
    let mut r = Redactor::new(engine, known, opts.clone())?;
    let mut out = Vec::with_capacity(input.len() + 64);
    r.feed(input, &mut out)?;
    r.finish(&mut out)?;
    let log = r.take_log();
    let named = log
        .into_iter()
        .map(|x| (x, r.label_id(x.label).to_string()))
        .collect();
    Ok((out, named))
}

/// An input that can say whether a read would return at once (a file descriptor).
pub trait Input: Read + AsFd {}
impl<T: Read + AsFd> Input for T {}

/// Whether a read of `fd` would not block (data or end of file is there). An error says no.
fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// Copies `input` to `out` through a [`Redactor`], flushing after every read so a complete line
/// is out as soon as it is final; `on` sees each replacement. On an engine error nothing more is
/// written (fail closed). While more input is ready the fingerprint stage runs a piece behind
/// ([`Redactor::feed_more`]); before waiting for input, everything is caught up and written.
pub fn copy_stream(
    engine: &Engine,
    known: Option<Arc<KnownMatcher>>,
    opts: RedactOptions,
    input: &mut dyn Input,
    out: &mut dyn Write,
    on: &mut dyn FnMut(&Redactor, &Redaction),
) -> Result<(), RedactError> {
    copy_stream_watching(engine, known, opts, input, out, on, None)
}

/// [`copy_stream`] with the known values taken anew from `watch` (a fingerprint file the vault
/// daemon rewrites after a rotation): a newer set replaces the redactor at the first point
/// where it is idle (everything fed written, nothing pending: a line boundary), so no match
/// spans the switch. Replacements passed to `on` keep offsets in the whole stream.
pub fn copy_stream_watching(
    engine: &Engine,
    known: Option<Arc<KnownMatcher>>,
    opts: RedactOptions,
    input: &mut dyn Input,
    out: &mut dyn Write,
    on: &mut dyn FnMut(&Redactor, &Redaction),
    mut watch: Option<&mut crate::fingerprint::Watch>,
) -> Result<(), RedactError> {
    let mut r = Redactor::new(engine, known, opts.clone())?;
    // Offset of the current redactor's input in the stream, and a set waiting for a switch.
    let mut base = 0u64;
    let mut fed = 0u64;
    let mut next: Option<Arc<KnownMatcher>> = None;
    let mut buf = vec![0u8; PIECE];
    // What was written goes out now, and its replacements to `on`.
    let deliver = |r: &mut Redactor,
                   out: &mut dyn Write,
                   on: &mut dyn FnMut(&Redactor, &Redaction),
                   base: u64| {
        out.flush()?;
        for mut x in r.take_log() {
            x.start += base;
            x.end += base;
            on(r, &x);
        }
        Ok::<(), io::Error>(())
    };
    loop {
        if r.lagging() && !readable(input.as_fd()) {
            r.catch_up(out)?;
            deliver(&mut r, out, on, base)?;
        }
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        // Looked at after the read (which may have waited long), before what it read is fed.
        if let Some(m) = watch.as_deref_mut().and_then(|w| w.newer()) {
            next = Some(m);
        }
        if next.is_some() {
            // The switch needs an idle redactor: everything before written, nothing pending.
            r.catch_up(out)?;
            deliver(&mut r, out, on, base)?;
            if r.idle() {
                r.finish(out)?;
                deliver(&mut r, out, on, base)?;
                r = Redactor::new(engine, next.take(), opts.clone())?;
                base = fed;
            }
        }
        fed += n as u64;
        r.feed_more(&buf[..n], out)?;
        deliver(&mut r, out, on, base)?;
    }
    r.finish(out)?;
    deliver(&mut r, out, on, base)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::known::KnownSet;
    use crate::rules::Ruleset;
    use proptest::prelude::*;

    fn engine() -> &'static Engine {
        static E: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
        E.get_or_init(|| {
            let mut allow = crate::engine::Allowlist::new();
            allow.inline = false;
            Engine::builder(Ruleset::builtin().unwrap())
                .allowlist(allow)
                .build()
                .unwrap()
        })
    }

    fn known(values: &[(&str, &[u8])]) -> Arc<KnownMatcher> {
        let mut s = KnownSet::new([3; 32]);
        for (n, v) in values {
            s.add(n, 1, v).unwrap();
        }
        Arc::new(KnownMatcher::new(s))
    }

    fn run(k: Option<Arc<KnownMatcher>>, chunks: &[&[u8]]) -> Vec<u8> {
        let mut r = Redactor::new(engine(), k, RedactOptions::default()).unwrap();
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c, &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
        out
    }

    fn ghp() -> String {
        let random = "FakeRedactorTestToken000000000";
        let crc = crate::engine::validate::base62_crc(crc32fast::hash(random.as_bytes()));
        format!("ghp_{random}{}", std::str::from_utf8(&crc).unwrap())
    }

    /// A set large enough for a thread of its own (or, with Hyperscan on two cores, divided
    /// between the stream's two threads): the same output as block mode (which tests the
    /// anchors inline) for every chunking, every value found.
    /// 1,500 stored values, and ~190 KiB of lines holding them (a token among them), with its
    /// block-mode redaction.
    fn large_set_and_input() -> (Arc<KnownMatcher>, Vec<u8>, Vec<u8>) {
        let values: Vec<String> = (0..1500)
            .map(|i| format!("fake-stored-value-{i:05}-x"))
            .collect();
        let mut s = KnownSet::new([5; 32]);
        for (i, v) in values.iter().enumerate() {
            s.add(&format!("v{i}"), 1, v.as_bytes()).unwrap();
        }
        let k = Arc::new(KnownMatcher::new(s));
        let mut input = Vec::new();
        for i in 0..4000 {
            let v = &values[(i * 3) % values.len()];
            input.extend_from_slice(format!("line {i} value={v} tail\n").as_bytes());
            if i % 1000 == 999 {
                input.extend_from_slice(format!("token: {}\n", ghp()).as_bytes());
            }
        }
        let block = BlockRedactor::new(engine(), Some(k.clone()), RedactOptions::default())
            .unwrap()
            .redact(&input)
            .unwrap();
        assert_eq!(block.1.len(), 4004);
        assert!(!String::from_utf8_lossy(&block.0).contains("fake-stored-value"));
        (k, input, block.0)
    }

    #[test]
    fn large_sets_on_the_worker_thread_match_block_mode() {
        // Chunks of 64 KiB and more take the two-thread path, which divides the fingerprint
        // anchors between the threads.
        let (k, input, block) = large_set_and_input();
        for size in [509usize, 4096, 70_001, 1 << 20] {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            let out = run(Some(k.clone()), &chunks);
            assert!(out == block, "chunks of {size} differ from block mode");
        }
    }

    /// Fed ahead (`feed_more`), the whole fingerprint stage runs on the prefilter thread a
    /// chunk behind; large and small chunks alternate (the stage goes there and back) and
    /// catch-ups come at random: the output is block mode's. (Without Hyperscan there is no
    /// second thread: `feed_more` is `feed`.)
    #[cfg(feature = "hyperscan")]
    #[test]
    fn feeding_ahead_of_the_fingerprint_stage_changes_nothing() {
        let (k, input, block) = large_set_and_input();
        let two_cores = std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut below = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for round in 0..4 {
            let mut r = Redactor::new(engine(), Some(k.clone()), RedactOptions::default()).unwrap();
            let mut out = Vec::new();
            let (mut at, mut lagged) = (0, false);
            while at < input.len() {
                let size = match (round, below(4)) {
                    (0, _) => 70_001,
                    (_, 0) => 1 + below(200),
                    (_, 1) => 1 + below(5000),
                    _ => 65_000 + below(75_000),
                };
                let end = (at + size).min(input.len());
                r.feed_more(&input[at..end], &mut out).unwrap();
                lagged |= r.lagging();
                if below(3) == 0 {
                    r.catch_up(&mut out).unwrap();
                    assert!(!r.lagging());
                }
                at = end;
            }
            r.finish(&mut out).unwrap();
            assert!(out == block, "round {round} differs from block mode");
            assert!(lagged || !two_cores, "round {round} never fed ahead");
        }
    }

    /// `copy_stream` feeds ahead while input is ready, and catches up before it waits: with
    /// the input still open, everything read is written.
    #[cfg(feature = "hyperscan")]
    #[test]
    fn copy_stream_writes_everything_read_before_waiting_for_input() {
        use std::os::fd::AsRawFd;
        let (k, input, block) = large_set_and_input();
        let (mut in_r, mut in_w) = std::io::pipe().unwrap();
        // A 1 MiB pipe: one read takes the whole input, large enough to be fed ahead.
        // SAFETY: fcntl on a descriptor this test owns.
        unsafe { libc::fcntl(in_w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        let (mut out_r, mut out_w) = std::io::pipe().unwrap();
        let copier = std::thread::spawn(move || {
            copy_stream(
                engine(),
                Some(k),
                RedactOptions::default(),
                &mut in_r,
                &mut out_w,
                &mut |_, _| {},
            )
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n @ 1..) = out_r.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        in_w.write_all(&input).unwrap();
        // A stall, not a speed: generous for a debug build on a loaded machine.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut got = Vec::new();
        while got.len() < block.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let more = rx
                .recv_timeout(left)
                .expect("output stalled while the input was open");
            got.extend_from_slice(&more);
        }
        assert!(got == block, "differs from block mode");
        drop(in_w);
        copier.join().unwrap().unwrap();
    }

    /// A fingerprint file rewritten while a stream runs (a rotation): the next line is redacted
    /// with the new set, offsets stay those of the whole stream, and both sets' values go.
    #[test]
    fn a_rewritten_fingerprint_file_is_used_from_the_next_line() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.fp");
        let mut set = KnownSet::new([5; 32]);
        set.add("tok", 1, b"fake-old-value-0001").unwrap();
        crate::fingerprint::save(&path, &set).unwrap();
        let (mut in_r, mut in_w) = std::io::pipe().unwrap();
        let (mut out_r, mut out_w) = std::io::pipe().unwrap();
        let first = Arc::new(KnownMatcher::new(crate::fingerprint::load(&path).unwrap()));
        let copier = std::thread::spawn(move || {
            let mut watch = crate::fingerprint::Watch::new(&path);
            let mut seen = Vec::new();
            copy_stream_watching(
                engine(),
                Some(first),
                RedactOptions::default(),
                &mut in_r,
                &mut out_w,
                &mut |r, x| {
                    let (id, v, _) = r.known_entry(x.label).unwrap();
                    seen.push((id.to_string(), v, x.start));
                },
                Some(&mut watch),
            )
            .unwrap();
            seen
        });
        let mut lines = std::io::BufReader::new(&mut out_r);
        let mut line = String::new();
        in_w.write_all(b"one fake-old-value-0001 fake-new-value-0002\n")
            .unwrap();
        lines.read_line(&mut line).unwrap();
        assert_eq!(line, "one [REDACTED:tok] fake-new-value-0002\n");
        // The daemon rotates: the file now holds both versions.
        set.add("tok", 2, b"fake-new-value-0002").unwrap();
        crate::fingerprint::save(&dir.path().join("v.fp"), &set).unwrap();
        in_w.write_all(b"two fake-new-value-0002 fake-old-value-0001\n")
            .unwrap();
        line.clear();
        lines.read_line(&mut line).unwrap();
        assert_eq!(line, "two [REDACTED:tok] [REDACTED:tok]\n");
        drop(in_w);
        let seen = copier.join().unwrap();
        let starts: Vec<(u32, u64)> = seen.iter().map(|(_, v, s)| (*v, *s)).collect();
        assert_eq!(starts, vec![(1, 4), (2, 48), (1, 68)]);
    }

    #[test]
    fn rule_hits_and_known_values_are_replaced_bytes_elsewhere_kept() {
        let k = known(&[("api", b"fake-secret-123"), ("db", b"pw-xyz-long")]);
        let input = format!(
            "a fake-secret-123 b pw-xyz-long\n#\x00 token={} end\r\n",
            ghp()
        );
        let mut bytes = input.into_bytes();
        bytes[32] = 0xff; // invalid UTF-8 stays as is
        let out = run(Some(k), &[&bytes]);
        let mut want = b"a [REDACTED:api] b [REDACTED:db]\n".to_vec();
        want.extend_from_slice(&bytes[32..34]);
        want.extend_from_slice(b" token=[REDACTED:github.pat_classic] end\r\n");
        assert_eq!(out, want);
        // A near miss is not redacted.
        assert_eq!(
            run(
                Some(known(&[("api", b"fake-secret-123")])),
                &[b"fake-secret-124"]
            ),
            b"fake-secret-124"
        );
    }

    #[test]
    fn a_complete_line_is_written_at_once() {
        let k = known(&[("api", b"fake-secret-123")]);
        let mut r = Redactor::new(engine(), Some(k), RedactOptions::default()).unwrap();
        let mut out = Vec::new();
        r.feed(b"hello world\n", &mut out).unwrap();
        assert_eq!(out, b"hello world\n");
        r.feed(b"log: fake-sec", &mut out).unwrap();
        assert_eq!(out, b"hello world\n", "an incomplete line may hold a match");
        r.feed(b"ret-123 done\nnext", &mut out).unwrap();
        assert_eq!(out, b"hello world\nlog: [REDACTED:api] done\n");
    }

    #[test]
    fn hold_back_cap_fails_closed() {
        let tok = ghp();
        let mut r = Redactor::new(
            engine(),
            None,
            RedactOptions {
                max_hold: 0,
                ..Default::default()
            },
        )
        .unwrap();
        let cap = r.opts.max_hold;
        // No newline: the line-local rules hold everything until the cap is passed.
        let mut input = format!("x={tok} ").into_bytes();
        input.resize(cap + 4096, b'a');
        let mut out = Vec::new();
        r.feed(&input, &mut out).unwrap();
        r.finish(&mut out).unwrap();
        let s = String::from_utf8_lossy(&out);
        assert!(!s.contains(&tok));
        assert!(s.contains("[REDACTED:"), "{}", &s[..80]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_chunking_gives_the_same_output(
            parts in proptest::collection::vec(prop_oneof![
                Just(b"fake-val-8".to_vec()), Just(b"fake-value-long".to_vec()), Just(b"fa".to_vec()),
                Just(b"x\n".to_vec()), Just(b"-".to_vec()), Just(b"ZmFrZS12YWwtOA".to_vec()),
                Just(b"token=".to_vec()), Just(ghp().into_bytes())], 0..30),
            cuts in proptest::collection::vec(0usize..600, 0..8),
        ) {
            let k = known(&[("a", b"fake-val-8"), ("b", b"fake-value-long")]);
            let input: Vec<u8> = parts.concat();
            let whole = run(Some(k.clone()), &[&input]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for c in cuts { chunks.push(&input[prev..c]); prev = c; }
            chunks.push(&input[prev..]);
            prop_assert_eq!(run(Some(k.clone()), &chunks), whole.clone());
            let w = String::from_utf8(whole.clone()).unwrap();
            prop_assert!(!w.contains("fake-val-8") && !w.contains("fake-value-long"));
            prop_assert!(!w.contains(&ghp()));
            // Redacting the output again changes nothing.
            prop_assert_eq!(run(Some(k), &[&whole]), whole);
        }
    }
}
