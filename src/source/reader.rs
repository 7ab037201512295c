//! Readers (stdin, pipes, FIFOs, files too large to map) through the engine's stream mode.
//!
//! The reader is pulled in reads of up to 1 MiB; a read returns what the pipe holds, so a line
//! written to a pipe is scanned as soon as it arrives and its findings are pushed the moment the
//! engine settles them. Memory stays flat whatever the input size, and a secret split across reads
//! is found once.

use std::io::{self, Read};

use crate::engine::{Engine, EngineError, Match, StreamScanner, View};
use crate::finding::{Finding, FindingOptions, Origin};

use super::{Content, OneUnit, ScanError, Unit};

pub const READ_SIZE: usize = 1 << 20;

#[derive(Debug)]
pub enum StreamError {
    Io(io::Error),
    Engine(EngineError),
}

impl From<EngineError> for StreamError {
    fn from(e: EngineError) -> Self {
        StreamError::Engine(e)
    }
}

/// One reader as a source: stdin, or a stream named on the command line.
pub struct ReaderSource;

impl ReaderSource {
    pub fn from_reader(origin: Origin, reader: Box<dyn Read + Send>, named: bool) -> OneUnit {
        OneUnit::new(Ok(Unit {
            origin,
            content: Content::Reader { reader, named },
        }))
    }

    /// Standard input. A closed descriptor 0 (`guard scan - <&-`) is an error, not an empty
    /// input. The Rust runtime reopens a closed stdin as `/dev/null` before `main`, so the two
    /// cannot be told apart: stdin on `/dev/null` is refused too — nothing would be scanned.
    pub fn stdin() -> OneUnit {
        if stdin_is_closed_or_null() {
            return OneUnit::new(Err(ScanError::Io {
                path: "<stdin>".into(),
                source: io::Error::other(
                    "standard input is closed (or /dev/null): there is nothing to scan",
                ),
            }));
        }
        ReaderSource::from_reader(Origin::Stdin, Box::new(io::stdin()), false)
    }
}

fn stdin_is_closed_or_null() -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    // SAFETY: fstat writes into a zeroed, properly sized stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(0, &mut st) } == -1 {
        return true;
    }
    let null = match std::fs::metadata("/dev/null") {
        Ok(m) => m,
        Err(_) => return false,
    };
    // The device itself, or the very file at `/dev/null` (some sandboxes put a regular file
    // there; the runtime reopens a closed stdin on whatever that path is).
    let same_device = (st.st_mode & libc::S_IFMT) == libc::S_IFCHR
        && null.file_type().is_char_device()
        && st.st_rdev == null.rdev();
    same_device || (st.st_dev == null.dev() && st.st_ino == null.ino())
}

/// Scans everything `reader` yields; `on_bytes` is told how many bytes were read (progress).
pub fn scan_stream(
    engine: &Engine,
    reader: &mut dyn Read,
    origin: &Origin,
    opts: &FindingOptions,
    on_bytes: &mut dyn FnMut(u64),
    emit: &mut dyn FnMut(Finding),
) -> Result<(), StreamError> {
    let mut scanner = StreamScanner::new(engine)?;
    let mut buf = vec![0u8; READ_SIZE];
    let mut sink = |m: &Match, v: &View<'_>| emit(Finding::from_match(engine, origin, m, v, opts));
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StreamError::Io(e)),
        };
        on_bytes(n as u64);
        scanner.feed(&buf[..n], &mut sink)?;
    }
    scanner.finish(&mut sink)?;
    Ok(())
}

/// Bytes read per round by [`scan_stream_parallel`].
pub const PARALLEL_CHUNK: usize = 8 << 20;
/// Hits are only taken this far before the bytes read so far: a hit's end assertion (`\b`) may look
/// one byte ahead, so the last bytes wait for the next round.
const LOOKAHEAD: u64 = 8;

/// Like [`scan_stream`], but the Hyperscan prefilter of each `round`-byte read (normally
/// [`PARALLEL_CHUNK`]) runs on `pieces` threads (rayon); the confirm stage stays sequential and
/// exact. One large file then uses every core while memory stays at one round plus the
/// hold-back — measured on the 1 GiB benchmark file, the single-threaded stream prefilter was
/// the bottleneck (see BENCHMARKS.md).
#[allow(clippy::too_many_arguments)]
pub fn scan_stream_parallel(
    engine: &Engine,
    reader: &mut dyn Read,
    origin: &Origin,
    opts: &FindingOptions,
    on_bytes: &mut dyn FnMut(u64),
    emit: &mut dyn FnMut(Finding),
    pieces: usize,
    round: usize,
) -> Result<(), StreamError> {
    use rayon::prelude::*;
    if !engine.has_block_prefilter() {
        return scan_stream(engine, reader, origin, opts, on_bytes, emit);
    }
    let context = engine.max_holdback() as u64;
    let mut scanner = StreamScanner::with_external_prefilter(engine)?;
    let mut sink = |m: &Match, v: &View<'_>| emit(Finding::from_match(engine, origin, m, v, opts));
    // `window` holds bytes from absolute offset `win_base`: left context, then bytes not yet fed.
    let round = round.max(1);
    let mut window: Vec<u8> = Vec::with_capacity(round + context as usize + 64);
    let mut win_base = 0u64;
    let mut fed = 0u64;
    loop {
        let before = window.len();
        let eof = fill(reader, &mut window, before + round).map_err(StreamError::Io)?;
        on_bytes((window.len() - before) as u64);
        let end = win_base + window.len() as u64;
        let target = if eof {
            end
        } else {
            end.saturating_sub(LOOKAHEAD)
        };
        if target > fed {
            let step = (target - fed).div_ceil(pieces.max(1) as u64).max(1);
            let ranges: Vec<(u64, u64)> = (fed..target)
                .step_by(step as usize)
                .map(|a| (a, (a + step).min(target)))
                .collect();
            let found = ranges
                .par_iter()
                .map_init(
                    || engine.scratch(),
                    |sc, &(a, b)| {
                        let sc = sc
                            .as_mut()
                            .map_err(|e| EngineError::Hyperscan(e.to_string()))?;
                        let lo = a.saturating_sub(context).max(win_base);
                        let hi = if eof { end } else { (b + LOOKAHEAD).min(end) };
                        let hay = &window[(lo - win_base) as usize..(hi - win_base) as usize];
                        engine.prefilter_windows(sc, hay, lo, a, b)
                    },
                )
                .collect::<Result<Vec<_>, EngineError>>()?;
            let chunk = &window[(fed - win_base) as usize..(target - win_base) as usize];
            scanner.feed_windows(chunk, found.into_iter().flatten(), &mut sink)?;
            fed = target;
        }
        if eof {
            break;
        }
        let keep_from = fed.saturating_sub(context).max(win_base);
        window.drain(..(keep_from - win_base) as usize);
        win_base = keep_from;
    }
    scanner.finish(&mut sink)?;
    Ok(())
}

/// Reads until `buf` holds `upto` bytes or the reader ends; returns true at end of input.
fn fill(reader: &mut dyn Read, buf: &mut Vec<u8>, upto: usize) -> io::Result<bool> {
    while buf.len() < upto {
        let old = buf.len();
        buf.resize(upto, 0);
        match reader.read(&mut buf[old..]) {
            Ok(0) => {
                buf.truncate(old);
                return Ok(true);
            }
            Ok(n) => buf.truncate(old + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(old),
            Err(e) => {
                buf.truncate(old);
                return Err(e);
            }
        }
    }
    Ok(false)
}
