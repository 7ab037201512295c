//! Sources: everything guard reads yields [`Unit`]s — bytes with an [`Origin`] — to the one
//! [`Engine`]. No source has a matching loop of its own.
//!
//! A unit's content is a path (read, mapped or streamed by size: the tiers below, shared by every
//! source), bytes already in memory (a git blob), or a reader (stdin, a FIFO, a command's output).
//! [`scan_unit`] is the one function that turns any unit into findings, pushing each to the caller
//! as soon as the engine settles it: a line on a pipe is reported when its newline arrives, not at
//! end of input. The size limit, binary detection and the stream cap apply to every source.
//!
//! Files and blobs scanned whole (the first two tiers, and in-memory units) also have their
//! base64, hex and URL-encoded runs decoded and scanned ([`scan_bytes_decoded`]); streamed inputs
//! do not (see [`crate::engine::decode`]).
//!
//! Tiers, measured on the benchmark inputs (BENCHMARKS.md): files up to 256 KiB are read whole,
//! up to 64 MiB memory-mapped, larger ones streamed in 8 MiB rounds whose prefilter runs on every
//! core — a 1 GiB file costs one round of memory, not 1 GiB of resident pages.

pub mod fs;
#[cfg(feature = "git")]
pub mod git;
pub mod reader;
pub mod staged;

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use crate::engine::{Engine, EngineError, Scratch};
use crate::finding::{Finding, FindingOptions, Origin};

pub use fs::{FsOptions, FsSource};
pub use reader::ReaderSource;

/// Files up to this size are read into memory; above it they are memory-mapped.
pub const READ_LIMIT: u64 = 256 * 1024;
/// Files above this size are streamed instead of mapped, to keep resident memory flat.
pub const MAP_LIMIT: u64 = 64 * 1024 * 1024;
/// Bytes inspected for a NUL to call an input binary (as git and ripgrep do).
pub const BINARY_PROBE: usize = 8 * 1024;
/// A stream named on the command line (a FIFO, a device) is cut after this many bytes unless
/// `--max-file-size` says otherwise: `/dev/zero`-like inputs never end.
pub const DEFAULT_STREAM_CAP: u64 = 1 << 30;

/// What a source hands out: bytes with their origin.
pub struct Unit {
    pub origin: Origin,
    pub content: Content,
}

pub enum Content {
    /// A regular file, read by size tier; `len` is its length when the source already knows it
    /// (a walk does not stat: the worker's `fstat` of the open file costs no path lookup).
    Path { path: PathBuf, len: Option<u64> },
    /// Bytes already in memory (a staged file).
    Bytes(Vec<u8>),
    /// Bytes produced on the worker that scans the unit (a git blob decoded there, so
    /// decompression runs on every core).
    Load(Box<dyn FnOnce() -> io::Result<Vec<u8>> + Send>),
    /// A stream read to its end (stdin, a FIFO, a command's output). `named` streams (FIFOs and
    /// devices on the command line) get the binary probe and the stream cap; stdin does not.
    Reader {
        reader: Box<dyn Read + Send>,
        named: bool,
    },
}

/// A producer of units. Errors name what could not be read; the rest is still scanned.
pub trait Source: Send {
    fn next_unit(&mut self) -> Option<Result<Unit, ScanError>>;
    /// Paths the source skipped on purpose (ignore rules, exclude globs), for the summary.
    fn ignored(&self) -> u64 {
        0
    }
}

/// A source of exactly one unit (stdin, a commit message), or of the error that prevented it.
pub struct OneUnit(Option<Result<Unit, ScanError>>);

impl OneUnit {
    pub fn new(unit: Result<Unit, ScanError>) -> OneUnit {
        OneUnit(Some(unit))
    }
}

