//! Stream mode: feed chunks of any size, get the same matches as [`Engine::scan_block`] on the
//! concatenation, *as soon as they are settled*.
//!
//! Per rule, the scanner knows an offset before which every match of that rule has been found:
//! - in general, `total - max_len` (a later prefilter hit cannot open a window before it);
//! - for a rule that cannot match a newline (most rules: computed when the rule is loaded), the
//!   end of the last complete line — so a complete line is settled the moment it arrives;
//! - for a multi-line rule whose matches start with known literals (PEM blocks), the first
//!   occurrence of such a literal that is still open — a log without `-----BEGIN` holds nothing.
//!
//! The minimum over rules is the stream's settled offset. A match is handed to the sink once every
//! match that could overlap it is known (its end is settled), after overlaps across rules are
//! resolved, so the sink sees exactly what block mode returns, in order. Bytes are held back only
//! while a pending match or window needs them, at most [`Engine::max_holdback`] plus one chunk,
//! with an open window capped at [`STREAM_HOLD_CAP`] before it is searched with a horizon.
//!
//! With Hyperscan, the multi-line rules are prefiltered by a Hyperscan stream, and the line-local
//! rules by block scans of the lines completed since the last feed (a line without a newline
//! after [`STREAM_HOLD_CAP`] bytes is scanned in parts that overlap by the longest line-local
//! match): Hyperscan's block mode is faster than its stream mode, and a large batch of lines can
//! be cut in two and scanned on two threads (`split`). Per rule, the scanner settles only what
//! its prefilter has covered.

use super::known::{KnownHit, KnownMatcher, KnownStream};
#[cfg(feature = "hyperscan")]
use super::windows::hit_recorder;
use super::windows::{add_window, merge_windows, split_at};
use super::{Engine, EngineError, LineCursor, Match, RuleIndex, Scratch, CONTEXT};
use std::sync::Arc;

/// Default cap on bytes held for an open window before it is resolved with a horizon.
pub const STREAM_HOLD_CAP: usize = 64 * 1024;

/// What a stream-mode sink sees with each match: the held bytes (covering the match and
/// [`CONTEXT`] bytes around it) and the line position of the match start.
pub struct View<'a> {
    pub hay: &'a [u8],
    /// Absolute offset of `hay[0]`.
    pub base: u64,
    /// Positioned at the match start.
    pub cursor: &'a LineCursor,
}

