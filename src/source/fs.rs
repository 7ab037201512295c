//! Files and directories as a [`Source`].
//!
//! Defaults are what a secret scanner's users expect: hidden files and directories are scanned
//! (`.env`, `.aws/credentials`, `.npmrc` are where secrets live); `.git/` itself is skipped (history
//! is its own source); `.gitignore` (with `.git/info/exclude` and the global excludes file) is
//! honoured inside a git work tree only — outside one, an ignore file is no reason to skip, and
//! ripgrep's `.ignore` is never read. Every path an ignore rule or `--exclude` glob skips is
//! counted, so the summary can say so. Symlinks are not followed (no loops); FIFOs and devices
//! inside a tree are skipped (they block or never end), but one named on the command line is read
//! as a stream, capped.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

use super::{Content, ScanError, Source, Unit};
use crate::finding::Origin;

#[derive(Clone, Debug, Default)]
pub struct FsOptions {
    /// Do not honour `.gitignore` files.
    pub no_ignore: bool,
    /// Globs (gitignore syntax, relative to each root) of paths to skip.
    pub exclude: Vec<String>,
}

pub struct FsSource {
    roots: VecDeque<PathBuf>,
    opts: FsOptions,
    walk: Option<(PathBuf, ignore::Walk)>,
    queue: VecDeque<Result<Unit, ScanError>>,
    ignored: Arc<AtomicU64>,
}

impl FsSource {
    pub fn new(roots: Vec<PathBuf>, opts: FsOptions) -> FsSource {
        FsSource {
            roots: roots.into(),
            opts,
            walk: None,
            queue: VecDeque::new(),
            ignored: Arc::new(AtomicU64::new(0)),
        }
    }