impl Source for OneUnit {
    fn next_unit(&mut self) -> Option<Result<Unit, ScanError>> {
        self.0.take()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: no such file or directory")]
    Missing { path: String },
    #[error("{path}: {message}")]
    Walk { path: String, message: String },
    #[error("{path}: {source}")]
    Engine { path: String, source: EngineError },
}

impl ScanError {
    fn io(origin: &Origin, source: io::Error) -> ScanError {
        ScanError::Io {
            path: origin.to_string(),
            source,
        }
    }

    pub fn engine(origin: &Origin, source: EngineError) -> ScanError {
        ScanError::Engine {
            path: origin.to_string(),
            source,
        }
    }
}

/// Limits every source shares.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Skip files larger than this; cut streams after this many bytes.
    pub max_size: Option<u64>,
    /// Scan inputs that look binary (a NUL in the first 8 KiB).
    pub binary: bool,
}

/// What became of one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Scanned {
        bytes: u64,
    },
    /// Read up to the limit and cut there.
    Truncated {
        bytes: u64,
    },
    Binary,
    TooLarge,
}

/// Progress callbacks must be cheap: they run on worker threads.
pub trait Progress: Sync {
    fn bytes(&self, _n: u64) {}
}

impl Progress for () {}

pub fn looks_binary(head: &[u8]) -> bool {
    memchr::memchr(0, &head[..head.len().min(BINARY_PROBE)]).is_some()
}

/// Scans one unit, pushing each finding to `emit` as soon as the engine settles it.
pub fn scan_unit(
    engine: &Engine,
    scratch: &mut Scratch,
    unit: Unit,
    limits: &Limits,
    opts: &FindingOptions,
    progress: &dyn Progress,
    emit: &mut dyn FnMut(Finding),
) -> Result<Outcome, ScanError> {
    let Unit { origin, content } = unit;
    let content = match content {
        Content::Load(load) => Content::Bytes(load().map_err(|e| ScanError::io(&origin, e))?),
        other => other,
    };
    match content {
        Content::Load(_) => unreachable!("loaded just above"),
        Content::Bytes(data) => {
            if limits.max_size.is_some_and(|m| data.len() as u64 > m) {
                return Ok(Outcome::TooLarge);
            }
            if !limits.binary && looks_binary(&data) {
                return Ok(Outcome::Binary);
            }
            progress.bytes(data.len() as u64);
            scan_bytes_decoded(engine, scratch, &origin, &data, opts, emit)
                .map_err(|e| ScanError::engine(&origin, e))?;
            Ok(Outcome::Scanned {
                bytes: data.len() as u64,
            })
        }
        Content::Path { path, len } => scan_file(
            engine, scratch, &origin, &path, len, limits, opts, progress, emit,
        ),
        Content::Reader { mut reader, named } => {
            let mut head = Vec::new();
            if named && !limits.binary {
                head = vec![0u8; BINARY_PROBE];
                let n =
                    read_up_to(&mut reader, &mut head).map_err(|e| ScanError::io(&origin, e))?;
                head.truncate(n);
                if looks_binary(&head) {
                    return Ok(Outcome::Binary);
                }
            }
            let cap = limits.max_size.or(named.then_some(DEFAULT_STREAM_CAP));
            let mut r = io::Cursor::new(head).chain(reader);
            scan_capped(engine, &origin, &mut r, cap, false, opts, progress, emit)
        }
    }
}

