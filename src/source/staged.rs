//! Git changes as a source: what `git commit` is about to record (the index against `HEAD`) and
//! what `git push` is about to send (the commits in `remote..local`), for `guard hook`.
//!
//! A change is a blob plus the line ranges it *adds*. The source yields the **whole** blob (so
//! multi-line rules and the `guard:allow` marker see their context, and line numbers are those of
//! the staged file), and [`AddedOnly`] — the scope of the pipeline's filters — drops findings
//! that touch no added line. The engine is not told about diffs.
//!
//! Git is driven as two processes whatever the size of the change: one `git diff --cached` (or one
//! `git log --stdin` for a push) with `-U0` hunks, `--full-index` blob ids and
//! `core.quotePath=false` (paths are raw bytes, so non-UTF-8 names survive), and one
//! `git cat-file --batch` that streams the blobs. A process start costs ~2 ms; a per-file diff
//! would cost that per file. Every option a user's config could change in the output (prefixes,
//! colour, external diff, textconv, relative paths, renames) is pinned on the command line.
//!
//! Fail closed: a git command that fails, or a blob that cannot be read, is an error (exit 2 in the
//! CLI), never an empty result. A file git calls binary is still read and probed by guard's own
//! binary check: a text file marked `-diff` in `.gitattributes` is scanned whole.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::finding::{Commit, Finding, Origin};

use crate::source::{looks_binary, ScanError, Source, Unit};

use super::Content;

/// Blob ids of zeros: "no object" in git's diff and pre-push protocols.
fn is_null_oid(oid: &str) -> bool {
    !oid.is_empty() && oid.bytes().all(|b| b == b'0')
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0}")]
    Spawn(io::Error),
    #[error("`git {args}` failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("git output: {0}")]
    Parse(String),
}

/// Which lines of a blob a change adds (1-based, inclusive ranges, sorted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    Lines(Vec<(u64, u64)>),
    /// Every line: git showed no hunks (it judged the file binary) but guard reads it as text.
    All,
}

impl Added {
    /// Whether a finding spanning `first..=last` touches an added line.
    pub fn touches(&self, first: u64, last: u64) -> bool {
        match self {
            Added::All => true,
            Added::Lines(r) => r.iter().any(|&(a, b)| a <= last && first <= b),
        }
    }
}

/// One file of a change: where it is, its new blob, and what it adds.
#[derive(Clone, Debug)]
pub struct Change {
    pub path: Vec<u8>,
    pub blob: String,
    pub commit: Option<Commit>,
    pub added: Added,
}

impl Change {
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    /// The origin findings in this change carry.
    pub fn origin(&self) -> Origin {
        match &self.commit {
            None => Origin::Staged {
                path: self.path_lossy(),
            },
            Some(c) => Origin::GitBlob {
                blob: self.blob.clone(),
                path: self.path_lossy(),
                commit: Some(c.clone()),
                // Pre-push names the commit that adds the blob; it does not count commits.
                commits: 1,
            },
        }
    }
}

/// A parsed diff: the changes to scan and what was left out on purpose.
#[derive(Debug, Default)]
pub struct Changes {
    pub changes: Vec<Change>,
    /// Files deleted (nothing to scan).
    pub deleted: u64,
    /// Submodule entries (a commit id, not content; the submodule's own hooks cover it).
    pub submodules: Vec<String>,
}

/// Runs git commands in one repository (or the current directory: where git runs hooks).
#[derive(Clone, Debug, Default)]
pub struct Git {
    pub dir: Option<PathBuf>,
}

impl Git {
    pub fn new(dir: Option<&Path>) -> Git {
        Git {
            dir: dir.map(Path::to_path_buf),
        }
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new("git");
        if let Some(d) = &self.dir {
            c.arg("-C").arg(d);
        }
        // Raw path bytes, no pager, no user-configured diff programs.
        c.args(["-c", "core.quotePath=false", "--no-pager"]);
        c
    }

