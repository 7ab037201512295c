//! Git history as a [`Source`]: every blob reachable from the selected commits, each **once**
//! (deduplicated by object id), with the commit that first introduced it and how many commits
//! contain it.
//!
//! Two phases. The *walk* (on the producer thread) visits the selected commits oldest first and
//! expands their trees, skipping every tree already expanded — so each tree is decoded once, the
//! first commit met for a blob is the one that introduced it, and the tree DAG it records gives,
//! by one pass in topological order, how many commits contain each blob. The *scan* hands every
//! blob to the workers as a unit whose bytes are decoded on the worker (gix, one repository handle
//! per thread), so decompression and delta resolution run on every core. Measured for the issue on
//! a 23,566-blob repository: gix decoded every blob in 0.45 s by per-object lookup vs 0.99 s git2
//! and 1.49 s `git cat-file --batch-all-objects`; a gix walk that skips expanded trees found
//! blob → first commit in 0.10 s vs 0.44 s parsing `git log --raw`.
//!
//! Submodules are skipped (counted); a blob that cannot be read (a partial clone, a corrupt
//! object) is an error for that unit, and the rest is still scanned.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use gix::bstr::{BString, ByteSlice};
use gix::ObjectId;

use super::{Content, ScanError, Source, Unit};
use crate::finding::{Commit, Origin};

/// Which commits are scanned.
#[derive(Clone, Debug, Default)]
pub struct HistoryOptions {
    /// Tips to start from (`--branch`); empty means every ref.
    pub branches: Vec<String>,
    /// `A..B` (`--commits`): commits reachable from B and not from A.
    pub range: Option<String>,
    /// Only commits whose commit time is at or after this (seconds since the epoch; `--since`).
    pub since: Option<i64>,
}

/// `BlobInfo::first` of a blob that is already in the commits just outside the selection.
const BOUNDARY: u32 = u32::MAX;

/// What the walk learnt about one blob.
struct BlobInfo {
    /// Index into `commits` of the first commit (oldest first) whose tree holds it.
    first: u32,
    path: BString,
    /// Trees that list it directly (a blob may sit in several).
    parents: Vec<u32>,
}

pub struct HistorySource {
    repo: Arc<gix::ThreadSafeRepository>,
    commits: Vec<Commit>,
    blobs: Vec<(ObjectId, BlobInfo, u64)>,
    next: usize,
    /// An error from the walk, reported as the first unit.
    error: Option<ScanError>,
    skipped_submodules: u64,
}

impl HistorySource {
    /// Walks the history of the repository at (or above) `path`.
    pub fn open(path: &Path, opts: &HistoryOptions) -> Result<HistorySource, ScanError> {
        let err = |message: String| ScanError::Walk {
            path: path.display().to_string(),
            message,
        };
        let repo = gix::discover(path).map_err(|e| err(format!("not a git repository: {e}")))?;
        let mut src = HistorySource {
            repo: Arc::new(repo.clone().into_sync()),
            commits: Vec::new(),
            blobs: Vec::new(),
            next: 0,
            error: None,
            skipped_submodules: 0,
        };
        let mut repo = repo;
        // Trees and commits are read once each; blobs are read by the workers.
        repo.object_cache_size_if_unset(16 << 20);
        src.walk(&repo, opts).map_err(err)?;
        Ok(src)
    }

    /// Commits scanned and distinct blobs found, for the summary.
    pub fn stats(&self) -> (usize, usize, u64) {
        (
            self.commits.len(),
            self.blobs.len(),
            self.skipped_submodules,
        )
    }

