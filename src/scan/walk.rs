//! Files and directories: `ignore` for discovery (.gitignore, hidden files), rayon for the work.
//!
//! Discovery is sequential (it is I/O-light and ordered); scanning is spread over all cores with
//! one engine [`Scratch`](crate::engine::Scratch) per rayon worker. Small files are read whole,
//! mid-size ones mapped, large ones streamed (see the module doc of [`super`]).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use regex_automata::meta;

use super::{scan_bytes, stream::scan_reader, FindingOptions, ScanError};
use crate::engine::Engine;
use crate::finding::Finding;

/// Files up to this size are read into memory; above it they are memory-mapped.
const READ_LIMIT: u64 = 256 * 1024;
/// Files above this size are streamed instead of mapped, to keep resident memory flat.
const MAP_LIMIT: u64 = 64 * 1024 * 1024;
/// Bytes inspected for a NUL to call a file binary (as git and ripgrep do).
const BINARY_PROBE: usize = 8 * 1024;

#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    pub findings: FindingOptions,
    /// Skip files larger than this many bytes.
    pub max_file_size: Option<u64>,
    /// Scan files that look binary (contain NUL in the first 8 KiB).
    pub binary: bool,
    /// Descend into hidden files and directories.
    pub hidden: bool,
    /// Ignore .gitignore / .ignore files.
    pub no_ignore: bool,
    /// Findings in paths matching any of these are dropped (from `guard.toml`).
    pub path_allow: Vec<meta::Regex>,
    pub threads: Option<usize>,
}

#[derive(Debug, Default)]
pub struct ScanSummary {
    pub findings: Vec<Finding>,
    pub errors: Vec<ScanError>,
    pub files: u64,
    pub bytes: u64,
    pub skipped_binary: u64,
    pub skipped_large: u64,
}

/// Progress callbacks must be cheap: they run on worker threads.
pub trait Progress: Sync {
    fn bytes(&self, _n: u64) {}
    fn file(&self) {}
}

impl Progress for () {}

enum Item {
    File(PathBuf, u64),
    Stream(PathBuf),
}

/// Scans every path (file, directory, FIFO); errors are collected, the rest still scanned.
pub fn scan_paths(
    engine: &Engine,
    paths: &[PathBuf],
    opts: &ScanOptions,
    progress: &dyn Progress,
) -> ScanSummary {
    let mut summary = ScanSummary::default();
    let mut items = Vec::new();
    for p in paths {
        discover(p, opts, &mut items, &mut summary);
    }
    let findings = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let (files, bytes, bin, large) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    let work = || {
        items.par_iter().for_each_init(
            || engine.scratch(),
            |scratch, item| {
                let (path, res) = match item {
                    Item::File(path, len) => {
                        if opts.max_file_size.is_some_and(|m| *len > m) {
                            large.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        (path, scan_file(engine, scratch, path, *len, opts, progress))
                    }
                    Item::Stream(path) => (path, scan_stream_path(engine, path, opts, progress)),
                };
                match res {
                    Ok(FileOutcome::Scanned(f, n)) => {
                        files.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(n, Ordering::Relaxed);
                        progress.file();
                        let f: Vec<Finding> = f
                            .into_iter()
                            .filter(|f| {
                                !opts
                                    .path_allow
                                    .iter()
                                    .any(|r| r.is_match(f.location.path.as_bytes()))
                            })
                            .collect();
                        if !f.is_empty() {
                            findings
                                .lock()
                                .expect("no panics while holding the lock")
                                .extend(f);
                        }
                    }
                    Ok(FileOutcome::Binary) => {
                        bin.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(source) => errors
                        .lock()
                        .expect("no panics while holding the lock")
                        .push(ScanError::Io {
                            path: path.clone(),
                            source,
                        }),
                }
            },
        )
    };
    match opts
        .threads
        .and_then(|n| rayon::ThreadPoolBuilder::new().num_threads(n).build().ok())
    {
        Some(pool) => pool.install(work),
        None => work(),
    }
    summary.findings = findings.into_inner().expect("lock not poisoned");
    summary.findings.sort_by(|a, b| {
        a.location
            .cmp(&b.location)
            .then_with(|| a.rule.cmp(&b.rule))
    });
    summary
        .errors
        .extend(errors.into_inner().expect("lock not poisoned"));
    summary.files = files.into_inner();
    summary.bytes = bytes.into_inner();
    summary.skipped_binary = bin.into_inner();
    summary.skipped_large += large.into_inner();
    summary
}

fn discover(root: &Path, opts: &ScanOptions, items: &mut Vec<Item>, summary: &mut ScanSummary) {
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            summary.errors.push(ScanError::Missing {
                path: root.to_path_buf(),
            });
            return;
        }
        Err(source) => {
            summary.errors.push(ScanError::Io {
                path: root.to_path_buf(),
                source,
            });
            return;
        }
    };
    if meta.is_file() {
        items.push(Item::File(root.to_path_buf(), meta.len()));
        return;
    }
    if !meta.is_dir() {
        // A FIFO or character device named explicitly: read it as a stream.
        items.push(Item::Stream(root.to_path_buf()));
        return;
    }
    let walker = ignore::WalkBuilder::new(root)
        .hidden(!opts.hidden)
        .ignore(!opts.no_ignore)
        .git_ignore(!opts.no_ignore)
        .git_global(!opts.no_ignore)
        .git_exclude(!opts.no_ignore)
        .parents(!opts.no_ignore)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walker {
        match entry {
            Ok(e) => {
                // Only regular files: FIFOs, sockets and devices inside a tree would block or
                // never end; symlinks are not followed (no loops).
                if e.file_type().is_some_and(|t| t.is_file()) {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    items.push(Item::File(e.into_path(), len));
                }
            }
            Err(err) => summary.errors.push(ScanError::Walk {
                path: root.to_path_buf(),
                message: err.to_string(),
            }),
        }
    }
}

