//! The pipeline: sources push units to the engine on every core; findings are pushed, as each is
//! confirmed, through the shared filters into the sinks (ripgrep's push model). Nothing collects.
//!
//! ```text
//! Source ─► units ─► workers (engine, one Scratch each) ─► channel ─► in order ─► Filters ─► sinks
//! ```
//!
//! Order is deterministic: units are numbered as the sources yield them, and a finding goes out
//! once every earlier unit is done — but a unit's own findings go out as they come, so a finding
//! on a pipe is printed while the pipe is still open. Filters are written once for every source:
//! the path allowlist, the baseline and exact-duplicate suppression. (Secret-value allowlists and
//! the inline `guard:allow` marker need the bytes around the match, so the engine applies them.)
//! A sink that needs the whole run (SARIF, a JSON array) buffers in itself.

use std::collections::{BTreeMap, HashSet};
use std::io;

use regex_automata::meta;
use serde::Serialize;

use crate::engine::{Engine, EngineError};
use crate::finding::{Finding, FindingId, FindingOptions, Location};
use crate::source::{scan_unit, Limits, Outcome, Progress, ScanError, Source, Unit};

/// Totals reported at the end of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
    pub findings: u64,
    pub suppressed_by_baseline: u64,
    pub suppressed_by_allowlist: u64,
    pub skipped_binary: u64,
    pub skipped_large: u64,
    /// Streams cut at the size limit (read up to it, the rest not scanned).
    pub truncated: u64,
    /// Paths skipped by `.gitignore` or `--exclude`.
    pub ignored: u64,
    pub errors: u64,
}

impl Totals {
    /// What was not scanned or not reported, in words (empty when nothing was).
    pub fn notes(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut note = |n: u64, what: &str| {
            if n > 0 {
                v.push(format!("{n} {what}"));
            }
        };
        note(self.suppressed_by_baseline, "in baseline");
        note(self.suppressed_by_allowlist, "allowlisted");
        note(self.skipped_binary, "binary skipped");
        note(self.skipped_large, "too large skipped");
        note(self.truncated, "cut at the size limit");
        note(self.ignored, "path(s) ignored by .gitignore/--exclude");
        note(self.errors, "error(s)");
        v
    }
}

/// A destination for findings. `finish` is called once after the last finding.
pub trait FindingSink {
    fn finding(&mut self, f: &Finding) -> io::Result<()>;
    /// After the last finding (a sink that writes as it goes has nothing to do).
    fn finish(&mut self, _totals: &Totals) -> io::Result<()> {
        Ok(())
    }
}

/// A predicate restricting a run to the findings it is about.
pub type Scope = Box<dyn Fn(&Finding) -> bool>;

/// The filters every source shares.
#[derive(Default)]
pub struct Filters {
    /// Findings whose origin path matches one of these are dropped (`guard.toml`).
    pub path_allow: Vec<meta::Regex>,
    /// Finding ids recorded in a baseline.
    pub baseline: Option<HashSet<FindingId>>,
    /// What the run is about, applied first and not counted as a suppression: the git hooks
    /// keep only findings on the lines a change adds.
    scope: Option<Scope>,
    /// Findings suppressed by place (`.gitleaksignore` fingerprints, allowlisted commits);
    /// counted as allowlisted.
    suppress: Option<Scope>,
    seen: HashSet<(String, FindingId, Location)>,
}

impl Filters {
    pub fn new(path_allow: Vec<meta::Regex>, baseline: Option<HashSet<FindingId>>) -> Filters {
        Filters {
            path_allow,
            baseline,
            scope: None,
            suppress: None,
            seen: HashSet::new(),
        }
    }

    /// Drops (and counts as allowlisted) the findings for which `drop` is true.
    pub fn suppress(mut self, drop: Scope) -> Filters {
        self.suppress = Some(drop);
        self
    }

    /// Restricts the run to findings for which `keep` is true.
    pub fn scope(mut self, keep: Scope) -> Filters {
        self.scope = Some(keep);
        self
    }