    fn walk(&mut self, repo: &gix::Repository, opts: &HistoryOptions) -> Result<(), String> {
        let mut tips: Vec<ObjectId> = Vec::new();
        let mut hidden: Vec<ObjectId> = Vec::new();
        let mut loose_trees: Vec<(ObjectId, String)> = Vec::new();
        let mut loose_blobs: Vec<(ObjectId, String)> = Vec::new();
        let resolve = |spec: &str| -> Result<ObjectId, String> {
            repo.rev_parse_single(spec)
                .map(|id| id.detach())
                .map_err(|e| format!("cannot resolve {spec:?}: {e}"))
        };
        if let Some(range) = &opts.range {
            let (a, b) = range
                .split_once("..")
                .ok_or_else(|| format!("--commits {range:?}: expected A..B"))?;
            hidden.push(resolve(a)?);
            tips.push(resolve(if b.is_empty() { "HEAD" } else { b })?);
        }
        for b in &opts.branches {
            tips.push(resolve(b)?);
        }
        if opts.range.is_none() && opts.branches.is_empty() {
            let refs = repo.references().map_err(|e| e.to_string())?;
            for r in refs.all().map_err(|e| e.to_string())? {
                let mut r = r.map_err(|e| e.to_string())?;
                let name = r.name().as_bstr().to_string();
                let Ok(id) = r.peel_to_id() else { continue };
                let id = id.detach();
                match repo.find_header(id).map(|h| h.kind()) {
                    Ok(gix::object::Kind::Commit) => tips.push(id),
                    Ok(gix::object::Kind::Tree) => loose_trees.push((id, name)),
                    Ok(gix::object::Kind::Blob) => loose_blobs.push((id, name)),
                    _ => {}
                }
            }
            if tips.is_empty() {
                if let Ok(head) = repo.head_id() {
                    tips.push(head.detach());
                }
            }
        }
        tips.sort();
        tips.dedup();
        let walk = repo
            .rev_walk(tips)
            .with_hidden(hidden)
            .all()
            .map_err(|e| e.to_string())?;
        let mut found: Vec<(i64, usize, ObjectId, ObjectId)> = Vec::new();
        let mut parents: Vec<ObjectId> = Vec::new();
        for (order, info) in walk.enumerate() {
            let info = info.map_err(|e| format!("walking commits: {e}"))?;
            let commit = info.object().map_err(|e| e.to_string())?;
            let time = commit.time().map(|t| t.seconds).unwrap_or(0);
            if opts.since.is_some_and(|s| time < s) {
                continue;
            }
            let tree = commit.tree_id().map_err(|e| e.to_string())?.detach();
            parents.extend(commit.parent_ids().map(|p| p.detach()));
            let author = commit
                .author()
                .map(|a| a.name.to_str_lossy().into_owned())
                .unwrap_or_default();
            let subject = commit
                .message()
                .map(|m| m.summary().to_str_lossy().into_owned())
                .unwrap_or_default();
            self.commits.push(Commit {
                id: commit.id.to_string(),
                author,
                date: rfc3339(time),
                subject,
            });
            found.push((time, order, tree, commit.id));
        }
        // Oldest first (the walk goes newest first: ties keep the reverse walk order).
        let mut order: Vec<usize> = (0..found.len()).collect();
        order.sort_by_key(|&i| (found[i].0, std::cmp::Reverse(found[i].1)));
        let commits = std::mem::take(&mut self.commits);
        self.commits = order.iter().map(|&i| commits[i].clone()).collect();
        let roots: Vec<ObjectId> = order.iter().map(|&i| found[i].2).collect();

        let mut dag = TreeDag::default();
        let mut blobs: HashMap<ObjectId, BlobInfo> = HashMap::new();
        // A selection (`--commits`, `--since`, `--branch` with hidden history) scans what its
        // commits add: the trees of the commits just outside it are expanded first, and what
        // they already hold is not reported again.
        let included: std::collections::HashSet<ObjectId> = found.iter().map(|f| f.3).collect();
        let mut boundary: Vec<ObjectId> = parents
            .into_iter()
            .filter(|p| !included.contains(p))
            .collect();
        boundary.sort();
        boundary.dedup();
        for b in boundary {
            if let Ok(c) = repo.find_commit(b) {
                if let Ok(t) = c.tree_id() {
                    dag.expand(repo, t.detach(), BOUNDARY, &mut blobs, &mut 0)?;
                }
            }
        }
        let mut root_of_commit = Vec::with_capacity(roots.len());
        for (ci, root) in roots.iter().enumerate() {
            root_of_commit.push(dag.expand(
                repo,
                *root,
                ci as u32,
                &mut blobs,
                &mut self.skipped_submodules,
            )?);
        }
        // Trees and blobs that refs point at directly (reachable only through a tag).
        for (id, name) in loose_trees {
            self.commits.push(Commit {
                id: String::new(),
                author: String::new(),
                date: String::new(),
                subject: format!("tree referenced by {name}"),
            });
            let ci = self.commits.len() as u32 - 1;
            dag.expand(repo, id, ci, &mut blobs, &mut self.skipped_submodules)?;
        }
        for (id, name) in loose_blobs {
            self.commits.push(Commit {
                id: String::new(),
                author: String::new(),
                date: String::new(),
                subject: format!("blob referenced by {name}"),
            });
            let ci = self.commits.len() as u32 - 1;
            blobs.entry(id).or_insert(BlobInfo {
                first: ci,
                path: BString::from(name),
                parents: Vec::new(),
            });
        }
        let counts = dag.commit_counts(&root_of_commit);
        let mut list: Vec<(ObjectId, BlobInfo, u64)> = blobs
            .into_iter()
            .filter(|(_, info)| info.first != BOUNDARY)
            .map(|(id, info)| {
                let n = info.parents.iter().map(|&t| counts[t as usize]).sum();
                (id, info, n)
            })
            .collect();
        // Report in the order history introduced them.
        list.sort_by(|a, b| (a.1.first, &a.1.path).cmp(&(b.1.first, &b.1.path)));
        self.blobs = list;
        Ok(())
    }
}

/// One entry of a decoded tree: mode, name, object id.
type TreeEntry = (gix::objs::tree::EntryMode, BString, ObjectId);

/// Every tree of the history once, with its subtrees.
#[derive(Default)]
struct TreeDag {
    index: HashMap<ObjectId, u32>,
    /// Per tree: its subtrees.
    children: Vec<Vec<u32>>,
    /// Trees in the order their expansion finished: every tree after all of its subtrees.
    finished: Vec<u32>,
}

