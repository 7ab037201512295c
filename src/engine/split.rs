//! A second thread for stream mode's prefilter. In stream mode the line-local rules are
//! prefiltered by Hyperscan block scans of complete lines (`StreamScanner::line_batch`), and
//! lines are independent of each other for those rules: a large batch is cut at a newline, and
//! its second part is scanned here — together with the chunk's Hyperscan stream of multi-line
//! rules, whose state travels with the job — while the stream's own thread scans the first part
//! and looks for start literals. The fingerprint stage's anchors are divided the same way.
//! Hyperscan is ~80% of stream mode's CPU; on two cores this is what makes `guard redact` fast.
//!
//! The worker owns its block scratch and a copy of the bytes, and hands back raw hits
//! `(rule, end)` (the caller turns them into windows) with the stream. Each feed waits for its
//! job's scans, so what is settled never depends on timing. If the worker dies the feed fails:
//! the stream's state went with it (fail closed, as a failed stream scan does).
//!
//! When the caller says more input follows at once (`StreamScanner::feed_more`), the whole
//! fingerprint stage goes with the job instead ([`KnownWork::Stage`]) and stays here: the worker
//! answers the scans first and then feeds the chunk to the stage, while the stream's thread
//! writes out what is settled and reads the next chunk — time this thread would otherwise spend
//! idle. The stage's hits and settled offset come back with the next reply ([`Msg::Known`]),
//! and the stage itself when the stream's thread asks for it ([`SplitWorker::reclaim`]).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use super::known::{Candidate, KnownHit, KnownMatcher, KnownStream};
use super::windows::hit_filter;

/// A batch smaller than this is scanned on the stream's thread alone: the hand-off costs more
/// than it saves, and a line arriving on its own should not wait for another thread.
pub(super) const SPLIT_MIN: usize = 64 * 1024;

/// The share of a split batch first given to the worker. It then adapts: down when the stream's
/// thread had to wait for the worker's reply, slowly up when it did not. The worker also runs
/// the multi-line stream, and the stream's thread finds start literals, confirms and writes; a
/// fingerprint thread may share the worker's core. Which part goes where never changes what is
/// found.
const FIRST_SHARE: f64 = 0.5;

/// A wait longer than this counts as waiting for the worker.
const WAITED: std::time::Duration = std::time::Duration::from_micros(20);

/// The Hyperscan stream of the multi-line rules and its scratch.
pub(super) type HsStream = (hyperscan::Stream, hyperscan::Scratch);

/// What the worker scans: `bytes` start at absolute offset `base`; the stream (if sent) gets
/// `bytes[stream_from..]`, the block database `bytes[block_from..]` for the hits ending in
/// `(block_from, ends_upto]` (absolute).
pub(super) struct Job {
    pub bytes: Vec<u8>,
    pub known: KnownWork,
    pub base: u64,
    pub stream: Option<HsStream>,
    pub stream_from: usize,
    pub block_from: usize,
    pub ends_upto: u64,
}

/// The fingerprint stage's part in a job.
pub(super) enum KnownWork {
    None,
    /// Test the anchors from this position on (those before it are tested on the stream's
    /// thread) and hand back the candidates: the stage stays on the stream's thread.
    Anchors(Arc<KnownMatcher>, u64),
    /// Feed the chunk (`bytes[stream_from..]`) to the stage once the scans are answered. The
    /// stage comes with the job, or (`None`) the worker kept it from the job before.
    Stage(Option<Box<KnownStream>>),
}

enum Task {
    Scan(Job),
    /// Send the stage back.
    GiveBack,
}

/// What the worker sends, in the order of the tasks.
enum Msg {
    Scan(Reply),
    /// The stage's hits and settled offset after a [`KnownWork::Stage`] chunk (and the job's
    /// bytes, for reuse).
    Known(Vec<KnownHit>, u64, Vec<u8>),
    /// The stage, answering [`Task::GiveBack`] (`None` if the worker held none).
    Stage(Option<Box<KnownStream>>),
}

pub(super) struct Reply {
    /// Block hits of line-local rules, then stream hits; `Err` when a scan failed.
    pub hits: Result<Vec<(u32, u64)>, String>,
    pub stream: Option<HsStream>,
    /// The fingerprint candidates found, and the next position to test.
    pub known: Option<(Vec<Candidate>, u64)>,
    bytes: Vec<u8>,
}