    /// Whether `f` goes on to the sinks; counts what is suppressed.
    pub fn admit(&mut self, f: &Finding, totals: &mut Totals) -> bool {
        if self.scope.as_ref().is_some_and(|keep| !keep(f)) {
            return false;
        }
        let path = f.origin.path();
        if self.path_allow.iter().any(|r| r.is_match(path.as_bytes()))
            || self.suppress.as_ref().is_some_and(|drop| drop(f))
        {
            totals.suppressed_by_allowlist += 1;
            return false;
        }
        if self.baseline.as_ref().is_some_and(|b| b.contains(&f.id)) {
            totals.suppressed_by_baseline += 1;
            return false;
        }
        // The same path named twice (`guard scan a a`) reports once.
        self.seen
            .insert((f.origin.to_string(), f.id.clone(), f.location.clone()))
    }
}

/// Filters, then every sink in turn.
pub struct Pipeline<'a> {
    pub filters: Filters,
    sinks: Vec<Box<dyn FindingSink + 'a>>,
    pub totals: Totals,
    /// Called for each error as it happens, in unit order (the CLI prints it).
    on_error: Box<dyn FnMut(&ScanError) + 'a>,
}

impl<'a> Pipeline<'a> {
    pub fn new(filters: Filters, on_error: Box<dyn FnMut(&ScanError) + 'a>) -> Pipeline<'a> {
        Pipeline {
            filters,
            sinks: Vec::new(),
            totals: Totals::default(),
            on_error,
        }
    }

    pub fn sink(mut self, s: Box<dyn FindingSink + 'a>) -> Self {
        self.sinks.push(s);
        self
    }

    pub fn push(&mut self, f: &Finding) -> io::Result<()> {
        if !self.filters.admit(f, &mut self.totals) {
            return Ok(());
        }
        self.totals.findings += 1;
        for s in &mut self.sinks {
            s.finding(f)?;
        }
        Ok(())
    }

    fn outcome(&mut self, o: Result<Outcome, ScanError>) {
        match o {
            Ok(Outcome::Scanned { bytes }) => {
                self.totals.files += 1;
                self.totals.bytes += bytes;
            }
            Ok(Outcome::Truncated { bytes }) => {
                self.totals.files += 1;
                self.totals.bytes += bytes;
                self.totals.truncated += 1;
            }
            Ok(Outcome::Binary) => self.totals.skipped_binary += 1,
            Ok(Outcome::TooLarge) => self.totals.skipped_large += 1,
            Err(e) => {
                self.totals.errors += 1;
                (self.on_error)(&e);
            }
        }
    }

    pub fn finish(mut self) -> io::Result<Totals> {
        for s in &mut self.sinks {
            s.finish(&self.totals)?;
        }
        Ok(self.totals)
    }
}

/// How a run is spread and limited.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub limits: Limits,
    pub findings: FindingOptions,
    /// Worker threads (`None`: rayon's default, one per core).
    pub threads: Option<usize>,
}

/// A unit's findings that arrived before an earlier unit was done, and its outcome if known.
type Waiting = (Vec<Finding>, Option<Result<Outcome, ScanError>>);

enum Msg {
    Finding(u64, Box<Finding>),
    /// Outcomes of finished units, batched: one wake-up of the consumer per batch, not per file
    /// (per-file messages cost 20% of a source-tree scan in futex and yield calls).
    Done(Vec<(u64, Result<Outcome, ScanError>)>),
}

/// Finished units are reported in batches of this many (or sooner, when the worker goes idle).
const DONE_BATCH: usize = 64;

