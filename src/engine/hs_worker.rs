//! A Hyperscan stream on its own thread: the prefilter of piece *n + 1* runs while the calling
//! thread confirms piece *n*. Hyperscan is three quarters of `guard redact`'s CPU, so on two
//! cores the pipeline runs at about the prefilter's own speed. Hits come back in order as
//! `(rule, end offset)`, exactly what the inline stream would have recorded.

use super::EngineError;
use std::sync::mpsc::{channel, Receiver, Sender};

enum Job {
    Scan(Vec<u8>),
    Close,
}

type Reply = Result<(Vec<(u32, u64)>, Vec<u8>), String>;

pub(super) struct HsWorker {
    jobs: Option<Sender<Job>>,
    replies: Receiver<Reply>,
    /// Buffers handed back, reused for the next pieces.
    spare: Vec<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HsWorker {
    /// Moves the stream to a new thread; gives it back if no thread can be started.
    pub(super) fn start(
        stream: hyperscan::Stream,
        scratch: hyperscan::Scratch,
    ) -> Result<HsWorker, (hyperscan::Stream, hyperscan::Scratch)> {
        let (jobs, job_rx) = channel::<Job>();
        let (reply_tx, replies) = channel::<Reply>();
        let cell = std::sync::Arc::new(std::sync::Mutex::new(Some((stream, scratch))));
        let inner = cell.clone();
        let spawned = std::thread::Builder::new()
            .name("guard-prefilter".into())
            .spawn(move || {
                let Some((st, sc)) = inner.lock().ok().and_then(|mut g| g.take()) else {
                    return;
                };
                let mut st = Some(st);
                for job in job_rx {
                    let mut hits = Vec::new();
                    let record = |id: u32, _from: u64, to: u64, _flags: u32| {
                        hits.push((id, to));
                        hyperscan::Matching::Continue
                    };
                    let reply = match job {
                        Job::Scan(bytes) => match &st {
                            Some(s) => s
                                .scan(&bytes, &sc, record)
                                .map(|()| (hits, bytes))
                                .map_err(|e| format!("stream scan failed: {e}")),
                            None => Err("the stream is closed".into()),
                        },
                        Job::Close => match st.take() {
                            Some(s) => s
                                .close(&sc, record)
                                .map(|()| (hits, Vec::new()))
                                .map_err(|e| format!("closing a stream failed: {e}")),
                            None => Err("the stream is closed".into()),
                        },
                    };
                    if reply_tx.send(reply).is_err() {
                        break;
                    }
                }
            });
        match spawned {
            Ok(t) => Ok(HsWorker {
                jobs: Some(jobs),
                replies,
                spare: Vec::new(),
                thread: Some(t),
            }),
            Err(_) => {
                let back = cell.lock().ok().and_then(|mut g| g.take());
                Err(back.expect("the thread never started, so the stream is still here"))
            }
        }
    }

    /// Queues `piece` for scanning (pieces are scanned in the order sent).
    pub(super) fn send(&mut self, piece: &[u8]) {
        let mut v = self.spare.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(piece);
        if let Some(j) = &self.jobs {
            // A dead worker shows up as an error in `recv`.
            let _ = j.send(Job::Scan(v));
        }
    }

    /// The hits of the oldest piece not yet collected.
    pub(super) fn recv(&mut self) -> Result<Vec<(u32, u64)>, EngineError> {
        match self.replies.recv() {
            Ok(Ok((hits, buf))) => {
                self.spare.push(buf);
                Ok(hits)
            }
            Ok(Err(e)) => Err(EngineError::Hyperscan(e)),
            Err(_) => Err(EngineError::Hyperscan("the prefilter thread ended".into())),
        }
    }

    /// Ends the stream: the hits that only its end decides.
    pub(super) fn close(&mut self) -> Result<Vec<(u32, u64)>, EngineError> {
        if let Some(j) = &self.jobs {
            let _ = j.send(Job::Close);
        }
        self.recv()
    }
}

impl Drop for HsWorker {
    fn drop(&mut self) {
        self.jobs = None; // ends the worker's loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