impl TreeDag {
    /// Expands `root` (and every tree below it not seen before), recording blobs first met here
    /// as introduced by commit `ci`. Returns the root's index.
    fn expand(
        &mut self,
        repo: &gix::Repository,
        root: ObjectId,
        ci: u32,
        blobs: &mut HashMap<ObjectId, BlobInfo>,
        submodules: &mut u64,
    ) -> Result<u32, String> {
        if let Some(&i) = self.index.get(&root) {
            return Ok(i);
        }
        // Iterative DFS: (tree id, its path prefix, its index, entries still to visit).
        let mut stack: Vec<(u32, BString, std::vec::IntoIter<TreeEntry>)> = Vec::new();
        let open = |dag: &mut TreeDag, id: ObjectId| -> Result<(u32, Vec<_>), String> {
            let obj = repo
                .find_object(id)
                .map_err(|e| format!("tree {id}: {e}"))?;
            let entries = gix::objs::TreeRefIter::from_bytes(&obj.data, repo.object_hash())
                .map(|e| e.map(|e| (e.mode, e.filename.to_owned(), e.oid.to_owned())))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tree {id}: {e}"))?;
            let i = dag.children.len() as u32;
            dag.children.push(Vec::new());
            dag.index.insert(id, i);
            Ok((i, entries))
        };
        let (ri, entries) = open(self, root)?;
        stack.push((ri, BString::default(), entries.into_iter()));
        while let Some((ti, prefix, iter)) = stack.last_mut() {
            let Some((mode, name, oid)) = iter.next() else {
                self.finished.push(*ti);
                stack.pop();
                continue;
            };
            let (ti, mut path) = (*ti, prefix.clone());
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            if mode.is_tree() {
                let child = match self.index.get(&oid) {
                    Some(&c) => c,
                    None => {
                        let (c, entries) = open(self, oid)?;
                        stack.push((c, path, entries.into_iter()));
                        c
                    }
                };
                self.children[ti as usize].push(child);
            } else if mode.is_commit() {
                *submodules += 1;
            } else if mode.is_blob() {
                blobs
                    .entry(oid)
                    .or_insert_with(|| BlobInfo {
                        first: ci,
                        path,
                        parents: Vec::new(),
                    })
                    .parents
                    .push(ti);
            }
        }
        Ok(ri)
    }

    /// Per tree: how many of the commits (by root tree) contain it, counted once per path.
    fn commit_counts(&self, roots: &[u32]) -> Vec<u64> {
        let mut count = vec![0u64; self.children.len()];
        for &r in roots {
            count[r as usize] += 1;
        }
        // Reverse finishing order is topological: every tree before its subtrees.
        for &t in self.finished.iter().rev() {
            let t = t as usize;
            let c = count[t];
            if c > 0 {
                for &ch in &self.children[t] {
                    count[ch as usize] += c;
                }
            }
        }
        count
    }
}

thread_local! {
    /// One repository handle per worker thread, keyed by the shared repository it came from.
    static LOCAL: RefCell<Option<(usize, gix::Repository)>> = const { RefCell::new(None) };
}

fn read_blob(repo: &Arc<gix::ThreadSafeRepository>, id: ObjectId) -> std::io::Result<Vec<u8>> {
    let key = Arc::as_ptr(repo) as usize;
    LOCAL.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(k, _)| *k != key) {
            let mut local = repo.to_thread_local();
            local.object_cache_size_if_unset(4 << 20);
            *cell = Some((key, local));
        }
        let (_, local) = cell.as_ref().expect("set just above");
        let obj = local
            .find_object(id)
            .map_err(|e| std::io::Error::other(format!("blob {id}: {e}")))?;
        Ok(obj.detach().data)
    })
}

impl Source for HistorySource {
    fn next_unit(&mut self) -> Option<Result<Unit, ScanError>> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        let (id, info, count) = self.blobs.get(self.next)?;
        self.next += 1;
        let commit = self.commits.get(info.first as usize).cloned();
        let repo = self.repo.clone();
        let id = *id;
        Some(Ok(Unit {
            origin: Origin::GitBlob {
                blob: id.to_string(),
                path: info.path.to_str_lossy().into_owned(),
                commit: commit.filter(|c| !c.id.is_empty()),
                commits: *count,
            },
            content: Content::Load(Box::new(move || read_blob(&repo, id))),
        }))
    }
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DD` (UTC midnight) or seconds since the epoch (`--since`).
pub fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let bad = || format!("--since {s:?}: expected YYYY-MM-DD");
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (
        it.next()
            .and_then(|x| x.parse::<i64>().ok())
            .ok_or_else(bad)?,
        it.next()
            .and_then(|x| x.parse::<i64>().ok())
            .ok_or_else(bad)?,
        it.next()
            .and_then(|x| x.parse::<i64>().ok())
            .ok_or_else(bad)?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days from civil (the inverse of the above).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_417_600), "2025-11-29T12:00:00Z");
        assert_eq!(parse_since("2025-11-29"), Ok(1_764_374_400));
        assert_eq!(
            rfc3339(parse_since("2000-02-29").expect("valid")),
            "2000-02-29T00:00:00Z"
        );
        assert!(parse_since("yesterday").is_err());
    }
}
