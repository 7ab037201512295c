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
//! job, so what is settled never depends on timing. If the worker dies the feed fails: the
//! stream's state went with it (fail closed, as a failed stream scan does).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use super::known::{Candidate, KnownMatcher};
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
    /// The fingerprint matcher and the first anchor position to test with it (the positions
    /// before it are tested on the stream's thread).
    pub known: Option<(Arc<KnownMatcher>, u64)>,
    pub base: u64,
    pub stream: Option<HsStream>,
    pub stream_from: usize,
    pub block_from: usize,
    pub ends_upto: u64,
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
    jobs: Option<Sender<Job>>,
    replies: Receiver<Reply>,
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
        let (jobs, job_rx) = channel::<Job>();
        let (reply_tx, replies) = channel::<Reply>();
        let thread = std::thread::Builder::new()
            .name("guard-prefilter".into())
            .spawn(move || {
                for job in job_rx {
                    let hits = run(&db, &scratch, &line_local, &job);
                    let known = job.known.as_ref().map(|(m, from)| {
                        let mut found = Vec::new();
                        let next = m.anchors(&job.bytes, job.base, *from, &mut found);
                        (found, next)
                    });
                    let reply = Reply {
                        hits,
                        stream: job.stream,
                        known,
                        bytes: job.bytes,
                    };
                    if reply_tx.send(reply).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(SplitWorker {
            jobs: Some(jobs),
            replies,
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
            Some(j) => j.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// The reply to the job last sent, or `None` when the worker died before answering.
    pub(super) fn wait(&mut self) -> Option<Reply> {
        let started = std::time::Instant::now();
        let mut reply = self.replies.recv().ok()?;
        self.share = if started.elapsed() > WAITED {
            (self.share - 0.02).max(0.05)
        } else {
            (self.share + 0.01).min(0.95)
        };
        self.spare = std::mem::take(&mut reply.bytes);
        Some(reply)
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