/// Streams `reader` through the engine up to `cap` bytes (`parallel`: the large-file path).
#[allow(clippy::too_many_arguments)]
fn scan_capped(
    engine: &Engine,
    origin: &Origin,
    reader: &mut dyn Read,
    cap: Option<u64>,
    parallel: bool,
    opts: &FindingOptions,
    progress: &dyn Progress,
    emit: &mut dyn FnMut(Finding),
) -> Result<Outcome, ScanError> {
    let mut limited = Capped::new(reader, cap);
    let mut total = 0;
    let mut on_bytes = |n| {
        total += n;
        progress.bytes(n)
    };
    let done = if parallel {
        reader::scan_stream_parallel(
            engine,
            &mut limited,
            origin,
            opts,
            &mut on_bytes,
            emit,
            rayon::current_num_threads(),
            reader::PARALLEL_CHUNK,
        )
    } else {
        reader::scan_stream(engine, &mut limited, origin, opts, &mut on_bytes, emit)
    };
    done.map_err(|e| match e {
        reader::StreamError::Io(e) => ScanError::io(origin, e),
        reader::StreamError::Engine(e) => ScanError::engine(origin, e),
    })?;
    Ok(if limited.cut() {
        Outcome::Truncated { bytes: total }
    } else {
        Outcome::Scanned { bytes: total }
    })
}

/// Scans a complete in-memory input: exactly what stream mode finds in the same bytes.
pub fn scan_bytes(
    engine: &Engine,
    scratch: &mut Scratch,
    origin: &Origin,
    hay: &[u8],
    opts: &FindingOptions,
    emit: &mut dyn FnMut(Finding),
) -> Result<(), EngineError> {
    scan_block(engine, scratch, origin, hay, opts, false, emit)
}

/// Scans a complete in-memory input the way `guard scan` scans a file or a blob: its own
/// matches, plus the matches inside its encoded runs ([`crate::engine::decode`]), in order of
/// position (a decoded finding sits at its run's start).
pub fn scan_bytes_decoded(
    engine: &Engine,
    scratch: &mut Scratch,
    origin: &Origin,
    hay: &[u8],
    opts: &FindingOptions,
    emit: &mut dyn FnMut(Finding),
) -> Result<(), EngineError> {
    scan_block(engine, scratch, origin, hay, opts, opts.decode, emit)
}

fn scan_block(
    engine: &Engine,
    scratch: &mut Scratch,
    origin: &Origin,
    hay: &[u8],
    opts: &FindingOptions,
    decode: bool,
    emit: &mut dyn FnMut(Finding),
) -> Result<(), EngineError> {
    let matches = engine.scan_block(scratch, hay)?;
    let decoded = if decode {
        engine.scan_encoded(scratch, hay, &matches)?
    } else {
        Vec::new()
    };
    let mut cursor = crate::engine::LineCursor::new();
    let mut d = decoded.iter().peekable();
    for m in &matches {
        while let Some(x) = d.next_if(|x| x.run.start < m.start) {
            cursor.advance(hay, 0, x.run.start);
            let view = crate::engine::View {
                hay,
                base: 0,
                cursor: &cursor,
            };
            emit(Finding::from_decoded(engine, origin, x, &view, opts));
        }
        cursor.advance(hay, 0, m.start);
        let view = crate::engine::View {
            hay,
            base: 0,
            cursor: &cursor,
        };
        emit(Finding::from_match(engine, origin, m, &view, opts));
    }
    for x in d {
        cursor.advance(hay, 0, x.run.start);
        let view = crate::engine::View {
            hay,
            base: 0,
            cursor: &cursor,
        };
        emit(Finding::from_decoded(engine, origin, x, &view, opts));
    }
    if let Some(known) = &opts.known {
        let mut cursor = crate::engine::LineCursor::new();
        for hit in known.find_all(hay) {
            cursor.advance(hay, 0, hit.start);
            let view = crate::engine::View {
                hay,
                base: 0,
                cursor: &cursor,
            };
            emit(Finding::from_known(origin, &hit, known, &view, opts));
        }
    }
    Ok(())
}