enum FileOutcome {
    Scanned(Vec<Finding>, u64),
    Binary,
}

fn display(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.strip_prefix("./")
        .map(str::to_string)
        .unwrap_or_else(|| s.into_owned())
}

fn looks_binary(head: &[u8]) -> bool {
    memchr::memchr(0, &head[..head.len().min(BINARY_PROBE)]).is_some()
}

fn scan_file(
    engine: &Engine,
    scratch: &mut crate::engine::Scratch,
    path: &Path,
    len: u64,
    opts: &ScanOptions,
    progress: &dyn Progress,
) -> std::io::Result<FileOutcome> {
    let name = display(path);
    let mut file = File::open(path)?;
    if len <= READ_LIMIT {
        let mut data = Vec::with_capacity(len as usize);
        file.read_to_end(&mut data)?;
        if !opts.binary && looks_binary(&data) {
            return Ok(FileOutcome::Binary);
        }
        progress.bytes(data.len() as u64);
        let f = scan_bytes(engine, scratch, &name, &data, &opts.findings);
        return Ok(FileOutcome::Scanned(f, data.len() as u64));
    }
    if len <= MAP_LIMIT {
        // SAFETY: the map is read-only; if another process truncates the file while we scan,
        // the kernel delivers SIGBUS — the same risk ripgrep accepts for mapped scanning.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        if !opts.binary && looks_binary(&map) {
            return Ok(FileOutcome::Binary);
        }
        progress.bytes(map.len() as u64);
        let f = scan_bytes(engine, scratch, &name, &map, &opts.findings);
        return Ok(FileOutcome::Scanned(f, map.len() as u64));
    }
    let mut head = vec![0u8; BINARY_PROBE];
    let n = read_up_to(&mut file, &mut head)?;
    head.truncate(n);
    if !opts.binary && looks_binary(&head) {
        return Ok(FileOutcome::Binary);
    }
    let mut total = 0;
    let mut reader = std::io::Cursor::new(head).chain(file);
    let f = scan_reader(engine, &mut reader, &name, &opts.findings, &mut |n| {
        total += n;
        progress.bytes(n)
    })?;
    Ok(FileOutcome::Scanned(f, total))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn scan_stream_path(
    engine: &Engine,
    path: &Path,
    opts: &ScanOptions,
    progress: &dyn Progress,
) -> std::io::Result<FileOutcome> {
    let mut file = File::open(path)?;
    let mut total = 0;
    let f = scan_reader(
        engine,
        &mut file,
        &display(path),
        &opts.findings,
        &mut |n| {
            total += n;
            progress.bytes(n)
        },
    )?;
    Ok(FileOutcome::Scanned(f, total))
}