fn worker(
    engine: &Engine,
    opts: &RunOptions,
    progress: &dyn Progress,
    units: &crossbeam_channel::Receiver<(u64, Result<Unit, ScanError>)>,
    tx: &crossbeam_channel::Sender<Msg>,
) {
    let mut scratch = engine.scratch();
    let mut done = Vec::new();
    loop {
        let (seq, unit) = match units.try_recv() {
            Ok(u) => u,
            Err(_) => {
                // Idle (or finished): report what is done before waiting.
                if !done.is_empty() {
                    let _ = tx.send(Msg::Done(std::mem::take(&mut done)));
                }
                match units.recv() {
                    Ok(u) => u,
                    Err(_) => return,
                }
            }
        };
        let outcome = match (unit, scratch.as_mut()) {
            (Err(e), _) => Err(e),
            (Ok(u), Err(e)) => Err(ScanError::engine(
                &u.origin,
                EngineError::Hyperscan(e.to_string()),
            )),
            (Ok(u), Ok(scratch)) => {
                let mut found = false;
                scan_unit(
                    engine,
                    scratch,
                    u,
                    &opts.limits,
                    &opts.findings,
                    progress,
                    &mut |f| {
                        if !found && !done.is_empty() {
                            // Earlier units first, so this finding is not held back by them.
                            let _ = tx.send(Msg::Done(std::mem::take(&mut done)));
                        }
                        found = true;
                        let _ = tx.send(Msg::Finding(seq, Box::new(f)));
                    },
                )
            }
        };
        done.push((seq, outcome));
        if done.len() >= DONE_BATCH || outcome_matters(&done) {
            let _ = tx.send(Msg::Done(std::mem::take(&mut done)));
        }
    }
}

/// Errors and units with findings are reported at once (an error is printed as it happens).
fn outcome_matters(done: &[(u64, Result<Outcome, ScanError>)]) -> bool {
    done.last().is_some_and(|(_, o)| o.is_err())
}

/// Scans every unit of `sources` on a pool of workers and pushes the findings through `pipeline`
/// in unit order. Returns the first sink error (a closed stdout, say); scan errors are counted
/// and handed to the pipeline's error callback instead.
pub fn run(
    engine: &Engine,
    sources: Vec<Box<dyn Source + '_>>,
    opts: &RunOptions,
    pipeline: &mut Pipeline,
    progress: &dyn Progress,
) -> io::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .map_err(io::Error::other)?;
    let workers = pool.current_num_threads();
    let (unit_tx, unit_rx) = crossbeam_channel::bounded::<(u64, Result<Unit, ScanError>)>(4096);
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let ignored = std::sync::atomic::AtomicU64::new(0);
    let result = std::thread::scope(|scope| {
        let ignored = &ignored;
        // The producer: walks the sources in order, numbering units.
        scope.spawn(move || {
            let mut seq = 0u64;
            for mut src in sources {
                while let Some(u) = src.next_unit() {
                    if unit_tx.send((seq, u)).is_err() {
                        return;
                    }
                    seq += 1;
                }
                ignored.fetch_add(src.ignored(), std::sync::atomic::Ordering::Relaxed);
            }
        });
        // The workers: rayon pool threads (so one large input can still spread its prefilter
        // over the pool once the others run out of units), each with one Scratch for the run.
        scope.spawn(move || {
            pool.scope(|s| {
                for _ in 0..workers {
                    let (unit_rx, tx) = (unit_rx.clone(), tx.clone());
                    s.spawn(move |_| worker(engine, opts, progress, &unit_rx, &tx));
                }
            });
            drop(tx);
        });
        // In order: findings of the lowest unfinished unit go straight out, later ones wait.
        let mut next = 0u64;
        let mut waiting: BTreeMap<u64, Waiting> = BTreeMap::new();
        let mut first_err: Option<io::Error> = None;
        let deliver = |p: &mut Pipeline, f: &Finding, err: &mut Option<io::Error>| {
            if err.is_none() {
                if let Err(e) = p.push(f) {
                    *err = Some(e);
                }
            }
        };
        for msg in rx {
            match msg {
                Msg::Finding(seq, f) if seq == next => deliver(pipeline, &f, &mut first_err),
                Msg::Finding(seq, f) => waiting.entry(seq).or_default().0.push(*f),
                Msg::Done(batch) => {
                    for (seq, o) in batch {
                        waiting.entry(seq).or_default().1 = Some(o);
                    }
                    // Release every unit, in order, whose outcome is known.
                    while let Some(mut entry) = waiting.remove(&next) {
                        for f in entry.0.drain(..) {
                            deliver(pipeline, &f, &mut first_err);
                        }
                        match entry.1.take() {
                            Some(o) => {
                                pipeline.outcome(o);
                                next += 1;
                            }
                            None => break,
                        }
                    }
                }
            }
        }
        first_err
    });
    pipeline.totals.ignored += ignored.into_inner();
    match result {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