    fn open_root(&mut self, root: PathBuf) -> Result<(), ScanError> {
        let shown = display(&root);
        let meta = match std::fs::metadata(&root) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ScanError::Missing { path: shown })
            }
            Err(source) => {
                return Err(ScanError::Io {
                    path: shown,
                    source,
                })
            }
        };
        if meta.is_file() {
            self.queue.push_back(Ok(Unit {
                origin: Origin::File { path: shown },
                content: Content::Path {
                    path: root,
                    len: Some(meta.len()),
                },
            }));
            return Ok(());
        }
        if !meta.is_dir() {
            // A FIFO or character device named explicitly: read it as a capped stream. Opening a
            // FIFO blocks until a writer appears, so the open happens on a worker, lazily.
            self.queue.push_back(Ok(Unit {
                origin: Origin::Stream {
                    path: shown.clone(),
                },
                content: Content::Reader {
                    reader: Box::new(LazyFile {
                        path: root,
                        file: None,
                    }),
                    named: true,
                },
            }));
            return Ok(());
        }
        let mut overrides = ignore::overrides::OverrideBuilder::new(&root);
        for g in &self.opts.exclude {
            overrides
                .add(&format!("!{g}"))
                .map_err(|e| ScanError::Walk {
                    path: shown.clone(),
                    message: format!("--exclude {g:?}: {e}"),
                })?;
        }
        let overrides = overrides.build().map_err(|e| ScanError::Walk {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let rules = if self.opts.no_ignore {
            None
        } else {
            GitRules::for_root(&root)
        };
        let rules = Mutex::new(rules);
        let ignored = self.ignored.clone();
        let walk_root = root.clone();
        let walk = ignore::WalkBuilder::new(&root)
            .standard_filters(false)
            .follow_links(false)
            .sort_by_file_name(|a, b| a.cmp(b))
            .filter_entry(move |e| {
                let is_dir = e.file_type().is_some_and(|t| t.is_dir());
                if e.depth() > 0 && e.file_name() == ".git" {
                    return false;
                }
                if e.depth() > 0 && overrides.matched(e.path(), is_dir).is_ignore() {
                    ignored.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                let mut rules = rules.lock().expect("no panics while holding the lock");
                let Some(rules) = rules.as_mut() else {
                    return true;
                };
                if e.depth() > 0 && rules.ignored(&walk_root, e.path(), is_dir) {
                    ignored.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                if is_dir {
                    rules.enter(&walk_root, e.path());
                }
                true
            })
            .build();
        self.walk = Some((root, walk));
        Ok(())
    }
}

impl Source for FsSource {
    fn next_unit(&mut self) -> Option<Result<Unit, ScanError>> {
        loop {
            if let Some(u) = self.queue.pop_front() {
                return Some(u);
            }
            if let Some((root, walk)) = &mut self.walk {
                match walk.next() {
                    Some(Ok(e)) => {
                        // Only regular files: FIFOs, sockets and devices inside a tree would block
                        // or never end; symlinks are not followed (no loops).
                        if e.file_type().is_some_and(|t| t.is_file()) {
                            let path = e.into_path();
                            return Some(Ok(Unit {
                                origin: Origin::File {
                                    path: display(&path),
                                },
                                content: Content::Path { path, len: None },
                            }));
                        }
                        continue;
                    }
                    Some(Err(err)) => {
                        return Some(Err(ScanError::Walk {
                            path: display(root),
                            message: err.to_string(),
                        }))
                    }
                    None => self.walk = None,
                }
                continue;
            }
            let root = self.roots.pop_front()?;
            if let Err(e) = self.open_root(root) {
                return Some(Err(e));
            }
        }
    }

    fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }
}

/// The `.gitignore` files in force at a point of the walk, deepest last. Matching is done on
/// absolute paths, so `./x` and `x` spellings of a root agree.
struct GitRules {
    /// `.git/info/exclude` and the global excludes file, rooted at the work tree.
    base: Vec<Gitignore>,
    /// (directory, its .gitignore) from the work-tree root down to the current directory.
    stack: Vec<(PathBuf, Gitignore)>,
    abs_root: PathBuf,
}

impl GitRules {
    /// Rules for a walk rooted at `root`, or `None` when `root` is not inside a git work tree.
    fn for_root(root: &Path) -> Option<GitRules> {
        let abs_root = std::fs::canonicalize(root).ok()?;
        let top = abs_root
            .ancestors()
            .find(|d| d.join(".git").exists())?
            .to_path_buf();
        let mut base = Vec::new();
        let mut exclude = GitignoreBuilder::new(&top);
        if exclude.add(top.join(".git/info/exclude")).is_none() {
            if let Ok(g) = exclude.build() {
                base.push(g);
            }
        }
        let (global, _) = Gitignore::global();
        if !global.is_empty() {
            base.push(global);
        }
        let mut rules = GitRules {
            base,
            stack: Vec::new(),
            abs_root: abs_root.clone(),
        };
        // The .gitignore files of the directories above the root, down to the root itself.
        let mut above: Vec<&Path> = abs_root
            .ancestors()
            .take_while(|d| d.starts_with(&top))
            .collect();
        above.reverse();
        for d in above {
            rules.push_dir(d);
        }
        Some(rules)
    }

    fn absolute(&self, walk_root: &Path, p: &Path) -> PathBuf {
        match p.strip_prefix(walk_root) {
            Ok(rest) if rest.as_os_str().is_empty() => self.abs_root.clone(),
            Ok(rest) => self.abs_root.join(rest),
            Err(_) => p.to_path_buf(),
        }
    }

    fn push_dir(&mut self, dir: &Path) {
        let file = dir.join(".gitignore");
        if file.is_file() {
            let (g, _) = Gitignore::new(&file);
            self.stack.push((dir.to_path_buf(), g));
        }
    }

    fn pop_to(&mut self, abs: &Path) {
        while self.stack.last().is_some_and(|(d, _)| !abs.starts_with(d)) {
            self.stack.pop();
        }
    }

    fn enter(&mut self, walk_root: &Path, dir: &Path) {
        let abs = self.absolute(walk_root, dir);
        if abs == self.abs_root {
            return;
        }
        self.pop_to(&abs);
        self.push_dir(&abs);
    }

    fn ignored(&mut self, walk_root: &Path, p: &Path, is_dir: bool) -> bool {
        let abs = self.absolute(walk_root, p);
        self.pop_to(&abs);
        for (_, g) in self.stack.iter().rev() {
            match g.matched(&abs, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        self.base
            .iter()
            .any(|g| matches!(g.matched(&abs, is_dir), Match::Ignore(_)))
    }
}

/// Opens its file on the first read (a FIFO's open blocks until a writer appears).
struct LazyFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl std::io::Read for LazyFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.file.is_none() {
            self.file = Some(std::fs::File::open(&self.path)?);
        }
        self.file.as_mut().expect("opened just above").read(buf)
    }
}

/// A path as reported: without a leading `./`.
pub fn display(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.strip_prefix("./")
        .map(str::to_string)
        .unwrap_or_else(|| s.into_owned())
}