pub struct StreamScanner<'e> {
    engine: &'e Engine,
    scratch: Scratch,
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]`.
    base: u64,
    /// Per rule: where the next search resumes (end of the last match, or a horizon).
    next: Vec<u64>,
    /// Line position of `base`.
    cursor: LineCursor,
    /// Absolute offset just past the last newline fed (0 before the first).
    line_end: u64,
    /// Confirmed matches not yet handed out, sorted, each with its "lost an overlap" flag.
    pending: Vec<(Match, bool)>,
    /// Every match starting before this offset is known (emitted or pending).
    settled: u64,
    /// Per rule with start literals: offsets of complete occurrences not yet passed, in order.
    literal_at: Vec<std::collections::VecDeque<u64>>,
    /// Start literals are searched from here on the next feed.
    literal_from: u64,
    literal_scratch: super::literals::LiteralScratch,
    /// Look for start literals (settle multi-line rules early): worth it on a pipe, where a
    /// line should be reported when it arrives; not on a large file, where it cost 13% of the
    /// CPU of the 1 GiB benchmark and nobody waits for the first finding.
    track_literals: bool,
    /// Prefilter windows arrive (from Hyperscan, or from the caller through
    /// [`StreamScanner::feed_windows`]); otherwise every rule is confirmed by full search.
    prefiltered: bool,
    /// Line-local rules are prefiltered here by Hyperscan block scans of complete lines (a long
    /// line without a newline is scanned in parts); multi-line rules by the Hyperscan stream.
    block_lines: bool,
    /// Every hit of a line-local rule ending at or before this offset is recorded.
    lines_upto: u64,
    /// Where the next block scan of line-local rules starts: a line start, or `max_len` before
    /// `lines_upto` inside a long line.
    lines_from: u64,
    /// The fingerprint stage, when known values are attached ([`StreamScanner::with_known`]).
    known: Option<Known>,
    /// The streaming database of the multi-line rules, when Hyperscan has any.
    #[cfg(feature = "hyperscan")]
    hs: Option<super::split::HsStream>,
    /// The second thread of the line-local block prefilter, started at the first large batch
    /// (`Err(())` once it could not be had or died: the batches are then scanned here alone).
    #[cfg(feature = "hyperscan")]
    split: Option<Result<super::split::SplitWorker, ()>>,
}

/// The fingerprint stage of a stream: inline (with Hyperscan on two cores, a large batch's
/// anchors are divided with the prefilter thread, `super::split`), or, where nothing is split,
/// on a worker thread of its own for a large set, testing the anchors of a chunk while this
/// thread runs the rule stages over it. Either way each feed returns only once the stage has
/// seen the chunk, so what is settled does not depend on timing.
enum Known {
    Inline(KnownStream),
    Worker(KnownWorker),
    /// The stage went to the prefilter thread with a [`StreamScanner::feed_more`] chunk
    /// (`super::split`): its hits and settled offset as last received from there.
    #[cfg_attr(not(feature = "hyperscan"), allow(dead_code))]
    Lent {
        hits: Vec<KnownHit>,
        settled: u64,
    },
}

struct KnownWorker {
    /// `None` once dropped: closing the channel ends the worker's loop.
    jobs: Option<std::sync::mpsc::Sender<(Vec<u8>, bool)>>,
    replies: std::sync::mpsc::Receiver<(Vec<KnownHit>, u64, Vec<u8>)>,
    /// A chunk was sent and its reply not yet received.
    waiting: bool,
    hits: Vec<KnownHit>,
    settled: u64,
    /// Buffers returned by the worker, reused for the next chunk.
    spare: Vec<u8>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Sets with fewer entries than this are tested inline: a thread hand-off per chunk costs more
/// than their anchors.
const KNOWN_WORKER_MIN_ENTRIES: usize = 1024;

impl Known {
    /// `split`: large batches go to the prefilter thread (`super::split`), which then runs an
    /// inline stage as well — two threads on two cores rather than three.
    fn new(matcher: Arc<KnownMatcher>, split: bool) -> Known {
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
        if !parallel || split || matcher.set().len() < KNOWN_WORKER_MIN_ENTRIES {
            return Known::Inline(KnownStream::new(matcher));
        }
        let (jobs, job_rx) = std::sync::mpsc::channel::<(Vec<u8>, bool)>();
        let (reply_tx, replies) = std::sync::mpsc::channel();
        let inline = matcher.clone();
        let mut stream = KnownStream::new(matcher);
        let thread = std::thread::Builder::new()
            .name("guard-known".into())
            .spawn(move || {
                for (chunk, eof) in job_rx {
                    stream.feed(&chunk, eof);
                    if reply_tx
                        .send((stream.take_hits(), stream.settled(), chunk))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        match thread {
            Ok(t) => Known::Worker(KnownWorker {
                jobs: Some(jobs),
                replies,
                waiting: false,
                hits: Vec::new(),
                settled: 0,
                spare: Vec::new(),
                thread: Some(t),
            }),
            // No thread to be had: the same stage, inline.
            Err(_) => Known::Inline(KnownStream::new(inline)),
        }
    }

    /// Hands `chunk` to the stage (on the worker: returns at once; [`Known::wait`] collects).
    /// A lent stage is reclaimed first (`StreamScanner::reclaim_known`).
    fn start(&mut self, chunk: &[u8], eof: bool) {
        match self {
            Known::Inline(k) => k.feed(chunk, eof),
            Known::Lent { .. } => debug_assert!(false, "the stage is lent"),
            Known::Worker(KnownWorker {
                jobs,
                waiting,
                spare,
                settled,
                ..
            }) => {
                let mut v = std::mem::take(spare);
                v.clear();
                v.extend_from_slice(chunk);
                *waiting = jobs.as_ref().is_some_and(|j| j.send((v, eof)).is_ok());
                if !*waiting {
                    // The worker is gone: nothing is settled any more (fail closed).
                    *settled = 0;
                }
            }
        }
    }

    /// Waits for the stage to have seen every chunk handed to it.
    fn wait(&mut self) {
        if let Known::Worker(KnownWorker {
            replies,
            waiting,
            hits,
            settled,
            spare,
            ..
        }) = self
        {
            if std::mem::take(waiting) {
                match replies.recv() {
                    Ok((h, s, buf)) => {
                        hits.extend(h);
                        *settled = s;
                        *spare = buf;
                    }
                    // The worker is gone (it panicked): nothing is settled any more, so a
                    // redactor holds and then fails closed rather than writing unexamined bytes.
                    Err(_) => *settled = 0,
                }
            }
        }
    }

    fn settled(&self) -> u64 {
        match self {
            Known::Inline(k) => k.settled(),
            Known::Worker(w) => w.settled,
            Known::Lent { settled, .. } => *settled,
        }
    }

    fn take_hits(&mut self) -> Vec<KnownHit> {
        match self {
            Known::Inline(k) => k.take_hits(),
            Known::Worker(w) => std::mem::take(&mut w.hits),
            Known::Lent { hits, .. } => std::mem::take(hits),
        }
    }
}

impl Drop for KnownWorker {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Sink<'s> = &'s mut dyn FnMut(&Match, &View);

/// What was handed to the prefilter thread: the line batch from `cut` on, and the fingerprint
/// anchors from `known_from` on.
#[cfg(feature = "hyperscan")]
#[derive(Clone, Copy)]
struct Handed {
    cut: u64,
    known_from: Option<u64>,
}

impl<'e> StreamScanner<'e> {
    pub fn new(engine: &'e Engine) -> Result<StreamScanner<'e>, EngineError> {
        #[cfg(feature = "hyperscan")]
        {
            let hs = match engine.stream_db()? {
                Some(db) => {
                    let err = |what: &str, e: hyperscan::Error| {
                        EngineError::Hyperscan(format!("cannot {what}: {e}"))
                    };
                    let st = db.open_stream().map_err(|e| err("open a stream", e))?;
                    let sc = db
                        .alloc_scratch()
                        .map_err(|e| err("allocate stream scratch", e))?;
                    Some((st, sc))
                }
                None => None,
            };
            StreamScanner::assemble(engine, engine.has_block_prefilter(), false, hs)
        }
        #[cfg(not(feature = "hyperscan"))]
        StreamScanner::assemble(engine, false, false)
    }

    /// A scanner whose windows come from the caller ([`StreamScanner::feed_windows`] with the
    /// output of [`Engine::prefilter_windows`]) instead of a Hyperscan stream.
    pub fn with_external_prefilter(engine: &'e Engine) -> Result<StreamScanner<'e>, EngineError> {
        StreamScanner::assemble(
            engine,
            engine.has_block_prefilter(),
            true,
            #[cfg(feature = "hyperscan")]
            None,
        )
    }

    fn assemble(
        engine: &'e Engine,
        prefiltered: bool,
        external: bool,
        #[cfg(feature = "hyperscan")] hs: Option<super::split::HsStream>,
    ) -> Result<StreamScanner<'e>, EngineError> {
        Ok(StreamScanner {
            engine,
            scratch: engine.scratch()?,
            buf: Vec::with_capacity(engine.max_holdback()),
            base: 0,
            next: vec![0; engine.compiled.len()],
            cursor: LineCursor::new(),
            line_end: 0,
            pending: Vec::new(),
            settled: 0,
            literal_at: vec![Default::default(); engine.compiled.len()],
            literal_from: 0,
            literal_scratch: engine.start_literals.scratch(),
            track_literals: !external,
            prefiltered,
            block_lines: prefiltered && !external,
            lines_upto: 0,
            lines_from: 0,
            known: None,
            #[cfg(feature = "hyperscan")]
            hs,
            #[cfg(feature = "hyperscan")]
            split: None,
        })
    }

    /// Also find the known values of `matcher` (the fingerprint stage); take them with
    /// [`StreamScanner::take_known`].
    pub fn with_known(mut self, matcher: Arc<KnownMatcher>) -> Self {
        if !matcher.set().is_empty() {
            self.known = Some(Known::new(matcher, self.block_lines));
        }
        self
    }

    /// Known values found so far (each once), in the order found.
    pub fn take_known(&mut self) -> Vec<KnownHit> {
        self.known.as_mut().map_or_else(Vec::new, Known::take_hits)
    }

    /// Absolute offset of the first byte still held.
    pub fn held_from(&self) -> u64 {
        self.base
    }

    /// Bytes currently held back.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Every byte before this offset is final: no match that is not yet handed to the sink can
    /// cover it. (What a redactor may write out.)
    pub fn settled(&self) -> u64 {
        let known = self.known.as_ref().map_or(u64::MAX, Known::settled);
        self.pending
            .first()
            .map_or(self.settled, |(m, _)| m.start.min(self.settled))
            .min(known)
    }

    /// Appends `chunk` with the prefilter windows of every hit ending inside it.
    pub fn feed_windows(
        &mut self,
        chunk: &[u8],
        windows: impl IntoIterator<Item = (RuleIndex, u64, u64)>,
        sink: Sink,
    ) -> Result<(), EngineError> {
        if let Some(k) = &mut self.known {
            k.start(chunk, false);
        }
        for (r, lo, hi) in windows {
            add_window(&mut self.scratch.windows[r.get()], lo, hi);
        }
        self.append(chunk);
        self.process(false, sink);
        if let Some(k) = &mut self.known {
            k.wait();
        }
        Ok(())
    }

    /// Appends `chunk` and hands out every match that is final; what it settles covers all of
    /// the chunk the engine could decide.
    pub fn feed(&mut self, chunk: &[u8], sink: Sink) -> Result<(), EngineError> {
        self.feed_as(chunk, sink, false)
    }

    /// [`StreamScanner::feed`] for a caller with more input at hand: the fingerprint stage may
    /// still be testing this chunk (on the prefilter thread, while the caller writes and reads
    /// the next one) when this returns. Its hits and settled offset then arrive with the next
    /// feed, or with [`StreamScanner::catch_up`] — which a caller about to wait for input must
    /// call, or the chunk's bytes stay unsettled until then. Matches and what is settled are
    /// the same as with [`StreamScanner::feed`], only later.
    pub fn feed_more(&mut self, chunk: &[u8], sink: Sink) -> Result<(), EngineError> {
        self.feed_as(chunk, sink, true)
    }

    /// Whether the fingerprint stage is behind (after [`StreamScanner::feed_more`]).
    pub fn lagging(&self) -> bool {
        matches!(self.known, Some(Known::Lent { .. }))
    }

    /// Waits for the fingerprint stage to catch up with every chunk fed.
    pub fn catch_up(&mut self) -> Result<(), EngineError> {
        #[cfg(feature = "hyperscan")]
        return self.reclaim_known();
        #[cfg(not(feature = "hyperscan"))]
        Ok(())
    }

    fn feed_as(&mut self, chunk: &[u8], sink: Sink, more: bool) -> Result<(), EngineError> {
        // An inline stage is fed in `feed_rules`, here or on the prefilter thread.
        if let Some(k @ Known::Worker(_)) = &mut self.known {
            k.start(chunk, false);
        }
        let fed = self.feed_rules(chunk, sink, more);
        if let Some(k) = &mut self.known {
            k.wait();
        }
        fed
    }

    /// Takes the fingerprint stage back from the prefilter thread (if lent), with the hits
    /// it found meanwhile. Fails when the thread died with it: nothing more can be settled.
    #[cfg(feature = "hyperscan")]
    fn reclaim_known(&mut self) -> Result<(), EngineError> {
        if !self.lagging() {
            return Ok(());
        }
        let back = match &mut self.split {
            Some(Ok(w)) => w.reclaim(),
            _ => None,
        };
        let Some(Some(k)) = back else {
            self.split = Some(Err(()));
            return Err(EngineError::Hyperscan(
                "the prefilter thread stopped with the fingerprint stage".into(),
            ));
        };
        self.inline_again(*k);
        Ok(())
    }

    /// The stage `k`, back from the prefilter thread, runs here again, with the hits received
    /// while it was lent ahead of its own.
    #[cfg(feature = "hyperscan")]
    fn inline_again(&mut self, mut k: KnownStream) {
        if let Some(Known::Lent { hits, .. }) = &mut self.known {
            if let Some(Ok(w)) = &mut self.split {
                hits.extend(w.take_known().0);
            }
            k.put_back_hits(std::mem::take(hits));
        }
        self.known = Some(Known::Inline(k));
    }

    fn feed_rules(&mut self, chunk: &[u8], sink: Sink, more: bool) -> Result<(), EngineError> {
        #[cfg(feature = "hyperscan")]
        if !more {
            self.reclaim_known()?;
        }
        let chunk_start = self.base + self.buf.len() as u64;
        self.extend(chunk);
        // A large line batch is cut and its second part handed to the worker first, with the
        // chunk's multi-line stream, so both run while this thread finds start literals.
        let batch = self.line_batch(false);
        #[cfg(feature = "hyperscan")]
        let handed = batch.and_then(|b| self.hand_off(b, chunk_start, more));
        #[cfg(not(feature = "hyperscan"))]
        let _ = (chunk_start, batch, more);
        #[cfg(feature = "hyperscan")]
        if handed.is_none() {
            // Not handed: the stage (if lent) is needed here.
            self.reclaim_known()?;
            self.stream_scan(chunk)?;
        }
        // An inline fingerprint stage tests the anchors before the worker's part here.
        #[cfg(feature = "hyperscan")]
        let limit = handed.and_then(|h| h.known_from);
        #[cfg(not(feature = "hyperscan"))]
        let limit = None;
        if let Some(Known::Inline(k)) = &mut self.known {
            k.append(chunk, limit);
        }
        self.find_start_literals();
        #[cfg(feature = "hyperscan")]
        if let Some(b) = batch {
            self.scan_lines(b, handed)?;
        }
        if let Some(Known::Inline(k)) = &mut self.known {
            k.settle(false);
        }
        self.process(false, sink);
        Ok(())
    }

    /// Runs the multi-line rules' Hyperscan stream over `chunk` on this thread.
    #[cfg(feature = "hyperscan")]
    fn stream_scan(&mut self, chunk: &[u8]) -> Result<(), EngineError> {
        if let Some((st, sc)) = &self.hs {
            let mut record = hit_recorder(
                self.engine.ruleset.rules(),
                &mut self.scratch.windows,
                None,
                0,
                0,
                u64::MAX,
                None,
            );
            for piece in chunk.chunks(u32::MAX as usize / 2) {
                st.scan(piece, sc, &mut record)
                    .map_err(|e| EngineError::Hyperscan(format!("stream scan failed: {e}")))?;
            }
        }
        Ok(())
    }

    /// The next block scan of the line-local rules, `(from, hay_end, ends_upto)`: the lines
    /// completed since the last one (or, at the end, or when a line grows past
    /// [`STREAM_HOLD_CAP`] without a newline, what there is), for the hits ending in
    /// `(lines_upto, ends_upto]`. Advances `lines_upto` and `lines_from` past it.
    fn line_batch(&mut self, eof: bool) -> Option<(u64, u64, u64)> {
        if !self.block_lines {
            return None;
        }
        let total = self.base + self.buf.len() as u64;
        let (hay_end, ends_upto) = if eof {
            (total, total)
        } else if total - self.line_end.max(self.lines_upto) > STREAM_HOLD_CAP as u64 {
            // A hit ending at the last byte may depend on the next one (`\b`): not yet.
            (total, total - 1)
        } else {
            (self.line_end, self.line_end)
        };
        if ends_upto <= self.lines_upto {
            return None;
        }
        debug_assert!(self.lines_from >= self.base, "block-scan start was dropped");
        let batch = (self.lines_from.max(self.base), hay_end, ends_upto);
        // A match ending past `ends_upto` starts on its line and at most `max_len` before it.
        self.lines_from = if ends_upto == self.line_end {
            self.line_end
        } else {
            let len = self.engine.max_len_line_local as u64 + 1;
            self.line_end.max(ends_upto.saturating_sub(len))
        };
        Some(batch)
    }

    /// Cuts a large batch at a newline and hands its second part, with the multi-line stream
    /// and the chunk (which starts at `chunk_start`), to the [`super::split`] worker (started
    /// on first use); returns where it was cut.
    #[cfg(feature = "hyperscan")]
    fn hand_off(
        &mut self,
        (from, hay_end, ends_upto): (u64, u64, u64),
        chunk_start: u64,
        more: bool,
    ) -> Option<Handed> {
        use super::split::{Job, KnownWork, SplitWorker};
        let rel = |x: u64| (x - self.base) as usize;
        let hay = &self.buf[rel(from)..rel(hay_end)];
        if self.split.is_none() && SplitWorker::large(hay) {
            let db = self.engine.hs.clone()?;
            let line_local = self.engine.line_local.clone();
            self.split = Some(SplitWorker::start(db, line_local).ok_or(()));
        }
        let Some(Ok(worker)) = &mut self.split else {
            return None;
        };
        let at = worker.cut(hay)?;
        let cut = from + at as u64;
        let base = cut.min(chunk_start);
        let mut bytes = worker.buffer();
        bytes.extend_from_slice(&self.buf[rel(base)..]);
        // With more input at hand the whole stage goes along (and stays there); otherwise the
        // worker tests the anchors of its part and this thread keeps the stage.
        let (known, known_from) = match self.known.take() {
            Some(Known::Inline(mut k)) if more => {
                let (hits, settled) = (k.take_hits(), k.settled());
                self.known = Some(Known::Lent { hits, settled });
                (KnownWork::Stage(Some(Box::new(k))), None)
            }
            Some(Known::Inline(k)) => {
                let from = k.align(cut.max(chunk_start));
                let work = KnownWork::Anchors(k.matcher().clone(), from);
                self.known = Some(Known::Inline(k));
                (work, Some(from))
            }
            Some(lent @ Known::Lent { .. }) => {
                self.known = Some(lent);
                (KnownWork::Stage(None), None)
            }
            other => {
                self.known = other;
                (KnownWork::None, None)
            }
        };
        let job = Job {
            bytes,
            base,
            known,
            stream: self.hs.take(),
            stream_from: (chunk_start - base) as usize,
            block_from: (cut - base) as usize,
            ends_upto,
        };
        match worker.send(job) {
            Ok(()) => Some(Handed { cut, known_from }),
            Err(job) => {
                self.hs = job.stream;
                if let KnownWork::Stage(Some(k)) = job.known {
                    self.inline_again(*k);
                }
                self.split = Some(Err(()));
                None
            }
        }
    }

    /// Block-scans a batch of [`StreamScanner::line_batch`] (up to `handed`, where the worker
    /// took over) and records the hits of both threads.
    #[cfg(feature = "hyperscan")]
    fn scan_lines(
        &mut self,
        (from, hay_end, ends_upto): (u64, u64, u64),
        handed: Option<Handed>,
    ) -> Result<(), EngineError> {
        let e = self.engine;
        let (Some(db), Some(hs)) = (&e.hs, &self.scratch.hs) else {
            return Ok(());
        };
        let rel = |x: u64| (x - self.base) as usize;
        let windows = &mut self.scratch.windows;
        let ends_after = self.lines_upto;
        self.lines_upto = ends_upto;
        let (mine_end, mine_upto) = handed.map_or((hay_end, ends_upto), |h| (h.cut, h.cut));
        let hay = &self.buf[rel(from)..rel(mine_end)];
        let only = Some(&e.line_local[..]);
        let mine = e.block_hits(
            db, hs, windows, None, hay, from, ends_after, mine_upto, only,
        );
        if handed.is_none() {
            return mine;
        }
        let reply = match &mut self.split {
            Some(Ok(w)) => w.wait(),
            _ => None,
        };
        let Some(reply) = reply else {
            // The worker died with the stream's state: nothing more can be prefiltered.
            self.split = Some(Err(()));
            return Err(EngineError::Hyperscan(
                "the prefilter thread stopped".into(),
            ));
        };
        self.hs = reply.stream;
        if let (Some(Known::Inline(k)), Some((found, next))) = (&mut self.known, &reply.known) {
            k.add_tested(found, *next);
        }
        if let (Some(Known::Lent { hits, settled }), Some(Ok(w))) =
            (&mut self.known, &mut self.split)
        {
            let (found, upto) = w.take_known();
            hits.extend(found);
            if let Some(upto) = upto {
                *settled = upto;
            }
        }
        mine?;
        for &(r, end) in &reply.hits.map_err(EngineError::Hyperscan)? {
            let r = r as usize;
            super::windows::add_hit(&mut windows[r], end, e.rule_at(r).max_len);
        }
        Ok(())
    }

    /// Ends the stream: hands out every remaining match, and returns the known values found
    /// since the last [`StreamScanner::take_known`].
    pub fn finish(mut self, sink: Sink) -> Result<Vec<KnownHit>, EngineError> {
        #[cfg(feature = "hyperscan")]
        let reclaimed = self.reclaim_known();
        #[cfg(not(feature = "hyperscan"))]
        let reclaimed = Ok(());
        if let Some(k @ (Known::Inline(_) | Known::Worker(_))) = &mut self.known {
            k.start(&[], true);
        }
        let closed = reclaimed.and(self.close_stream());
        #[cfg(feature = "hyperscan")]
        let closed = match self.line_batch(true) {
            Some(b) => closed.and_then(|()| self.scan_lines(b, None)),
            None => closed,
        };
        self.process(true, sink);
        if let Some(k) = &mut self.known {
            k.wait();
        }
        closed.map(|()| self.take_known())
    }

    fn append(&mut self, chunk: &[u8]) {
        self.extend(chunk);
        self.find_start_literals();
    }

    fn extend(&mut self, chunk: &[u8]) {
        if let Some(p) = memchr::memrchr(b'\n', chunk) {
            self.line_end = self.base + (self.buf.len() + p + 1) as u64;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Records every complete start-literal occurrence in the bytes not searched yet (plus the
    /// last `len - 1` bytes before them, where one may have been cut).
    fn find_start_literals(&mut self) {
        let e = self.engine;
        if e.start_literals.is_empty() || !self.track_literals {
            return;
        }
        let total = self.base + self.buf.len() as u64;
        let from = self.literal_from.max(self.base);
        let mut found: Vec<(usize, u64)> = Vec::new();
        e.start_literals.find(
            &mut self.literal_scratch,
            &self.buf[(from - self.base) as usize..],
            &mut |r, at| found.push((r, from + at as u64)),
        );
        found.sort_unstable();
        for (r, at) in found {
            let list = &mut self.literal_at[r];
            if list.back().is_none_or(|&last| at > last) {
                list.push_back(at);
            }
        }
        self.literal_from =
            total.saturating_sub(e.start_literals.max_len().saturating_sub(1) as u64);
    }

    fn close_stream(&mut self) -> Result<(), EngineError> {
        #[cfg(feature = "hyperscan")]
        if let Some((st, sc)) = self.hs.take() {
            let record = hit_recorder(
                self.engine.ruleset.rules(),
                &mut self.scratch.windows,
                None,
                0,
                0,
                u64::MAX,
                None,
            );
            st.close(&sc, record)
                .map_err(|e| EngineError::Hyperscan(format!("closing a stream failed: {e}")))?;
        }
        Ok(())
    }

    fn full_search(&self, r: usize) -> bool {
        !self.prefiltered || self.engine.compiled[r].full_search
    }

    /// For a multi-line rule with start literals: the first offset at or after `next[r]` where
    /// a match of it can still start. An occurrence more than `max_len` before the end of the
    /// buffer only counts while a prefilter window covers it (a match starting there would have
    /// ended, and been reported, already); one cut by the end of the buffer counts at the tail.
    fn first_start_literal(
        &mut self,
        r: usize,
        total: u64,
        windows: Option<&[(u64, u64)]>,
    ) -> Option<u64> {
        let cr = &self.engine.compiled[r];
        if cr.start_literal_max == 0 || !self.track_literals {
            return None;
        }
        let from = self.next[r].max(self.base);
        // A literal cut by the end of the buffer starts in its last `len - 1` bytes — and, when
        // no literal holds a newline, after the last newline.
        let mut tail = total.saturating_sub(cr.start_literal_max.saturating_sub(1) as u64);
        if !cr.start_literal_newline {
            tail = tail.max(self.line_end);
        }
        let tail = tail.max(from);
        let old = total.saturating_sub(self.engine.rule_at(r).max_len as u64);
        let list = &mut self.literal_at[r];
        // Passed, or dead for good: no window covers it now, and none ever will.
        while let Some(&s) = list.front() {
            let dead = s < from
                || windows.is_some_and(|w| s < old && !w.iter().any(|&(lo, hi)| lo <= s && s < hi));
            if !dead {
                break;
            }
            list.pop_front();
        }
        Some(list.front().map_or(tail, |&s| s.min(tail)))
    }

    fn process(&mut self, eof: bool, sink: Sink) {
        let total = self.base + self.buf.len() as u64;
        let mut found = Vec::new();
        let mut settled = u64::MAX;
        let mut keep_from = total.saturating_sub(self.engine.max_holdback() as u64);
        if self.block_lines {
            keep_from = keep_from.min(self.lines_from);
        }
        for r in 0..self.engine.compiled.len() {
            let rule = self.engine.rule_at(r);
            let max_len = rule.max_len as u64;
            let line_local = !rule.pattern.spans_newline;
            // Every prefilter hit of this rule ending at or before `hits_upto` is recorded.
            let hits_upto = if line_local && self.block_lines && !eof {
                self.lines_upto
            } else {
                total
            };
            // No match of this rule outside the known windows starts before `structural`.
            let searched = self.full_search(r) || (!eof && self.windows_too_long(r));
            let structural = if eof {
                u64::MAX
            } else if line_local {
                self.line_end
            } else {
                let windows = (!searched).then(|| std::mem::take(&mut self.scratch.windows[r]));
                let at = self.first_start_literal(r, total, windows.as_deref());
                if let Some(w) = windows {
                    self.scratch.windows[r] = w;
                }
                at.unwrap_or(0)
            };
            if searched {
                // A match starting before `horizon` is entirely visible, and so is its context.
                let horizon = if eof {
                    u64::MAX
                } else {
                    total
                        .saturating_sub(max_len + CONTEXT as u64)
                        .max(structural)
                };
                let from = self.next[r].max(self.base);
                let rel = |x: u64| (x - self.base) as usize;
                let accept = if eof {
                    usize::MAX
                } else {
                    rel(horizon.clamp(self.base, total))
                };
                let next = self.engine.confirm(
                    &mut self.scratch,
                    r,
                    &self.buf,
                    self.base,
                    rel(from)..self.buf.len(),
                    accept,
                    &mut found,
                );
                let next_abs = self.base + next as u64;
                // No final match starts in [next_abs, horizon): any would have been found.
                self.next[r] = if eof {
                    next_abs
                } else {
                    next_abs.max(horizon.min(total))
                };
                let next = self.next[r];
                self.scratch.windows[r].retain_mut(|w| {
                    w.0 = w.0.max(next);
                    w.1 > next
                });
                settled = settled.min(next);
                keep_from = keep_from.min(next);
                continue;
            }
            let mut windows = std::mem::take(&mut self.scratch.windows[r]);
            merge_windows(&mut windows);
            if line_local && !eof {
                split_at(&mut windows, self.line_end);
            }
            // Windows that can no longer grow (a later hit ends past `total`, so its window starts
            // past `total - max_len`), or that end before the rule's structural bound.
            let closable = windows
                .iter()
                .take_while(|w| {
                    eof || w.1 + max_len + CONTEXT as u64 <= hits_upto || w.1 <= structural
                })
                .count();
            for &(lo, hi) in &windows[..closable] {
                let from = lo.max(self.next[r]).max(self.base);
                if from < hi {
                    let s = (from - self.base) as usize..(hi - self.base) as usize;
                    let n = self.engine.confirm(
                        &mut self.scratch,
                        r,
                        &self.buf,
                        self.base,
                        s,
                        usize::MAX,
                        &mut found,
                    );
                    self.next[r] = self.base + n as u64;
                }
            }
            windows.drain(..closable);
            if !eof {
                self.next[r] = self.next[r].max(structural.min(total));
            }
            let next = self.next[r];
            windows.retain_mut(|w| {
                w.0 = w.0.max(next);
                w.1 > next
            });
            let open_from = windows.first().map_or(u64::MAX, |w| w.0);
            if !eof {
                settled =
                    settled.min(open_from.min(hits_upto.saturating_sub(max_len).max(structural)));
            }
            keep_from = keep_from.min(open_from);
            self.scratch.windows[r] = windows;
        }
        self.emit(found, if eof { u64::MAX } else { settled }, eof, sink);
        if let Some((m, _)) = self.pending.first() {
            keep_from = keep_from.min(m.start);
        }
        let keep_from = keep_from.saturating_sub(CONTEXT as u64).max(self.base);
        let drop = (keep_from - self.base) as usize;
        if drop > 0 {
            self.cursor.advance(&self.buf, self.base, keep_from);
            self.buf.drain(..drop);
            self.base = keep_from;
        }
    }

    /// Adds newly confirmed matches and hands out, in order, every pending match whose overlaps
    /// are all known (its end is settled).
    fn emit(&mut self, mut found: Vec<Match>, settled: u64, eof: bool, sink: Sink) {
        self.settled = settled;
        if !found.is_empty() {
            found.sort();
            self.pending.extend(found.into_iter().map(|m| (m, false)));
            self.pending.sort();
        }
        if self.pending.is_empty() {
            return;
        }
        self.engine.resolve_overlaps(&mut self.pending, settled);
        let ready = self
            .pending
            .iter()
            .take_while(|(m, _)| eof || m.end <= settled)
            .count();
        let mut cursor = self.cursor.clone();
        for (m, dropped) in self.pending.drain(..ready) {
            if dropped {
                continue;
            }
            cursor.advance(&self.buf, self.base, m.start);
            sink(
                &m,
                &View {
                    hay: &self.buf,
                    base: self.base,
                    cursor: &cursor,
                },
            );
        }
    }

    /// An open window longer than the hold-back cap is searched with a horizon instead of waiting
    /// for it to close, so hit-dense input cannot grow the buffer without bound.
    fn windows_too_long(&self, r: usize) -> bool {
        let cap = STREAM_HOLD_CAP.max(self.engine.max_holdback()) as u64;
        let next = self.next[r];
        self.scratch.windows[r]
            .iter()
            .any(|w| w.1.saturating_sub(w.0.max(next)) > cap)
    }
}

impl Drop for StreamScanner<'_> {
    fn drop(&mut self) {
        // The hyperscan crate does not free a stream on drop: always close it.
        let _ = self.close_stream();
    }
}