pub(super) struct SplitWorker {
    /// `None` once dropped: closing the channel ends the worker's loop.
    jobs: Option<Sender<Task>>,
    replies: Receiver<Msg>,
    /// Hits and the latest settled offset of the stage the worker holds, received and not yet
    /// taken ([`SplitWorker::take_known`]).
    known_hits: Vec<KnownHit>,
    known_settled: Option<u64>,
    /// A buffer returned by the worker, reused for the next job.
    spare: Vec<u8>,
    /// The worker's share of the next batch.
    share: f64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SplitWorker {
    /// A worker block-scanning with `db` and recording only rules whose `line_local` flag is
    /// set; `None` on a single CPU, or when no thread or scratch can be had.
    pub(super) fn start(
        db: Arc<hyperscan::BlockDatabase>,
        line_local: Arc<[bool]>,
    ) -> Option<SplitWorker> {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return None;
        }
        let scratch = db.alloc_scratch().ok()?;
        let (jobs, job_rx) = channel::<Task>();
        let (reply_tx, replies) = channel::<Msg>();
        let thread = std::thread::Builder::new()
            .name("guard-prefilter".into())
            .spawn(move || {
                let mut kept: Option<Box<KnownStream>> = None;
                for task in job_rx {
                    let Task::Scan(mut job) = task else {
                        if reply_tx.send(Msg::Stage(kept.take())).is_err() {
                            break;
                        }
                        continue;
                    };
                    let hits = run(&db, &scratch, &line_local, &job);
                    let mut stage = None;
                    let known = match std::mem::replace(&mut job.known, KnownWork::None) {
                        KnownWork::None => None,
                        KnownWork::Anchors(m, from) => {
                            let mut found = Vec::new();
                            let next = m.anchors(&job.bytes, job.base, from, &mut found);
                            Some((found, next))
                        }
                        KnownWork::Stage(sent) => {
                            stage = sent.or(kept.take());
                            None
                        }
                    };
                    // The bytes go back for reuse with the last message of the job.
                    let (bytes, chunk) = match stage {
                        Some(_) => (Vec::new(), job.bytes),
                        None => (job.bytes, Vec::new()),
                    };
                    let reply = Reply {
                        hits,
                        stream: job.stream,
                        known,
                        bytes,
                    };
                    if reply_tx.send(Msg::Scan(reply)).is_err() {
                        break;
                    }
                    // Answered: the stream's thread goes on while the stage runs here.
                    if let Some(mut k) = stage {
                        k.feed(&chunk[job.stream_from..], false);
                        let msg = Msg::Known(k.take_hits(), k.settled(), chunk);
                        kept = Some(k);
                        if reply_tx.send(msg).is_err() {
                            break;
                        }
                    }
                }
            })
            .ok()?;
        Some(SplitWorker {
            jobs: Some(jobs),
            replies,
            known_hits: Vec::new(),
            known_settled: None,
            spare: Vec::new(),
            share: FIRST_SHARE,
            thread: Some(thread),
        })
    }

    /// Whether `hay` is worth cutting.
    pub(super) fn large(hay: &[u8]) -> bool {
        hay.len() >= SPLIT_MIN
    }

    /// Where to cut `hay` (just past a newline), or `None` when it is too small or has no
    /// newline where the cut belongs.
    pub(super) fn cut(&self, hay: &[u8]) -> Option<usize> {
        if !SplitWorker::large(hay) {
            return None;
        }
        let at = hay.len() - (hay.len() as f64 * self.share) as usize;
        memchr::memchr(b'\n', &hay[at..hay.len() - 1]).map(|p| at + p + 1)
    }

    /// A buffer for the next job's bytes.
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.spare);
        v.clear();
        v
    }

    /// Hands a job to the worker; gives it back when the worker is gone.
    pub(super) fn send(&mut self, job: Job) -> Result<(), Job> {
        match &self.jobs {
            Some(j) => j.send(Task::Scan(job)).map_err(|e| match e.0 {
                Task::Scan(job) => job,
                Task::GiveBack => unreachable!("a scan task was sent"),
            }),
            None => Err(job),
        }
    }

    /// The next answer to a task; the stage's results met on the way are kept for
    /// [`SplitWorker::take_known`], and a returned buffer for the next job.
    fn receive(&mut self) -> Option<Msg> {
        loop {
            match self.replies.recv().ok()? {
                Msg::Known(hits, settled, bytes) => {
                    self.known_hits.extend(hits);
                    self.known_settled = Some(settled);
                    self.spare = bytes;
                }
                Msg::Scan(mut r) => {
                    if r.bytes.capacity() > 0 {
                        self.spare = std::mem::take(&mut r.bytes);
                    }
                    return Some(Msg::Scan(r));
                }
                stage @ Msg::Stage(_) => return Some(stage),
            }
        }
    }

    /// The reply to the job last sent, or `None` when the worker died before answering.
    pub(super) fn wait(&mut self) -> Option<Reply> {
        let started = std::time::Instant::now();
        // Tasks are answered in order, and a stage is sent only when asked for.
        let Msg::Scan(reply) = self.receive()? else {
            return None;
        };
        self.share = if started.elapsed() > WAITED {
            (self.share - 0.02).max(0.05)
        } else {
            (self.share + 0.01).min(0.95)
        };
        Some(reply)
    }

    /// The stage's hits received since the last call, and its latest settled offset (`None`
    /// when no stage chunk was answered since).
    pub(super) fn take_known(&mut self) -> (Vec<KnownHit>, Option<u64>) {
        (
            std::mem::take(&mut self.known_hits),
            self.known_settled.take(),
        )
    }

    /// Asks for the stage back once every chunk sent is fed to it. `None` when the worker is
    /// gone (with it the stage, if it held one); `Some(None)` when it held none.
    pub(super) fn reclaim(&mut self) -> Option<Option<Box<KnownStream>>> {
        self.jobs.as_ref()?.send(Task::GiveBack).ok()?;
        // Every feed waited for its scan, so the next answer is the stage.
        match self.receive()? {
            Msg::Stage(k) => Some(k),
            _ => None,
        }
    }
}

fn run(
    db: &hyperscan::BlockDatabase,
    scratch: &hyperscan::Scratch,
    line_local: &[bool],
    job: &Job,
) -> Result<Vec<(u32, u64)>, String> {
    let mut hits = Vec::new();
    let block_base = job.base + job.block_from as u64;
    let mut push = |r: usize, end: u64| hits.push((r as u32, end));
    db.scan(
        &job.bytes[job.block_from..],
        scratch,
        hit_filter(
            block_base,
            block_base,
            job.ends_upto,
            Some(line_local),
            &mut push,
        ),
    )
    .map_err(|e| format!("block scan failed: {e}"))?;
    if let Some((st, sc)) = &job.stream {
        // Stream offsets are absolute: the stream was opened at offset 0.
        let record = hit_filter(0, 0, u64::MAX, None, &mut push);
        st.scan(&job.bytes[job.stream_from..], sc, record)
            .map_err(|e| format!("stream scan failed: {e}"))?;
    }
    Ok(hits)
}

impl Drop for SplitWorker {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