    /// Runs `git args…` with `input` on stdin; stdout if it exits 0, else an error with stderr.
    pub fn output(&self, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, GitError> {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(GitError::Spawn)?;
        let writer = input.map(|data| {
            let mut stdin = child.stdin.take().expect("stdin was piped");
            let data = data.to_vec();
            std::thread::spawn(move || stdin.write_all(&data))
        });
        let out = child.wait_with_output().map_err(GitError::Spawn)?;
        if let Some(w) = writer {
            w.join()
                .map_err(|_| GitError::Parse("stdin writer panicked".into()))?
                .map_err(GitError::Spawn)?;
        }
        if !out.status.success() {
            return Err(GitError::Failed {
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// Whether `rev` names an object present in this repository.
    pub fn has_object(&self, rev: &str) -> bool {
        self.command()
            .args(["cat-file", "-e", &format!("{rev}^{{commit}}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// Diff options that make the output parseable whatever the user's configuration says.
const DIFF_ARGS: &[&str] = &[
    "-U0",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "--full-index",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "-M",
];

/// What `git commit` would record: the index against `HEAD` (against the empty tree when there
/// is no `HEAD` yet — `git diff --cached` does that itself).
pub fn staged(git: &Git) -> Result<Changes, GitError> {
    let mut args = vec!["diff", "--cached"];
    args.extend_from_slice(DIFF_ARGS);
    let out = git.output(&args, None)?;
    parse_patch(&out)
}

/// One line of git's pre-push protocol: `<local ref> <local sha> <remote ref> <remote sha>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRef {
    pub local_ref: String,
    pub local: String,
    pub remote_ref: String,
    pub remote: String,
}

pub fn parse_push_lines(input: &str) -> Result<Vec<PushRef>, GitError> {
    input
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                [lr, ls, rr, rs] => Ok(PushRef {
                    local_ref: lr.into(),
                    local: ls.into(),
                    remote_ref: rr.into(),
                    remote: rs.into(),
                }),
                _ => Err(GitError::Parse(format!(
                    "pre-push input line is not `<local ref> <local sha> <remote ref> <remote sha>`: {l:?}"
                ))),
            }
        })
        .collect()
}

/// The commits a push sends, oldest first: `remote..local` per ref; for a new branch (or a
/// remote tip this clone has never seen) every commit not reachable from a remote-tracking ref.
/// Deletions send nothing.
pub fn pushed_commits(git: &Git, refs: &[PushRef]) -> Result<Vec<String>, GitError> {
    let mut seen = std::collections::HashSet::new();
    let mut commits = Vec::new();
    for r in refs {
        if is_null_oid(&r.local) {
            continue;
        }
        let out = if !is_null_oid(&r.remote) && git.has_object(&r.remote) {
            git.output(
                &[
                    "rev-list",
                    "--reverse",
                    &format!("{}..{}", r.remote, r.local),
                ],
                None,
            )?
        } else {
            git.output(
                &["rev-list", "--reverse", &r.local, "--not", "--remotes"],
                None,
            )?
        };
        for c in String::from_utf8_lossy(&out).lines() {
            if seen.insert(c.to_string()) {
                commits.push(c.to_string());
            }
        }
    }
    Ok(commits)
}

/// Marks a commit header in `git log` output (never the first byte of a diff line).
const COMMIT_MARK: u8 = 0x01;

/// The lines each of `commits` adds: one `git log` over all of them. Merge commits are shown as
/// dense combined diffs (`--cc`): only lines that differ from every parent (an evil merge) count
/// as added — the rest came from commits that are scanned on their own.
pub fn commit_changes(git: &Git, commits: &[String]) -> Result<Changes, GitError> {
    if commits.is_empty() {
        return Ok(Changes::default());
    }
    let mut args = vec![
        "log",
        "--no-walk=unsorted",
        "--stdin",
        "--no-show-signature",
        "--format=%x01%H%x00%an <%ae>%x00%aI%x00%s",
        "-p",
        "--cc",
    ];
    args.extend_from_slice(DIFF_ARGS);
    let mut input = commits.join("\n");
    input.push('\n');
    let out = git.output(&args, Some(input.as_bytes()))?;
    parse_patch(&out)
}

/// A `diff` section being parsed.
#[derive(Default)]
struct Section {
    header_path: Option<Vec<u8>>,
    plus_path: Option<Vec<u8>>,
    deleted: bool,
    blob: Option<String>,
    mode: Option<String>,
    binary: bool,
    ranges: Vec<(u64, u64)>,
}

/// Parses `git diff`/`git log -p` output (`-U0`, `--full-index`, optionally `--cc` and commit
/// headers starting with [`COMMIT_MARK`]) into changes.
pub fn parse_patch(out: &[u8]) -> Result<Changes, GitError> {
    let mut result = Changes::default();
    let mut commit: Option<Commit> = None;
    let mut section: Option<Section> = None;
    // Inside a combined hunk: (parents, next new-side line number).
    let mut combined: Option<(usize, u64)> = None;
    // Body lines left in a two-way hunk (a body line can look like `+++ b/x`).
    let mut body_left = 0u64;
    let finish = |s: Option<Section>, commit: &Option<Commit>, result: &mut Changes| {
        let Some(s) = s else { return };
        if s.deleted {
            result.deleted += 1;
            return;
        }
        let Some(blob) = s.blob.filter(|b| !is_null_oid(b)) else {
            return; // a pure rename or mode change: no new content
        };
        let Some(path) = s.plus_path.or(s.header_path) else {
            return;
        };
        if s.mode.as_deref() == Some("160000") {
            result
                .submodules
                .push(String::from_utf8_lossy(&path).into_owned());
            return;
        }
        let added = if s.binary {
            Added::All
        } else if s.ranges.is_empty() {
            return; // nothing added (an empty new file, only removals)
        } else {
            Added::Lines(s.ranges)
        };
        result.changes.push(Change {
            path,
            blob,
            commit: commit.clone(),
            added,
        });
    };
    for line in out.split(|&b| b == b'\n') {
        if body_left > 0 && matches!(line.first(), Some(b'+' | b'-' | b' ' | b'\\')) {
            if line[0] != b'\\' {
                body_left -= 1;
            }
            continue;
        }
        body_left = 0;
        if let Some((parents, next)) = combined.as_mut() {
            let p = *parents;
            if line.len() >= p && line[..p].iter().all(|b| b" +-".contains(b)) {
                let cols = &line[..p];
                if !cols.contains(&b'-') {
                    if cols.iter().all(|&b| b == b'+') {
                        if let Some(s) = section.as_mut() {
                            push_range(&mut s.ranges, *next, *next);
                        }
                    }
                    *next += 1;
                }
                continue;
            }
            if line.first() == Some(&b'\\') {
                continue;
            }
            combined = None;
        }
        if line.first() == Some(&COMMIT_MARK) {
            finish(section.take(), &commit, &mut result);
            commit = Some(parse_commit_header(&line[1..])?);
        } else if let Some(rest) = line.strip_prefix(b"diff --git ") {
            finish(section.take(), &commit, &mut result);
            section = Some(Section {
                header_path: symmetric_path(rest),
                ..Section::default()
            });
        } else if let Some(rest) = line
            .strip_prefix(b"diff --cc ")
            .or_else(|| line.strip_prefix(b"diff --combined "))
        {
            finish(section.take(), &commit, &mut result);
            section = Some(Section {
                header_path: Some(rest.to_vec()),
                ..Section::default()
            });
        } else if let Some(s) = section.as_mut() {
            if let Some(rest) = line.strip_prefix(b"index ") {
                let text = String::from_utf8_lossy(rest);
                let mut parts = text.split(' ');
                let ids = parts.next().unwrap_or_default();
                s.blob = ids.rsplit_once("..").map(|(_, new)| new.to_string());
                if let Some(mode) = parts.next() {
                    s.mode = Some(mode.to_string());
                }
            } else if let Some(m) = line
                .strip_prefix(b"new file mode ")
                .or_else(|| line.strip_prefix(b"new mode "))
            {
                s.mode = Some(String::from_utf8_lossy(m).into_owned());
            } else if line.starts_with(b"deleted file mode ") {
                s.deleted = true;
            } else if let Some(p) = line.strip_prefix(b"+++ ") {
                if p != b"/dev/null" {
                    let p = unquote(trim_tab(p));
                    s.plus_path = Some(p.strip_prefix(b"b/").unwrap_or(&p).to_vec());
                }
            } else if line.starts_with(b"Binary files ") {
                s.binary = true;
            } else if line.starts_with(b"@@") {
                let ats = line.iter().take_while(|&&b| b == b'@').count();
                let (old, start, count) = hunk_counts(line, ats)?;
                if ats > 2 {
                    combined = Some((ats - 1, start));
                } else {
                    body_left = old + count;
                    if count > 0 {
                        push_range(&mut s.ranges, start, start + count - 1);
                    }
                }
            }
        }
    }
    finish(section.take(), &commit, &mut result);
    Ok(result)
}

fn push_range(ranges: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    match ranges.last_mut() {
        Some(last) if last.1 + 1 >= a => last.1 = last.1.max(b),
        _ => ranges.push((a, b)),
    }
}

/// Of a hunk header with `ats` leading `@`s: the old line count (of the first parent) and the
/// new side's `start, count`.
fn hunk_counts(line: &[u8], ats: usize) -> Result<(u64, u64, u64), GitError> {
    let text = String::from_utf8_lossy(line);
    let bad = || GitError::Parse(format!("hunk header {text:?}"));
    let inner = text[ats..].split("@@").next().ok_or_else(bad)?;
    let side = |sign: char| -> Result<(u64, u64), GitError> {
        let t = inner
            .split_whitespace()
            .find_map(|t| t.strip_prefix(sign))
            .ok_or_else(bad)?;
        let (start, count) = t.split_once(',').unwrap_or((t, "1"));
        Ok((
            start.parse().map_err(|_| bad())?,
            count.parse().map_err(|_| bad())?,
        ))
    };
    let (_, old) = side('-')?;
    let (start, count) = side('+')?;
    Ok((old, start, count))
}

fn parse_commit_header(h: &[u8]) -> Result<Commit, GitError> {
    let mut f = h.split(|&b| b == 0).map(|x| String::from_utf8_lossy(x));
    let mut next = || f.next().map(|s| s.into_owned());
    let id = next().ok_or_else(|| GitError::Parse("commit header".into()))?;
    Ok(Commit {
        id,
        author: next().unwrap_or_default(),
        date: next().unwrap_or_default(),
        subject: next().unwrap_or_default(),
    })
}

/// The path of `a/P b/P` (a section header without a rename), for sections with no `+++` line.
fn symmetric_path(rest: &[u8]) -> Option<Vec<u8>> {
    let rest = unquote_both(rest);
    let n = rest.len();
    if n < 5 || n.is_multiple_of(2) {
        return None;
    }
    let (a, b) = (&rest[..n / 2], &rest[n / 2 + 1..]);
    (rest[n / 2] == b' ' && a.strip_prefix(b"a/") == b.strip_prefix(b"b/"))
        .then(|| a[2.min(a.len())..].to_vec())
}

fn unquote_both(rest: &[u8]) -> Vec<u8> {
    if rest.first() != Some(&b'"') {
        return rest.to_vec();
    }
    // "a/…" "b/…": unquote each half.
    let mut out = Vec::new();
    for part in rest.split(|&b| b == b' ') {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend(unquote(part));
    }
    out
}

fn trim_tab(p: &[u8]) -> &[u8] {
    p.strip_suffix(b"\t").unwrap_or(p)
}

/// Undoes git's C-style path quoting (`"a\tb"`, octal escapes); unquoted input is returned as is.
pub fn unquote(p: &[u8]) -> Vec<u8> {
    let Some(inner) = p.strip_prefix(b"\"").and_then(|x| x.strip_suffix(b"\"")) else {
        return p.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        i += 1;
        if b != b'\\' || i >= inner.len() {
            out.push(b);
            continue;
        }
        let e = inner[i];
        i += 1;
        out.push(match e {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'v' => 11,
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    if i < inner.len() && (b'0'..=b'7').contains(&inner[i]) {
                        v = v * 8 + u32::from(inner[i] - b'0');
                        i += 1;
                    }
                }
                v as u8
            }
            other => other,
        });
    }
    out
}

/// Per-file report lines for `-v`, shared with the CLI.
pub type Log = Arc<Mutex<Vec<String>>>;

/// The blobs of `changes`, read through one `git cat-file --batch`, as units.
pub struct BlobSource {
    changes: std::vec::IntoIter<Change>,
    child: Option<Child>,
    out: Option<BufReader<ChildStdout>>,
    writer: Option<std::thread::JoinHandle<io::Result<()>>>,
    failed: bool,
    /// Paths guard's own probe found binary (skipped), for the note.
    pub binary: Log,
    verbose: Option<Log>,
}

impl BlobSource {
    pub fn new(git: &Git, changes: Vec<Change>, verbose: bool) -> Result<BlobSource, GitError> {
        let mut src = BlobSource {
            changes: Vec::new().into_iter(),
            child: None,
            out: None,
            writer: None,
            failed: false,
            binary: Log::default(),
            verbose: verbose.then(Log::default),
        };
        if changes.is_empty() {
            return Ok(src);
        }
        let mut child = git
            .command()
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(GitError::Spawn)?;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let ids: Vec<u8> = changes
            .iter()
            .flat_map(|c| format!("{}\n", c.blob).into_bytes())
            .collect();
        // A separate writer: cat-file stops reading ids while its output is not drained.
        src.writer = Some(std::thread::spawn(move || stdin.write_all(&ids)));
        src.out = child.stdout.take().map(BufReader::new);
        src.child = Some(child);
        src.changes = changes.into_iter();
        Ok(src)
    }

    /// The verbose log (files and bytes read), when asked for.
    pub fn log(&self) -> Option<Log> {
        self.verbose.clone()
    }

    fn read_blob(&mut self, want: &str) -> Result<Vec<u8>, String> {
        let out = self.out.as_mut().ok_or("cat-file is not running")?;
        let mut header = String::new();
        out.read_line(&mut header).map_err(|e| e.to_string())?;
        let header = header.trim_end();
        let mut f = header.split(' ');
        let (id, kind, size) = (f.next(), f.next(), f.next());
        if id != Some(want) {
            return Err(format!("git cat-file answered {header:?} for blob {want}"));
        }
        if kind != Some("blob") {
            return Err(format!("blob {want} cannot be read ({header})"));
        }
        let size: usize = size
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("git cat-file header {header:?}"))?;
        let mut data = vec![0u8; size + 1];
        out.read_exact(&mut data).map_err(|e| e.to_string())?;
        if data.pop() != Some(b'\n') {
            return Err(format!("git cat-file output for {want} is not terminated"));
        }
        Ok(data)
    }
}

impl Source for BlobSource {
    fn next_unit(&mut self) -> Option<Result<Unit, ScanError>> {
        if self.failed {
            return None;
        }
        let change = self.changes.next()?;
        let origin = change.origin();
        match self.read_blob(&change.blob) {
            Ok(data) => {
                if looks_binary(&data) {
                    lock(&self.binary).push(change.path_lossy());
                }
                if let Some(log) = &self.verbose {
                    lock(log).push(format!("{origin}: {} bytes", data.len()));
                }
                Some(Ok(Unit {
                    origin,
                    content: Content::Bytes(data),
                }))
            }
            Err(message) => {
                // The stream is out of step: stop, and let the error fail the hook.
                self.failed = true;
                Some(Err(ScanError::Walk {
                    path: origin.to_string(),
                    message,
                }))
            }
        }
    }
}

impl Drop for BlobSource {
    fn drop(&mut self) {
        self.out = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn lock(l: &Log) -> std::sync::MutexGuard<'_, Vec<String>> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// The added lines of every change, by origin: a [`Filters`] scope that keeps the findings touching
/// an added line of their change. A finding whose origin is not a known change (its path was
/// redacted because it contains the secret) is kept.
pub struct AddedOnly {
    added: HashMap<Origin, Added>,
}

impl AddedOnly {
    pub fn new(changes: &[Change]) -> AddedOnly {
        AddedOnly {
            added: changes
                .iter()
                .map(|c| (c.origin(), c.added.clone()))
                .collect(),
        }
    }

    pub fn keeps(&self, f: &Finding) -> bool {
        self.added
            .get(&f.origin)
            .is_none_or(|a| a.touches(f.location.line, f.location.end_line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_and_paths() {
        let out = b"diff --git a/f o.txt b/f o.txt\n\
new file mode 100644\n\
index 0000000000000000000000000000000000000000..422c2b7ab3b3c668038da977e4e93a5fc623169c\n\
--- /dev/null\n\
+++ b/f o.txt\t\n\
@@ -0,0 +1,2 @@\n\
+a\n\
+++ b/not-a-header\n\
diff --git a/x b/x\n\
index 1111111111111111111111111111111111111111..2222222222222222222222222222222222222222 100644\n\
--- a/x\n\
+++ b/x\n\
@@ -3 +3 @@ fn main\n\
-old\n\
+new\n\
@@ -9,2 +8,0 @@\n\
-gone\n\
-gone\n\
diff --git a/gone b/gone\n\
deleted file mode 100644\n\
index 3333333333333333333333333333333333333333..0000000000000000000000000000000000000000\n\
--- a/gone\n\
+++ /dev/null\n\
@@ -1 +0,0 @@\n\
-secret\n\
diff --git a/img.png b/img.png\n\
new file mode 100644\n\
index 0000000000000000000000000000000000000000..4444444444444444444444444444444444444444\n\
Binary files /dev/null and b/img.png differ\n\
diff --git \"a/t\\tab\" \"b/t\\tab\"\n\
new file mode 100644\n\
index 0000000000000000000000000000000000000000..5555555555555555555555555555555555555555\n\
--- /dev/null\n\
+++ \"b/t\\tab\"\n\
@@ -0,0 +1 @@\n\
+z\n";
        let c = parse_patch(out).expect("parses");
        assert_eq!(c.deleted, 1);
        let got: Vec<_> = c
            .changes
            .iter()
            .map(|c| (c.path_lossy(), c.added.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("f o.txt".into(), Added::Lines(vec![(1, 2)])),
                ("x".into(), Added::Lines(vec![(3, 3)])),
                ("img.png".into(), Added::All),
                ("t\tab".into(), Added::Lines(vec![(1, 1)])),
            ]
        );
    }

    #[test]
    fn combined_merge_hunks_count_only_evil_lines() {
        let out = b"\x01abc\x00A <a@b>\x002024-01-01\x00Merge\n\
diff --cc f\n\
index 1111111111111111111111111111111111111111,2222222222222222222222222222222222222222..3333333333333333333333333333333333333333\n\
--- a/f\n\
+++ b/f\n\
@@@ -1,1 -1,1 +1,3 @@@\n\
- one\n\
\x20-two\n\
++evil\n\
+ from-first\n\
\x20+from-second\n";
        let c = parse_patch(out).expect("parses");
        assert_eq!(c.changes.len(), 1);
        assert_eq!(c.changes[0].added, Added::Lines(vec![(1, 1)]));
        assert_eq!(
            c.changes[0].commit.as_ref().map(|c| c.id.as_str()),
            Some("abc")
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(unquote(b"\"a\\303\\251\\\"b\""), "aé\"b".as_bytes());
        assert_eq!(unquote(b"plain"), b"plain");
        assert_eq!(symmetric_path(b"a/p q b/p q"), Some(b"p q".to_vec()));
        assert_eq!(symmetric_path(b"a/x b/y"), None);
    }

    #[test]
    fn push_lines() {
        let z = "0".repeat(40);
        let l = format!("refs/heads/a {} refs/heads/a {z}\n", "1".repeat(40));
        assert_eq!(parse_push_lines(&l).expect("ok")[0].remote, z);
        assert!(parse_push_lines("bad line\n").is_err());
    }

    #[test]
    fn touches() {
        let a = Added::Lines(vec![(3, 4), (10, 10)]);
        assert!(a.touches(4, 6));
        assert!(a.touches(1, 3));
        assert!(!a.touches(5, 9));
        assert!(Added::All.touches(1, 1));
    }
}