thread_local! {
    /// Per worker thread: the buffer files of up to [`READ_LIMIT`] bytes are read into, kept
    /// from one file to the next (an allocation per file cost `malloc` time and page faults on
    /// a tree of small files). A file that grew past twice the limit does not keep its size.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[allow(clippy::too_many_arguments)]
fn scan_file(
    engine: &Engine,
    scratch: &mut Scratch,
    origin: &Origin,
    path: &std::path::Path,
    len: Option<u64>,
    limits: &Limits,
    opts: &FindingOptions,
    progress: &dyn Progress,
    emit: &mut dyn FnMut(Finding),
) -> Result<Outcome, ScanError> {
    let io_err = |e| ScanError::io(origin, e);
    let too_large = |n: u64| limits.max_size.is_some_and(|m| n > m);
    // A length known from the listing is checked before the open.
    if len.is_some_and(too_large) {
        return Ok(Outcome::TooLarge);
    }
    let mut file = File::open(path).map_err(io_err)?;
    let len = match len {
        Some(len) => len,
        None => file.metadata().map_err(io_err)?.len(),
    };
    if too_large(len) {
        return Ok(Outcome::TooLarge);
    }
    // Scans a whole file in memory: the binary probe, then the engine.
    let mut scan_whole = |hay: &[u8]| {
        if !limits.binary && looks_binary(hay) {
            return Ok(Outcome::Binary);
        }
        progress.bytes(hay.len() as u64);
        scan_bytes_decoded(engine, scratch, origin, hay, opts, emit)
            .map_err(|e| ScanError::engine(origin, e))?;
        Ok(Outcome::Scanned {
            bytes: hay.len() as u64,
        })
    };
    if len <= READ_LIMIT {
        return READ_BUF.with_borrow_mut(|d| {
            d.clear();
            d.reserve(len as usize + 1);
            // Read to the end through a plain `Read` (`take` with no limit): `File::read_to_end`
            // sizes its buffer with an `fstat` and an `lseek` of its own, two system calls per
            // file that the length known here makes useless. One byte of room past it lets the
            // second read see the end; a file that grew is still read whole.
            Read::by_ref(&mut file)
                .take(u64::MAX)
                .read_to_end(d)
                .map_err(io_err)?;
            // A file that grew past the limit since it was listed is skipped like any other.
            let out = if too_large(d.len() as u64) {
                Ok(Outcome::TooLarge)
            } else {
                scan_whole(d)
            };
            if d.capacity() > 2 * READ_LIMIT as usize {
                *d = Vec::new();
            }
            out
        });
    }
    if len <= MAP_LIMIT {
        // SAFETY: the map is read-only; if another process truncates the file while we scan,
        // the kernel delivers SIGBUS — the same risk ripgrep accepts for mapped scanning.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        return scan_whole(&map);
    }
    let mut head = vec![0u8; BINARY_PROBE];
    let n = read_up_to(&mut file, &mut head).map_err(io_err)?;
    head.truncate(n);
    if !limits.binary && looks_binary(&head) {
        return Ok(Outcome::Binary);
    }
    let mut r = io::Cursor::new(head).chain(file);
    scan_capped(
        engine,
        origin,
        &mut r,
        limits.max_size,
        true,
        opts,
        progress,
        emit,
    )
}

pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A reader that stops after `cap` bytes and remembers whether there was more.
struct Capped<'a> {
    inner: &'a mut dyn Read,
    left: Option<u64>,
    cut: bool,
}

impl<'a> Capped<'a> {
    fn new(inner: &'a mut dyn Read, cap: Option<u64>) -> Capped<'a> {
        Capped {
            inner,
            left: cap,
            cut: false,
        }
    }

    fn cut(&self) -> bool {
        self.cut
    }
}

impl Read for Capped<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.left {
            None => self.inner.read(buf),
            Some(0) => {
                if !self.cut {
                    // Is there more? One byte tells.
                    let mut probe = [0u8; 1];
                    self.cut = self.inner.read(&mut probe)? > 0;
                }
                Ok(0)
            }
            Some(left) => {
                let want = buf.len().min(left.min(usize::MAX as u64) as usize);
                let n = self.inner.read(&mut buf[..want])?;
                self.left = Some(left - n as u64);
                Ok(n)
            }
        }
    }
}
