//! `guard scan`: files, directories and stdin.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::baseline::{Baseline, BaselineWriter};
use crate::cache::DirCache;
use crate::config::Config;
use crate::engine::{Backend, DatabaseCache, Engine};
use crate::finding::{FindingOptions, Reveal};
use crate::pipeline::{self, Filters, Pipeline, RunOptions};
use crate::report::{self, Format};
use crate::rules::{Confidence, Ruleset};
use crate::source::{FsOptions, FsSource, Limits, Progress, ReaderSource, Source};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    Human,
    Json,
    Jsonl,
    Sarif,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BackendArg {
    /// Hyperscan prefilter (when built in), regex-automata confirm
    Auto,
    /// regex-automata only (same findings, no C++ library)
    Regex,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ConfidenceArg {
    Low,
    Medium,
    High,
}

impl ConfidenceArg {
    pub fn confidence(self) -> Confidence {
        match self {
            ConfidenceArg::Low => Confidence::Low,
            ConfidenceArg::Medium => Confidence::Medium,
            ConfidenceArg::High => Confidence::High,
        }
    }
}

/// Which rules run: shared by every command that scans (`guard scan`, `guard hook …`), flattened
/// into each so the flags are spelled the same everywhere.
#[derive(Args, Clone, Debug, Default)]
pub struct RuleSelect {
    /// Only run rules of at least this confidence (rules' `confidence`: low < medium < high)
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub min_confidence: Option<ConfidenceArg>,
}

impl RuleSelect {
    /// Drops the rules this selection excludes.
    pub fn apply(&self, rules: &mut Ruleset) {
        if let Some(min) = self.min_confidence {
            let min = min.confidence();
            rules.retain(|r| r.spec.confidence >= min);
        }
    }
}

/// What a scan does about a leak besides reporting it: stored values recognised by their
/// fingerprints (and where their leak events go, spelled as in `guard redact`), and provider
/// revocation hooks. Shared by `guard scan` and the hooks.
#[derive(Args, Clone, Debug, Default)]
pub struct LeakArgs {
    /// Also report these stored values (a `guard fingerprint` / `guard vault fingerprints` file)
    /// in every encoding, and write a leak event for each [hooks: the vault's fingerprints.fp,
    /// when there is one]
    #[arg(long, value_name = "FP")]
    pub fingerprints: Option<PathBuf>,
    /// Leak-event spool directory [default: $XDG_STATE_HOME/guard/leaks]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Run the revocation hook your ~/.config/guard/revoke.toml names for each finding's rule
    /// (the secret on its stdin); never hooks from a repository
    #[arg(long)]
    pub revoke: bool,
}

impl LeakArgs {
    /// The sinks these flags add to a run: leak events for stored values, revocation hooks.
    pub fn sinks(
        &self,
        known: bool,
        source: &str,
    ) -> anyhow::Result<Vec<Box<dyn crate::pipeline::FindingSink>>> {
        let mut v: Vec<Box<dyn crate::pipeline::FindingSink>> = Vec::new();
        if known {
            v.push(Box::new(crate::redact::spool::SpoolSink::new(
                self.spool.clone(),
                source,
            )));
        }
        if self.revoke {
            v.push(Box::new(crate::revoke::RevokeSink::new(
                crate::revoke::RevokeHooks::load()?,
            )));
        }
        Ok(v)
    }
}

impl LeakArgs {
    /// The fingerprint matcher, if a file was given (or `fallback` exists).
    pub fn matcher(
        &self,
        fallback: Option<PathBuf>,
    ) -> anyhow::Result<Option<std::sync::Arc<crate::engine::known::KnownMatcher>>> {
        let path = match (&self.fingerprints, fallback) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) if p.exists() => p,
            _ => return Ok(None),
        };
        let m = crate::fingerprint::load_matcher(&path)
            .with_context(|| format!("fingerprints {}", path.display()))?;
        Ok(Some(m))
    }
}

#[derive(Args)]
#[command(after_help = "Examples:
  guard scan .                           scan the current directory (hidden files included)
  guard scan --exclude 'testdata/**' .   skip paths matching a glob
  guard scan --format sarif -o out.sarif src/
  tail -f app.log | guard scan -         scan stdin; each finding is printed as its line arrives
  guard scan --git .                     every blob in the repository's history, each once
  guard scan --git --commits main..HEAD  only what this branch adds
  guard scan --min-confidence high .     only the rules of high confidence (checksummed, prefixed)
  guard scan --write-baseline .guard-baseline.json .
  guard scan --baseline .guard-baseline.json .   report only new findings

Hidden files and directories are scanned; .git/ is skipped; .gitignore is honoured inside a git
work tree (--no-ignore turns that off).

Exit status: 0 no findings, 1 findings, 2 error (a path that does not exist, or nothing scanned).")]
pub struct ScanArgs {
    /// Files or directories to scan; `-` reads stdin
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = FormatArg::Human)]
    format: FormatArg,
    /// Write the report to FILE instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print secrets in clear text (redacted by default in every format)
    #[arg(long)]
    show_secrets: bool,
    /// Also decode base64, hex and URL-encoded runs in files and scan what they hold (findings
    /// are reported at the encoded run). Off by default: it costs ~30% on a source tree
    #[arg(long)]
    decode: bool,
    /// Config file (default: ./guard.toml, else guard.toml at the git root)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    select: RuleSelect,
    #[command(flatten)]
    known: LeakArgs,
    /// Suppress findings recorded in this baseline file
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Record the current findings (ids only, never secrets) into FILE and exit 0
    #[arg(long, value_name = "FILE")]
    write_baseline: Option<PathBuf>,
    /// Scan git history instead of the working tree: every blob reachable from every ref (or
    /// --branch / --commits / --since), each once, with the commit that introduced it
    #[arg(long, visible_alias = "history")]
    git: bool,
    /// With --git: start from this branch or revision instead of every ref (repeatable)
    #[arg(long, value_name = "REV", requires = "git")]
    branch: Vec<String>,
    /// With --git: only commits in the range A..B (reachable from B, not from A)
    #[arg(long, value_name = "A..B", requires = "git")]
    commits: Option<String>,
    /// With --git: only commits made on or after DATE (YYYY-MM-DD, UTC)
    #[arg(long, value_name = "DATE", requires = "git")]
    since: Option<String>,
    /// Do not honour .gitignore files
    #[arg(long)]
    no_ignore: bool,
    /// Skip paths matching GLOB (gitignore syntax, relative to each directory scanned; repeatable)
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Hidden files are scanned by default; kept so older scripts keep working
    #[arg(long, hide = true)]
    hidden: bool,
    /// Skip files larger than SIZE (e.g. 500K, 10M, 1G); streams are cut there [streams: 1G]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_file_size: Option<u64>,
    /// Scan files that look binary (NUL in the first 8 KiB)
    #[arg(long)]
    binary: bool,
    /// Match backend: hyperscan prefilter or regex-automata only; findings are identical
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Worker threads (default: all cores; at most 4x the cores)
    #[arg(short = 'j', long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// Colour: auto (when stdout is a terminal), always, never
    #[arg(long, value_enum, default_value_t = ColorArg::Auto)]
    color: ColorArg,
    /// No progress bar
    #[arg(short, long)]
    quiet: bool,
    /// Do not read or write the compiled-database cache
    #[arg(long)]
    no_cache: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let m = match s[i..].to_ascii_uppercase().trim_end_matches(['B', 'I']) {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                other => return Err(format!("unknown size unit {other:?} (use K, M or G)")),
            };
            (&s[..i], m)
        }
    };
    let n = num
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is not a size like 10M"))?;
    match n.checked_mul(mult) {
        Some(0) => Err("a size limit of 0 would skip everything".into()),
        Some(v) => Ok(v),
        None => Err(format!("{s:?} is too large (the limit is 16E bytes)")),
    }
}

/// One history source per repository named (`--git`).
#[cfg(feature = "git")]
fn history_sources(a: &ScanArgs) -> anyhow::Result<Vec<Box<dyn Source>>> {
    use crate::source::git::{parse_since, HistoryOptions, HistorySource};
    let opts = HistoryOptions {
        branches: a.branch.clone(),
        range: a.commits.clone(),
        since: a
            .since
            .as_deref()
            .map(parse_since)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    };
    let mut out: Vec<Box<dyn Source>> = Vec::new();
    for p in &a.paths {
        anyhow::ensure!(p.as_os_str() != "-", "--git reads repositories, not stdin");
        let src = HistorySource::open(p, &opts)?;
        let (commits, blobs, submodules) = src.stats();
        if !a.quiet {
            let sub = if submodules > 0 {
                format!("; {submodules} submodule entr(ies) skipped: scan them on their own")
            } else {
                String::new()
            };
            eprintln!(
                "guard: {}: {commits} commit(s), {blobs} distinct blob(s){sub}",
                p.display()
            );
        }
        out.push(Box::new(src));
    }
    Ok(out)
}

#[cfg(not(feature = "git"))]
fn history_sources(_: &ScanArgs) -> anyhow::Result<Vec<Box<dyn Source>>> {
    anyhow::bail!("this guard was built without the `git` feature")
}

/// Jobs beyond this multiple of the cores only cost memory and scheduling.
const MAX_JOBS_PER_CORE: usize = 4;

/// The worker count for `-j N`: capped at a multiple of the cores, with a note when capped.
pub fn jobs(requested: Option<u32>) -> Option<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = cores * MAX_JOBS_PER_CORE;
    requested.map(|n| {
        let n = n as usize;
        if n > max {
            eprintln!("guard: -j {n} capped at {max} ({MAX_JOBS_PER_CORE}x the {cores} core(s))");
        }
        n.min(max)
    })
}

/// Builds the engine from the builtin rules plus the config, narrowed by `select`; shared by
/// `scan` and `hook`.
pub fn load_engine(
    config: &Config,
    select: &RuleSelect,
    backend: BackendArg,
    cache: bool,
) -> anyhow::Result<Engine> {
    let mut rules = Ruleset::builtin().context("builtin rules")?;
    config.apply_rules(&mut rules)?;
    for w in config.warnings() {
        eprintln!("guard: warning: {w}");
    }
    select.apply(&mut rules);
    if rules.is_empty() {
        eprintln!(
            "guard: warning: no rule is selected (see --min-confidence and [rules] in guard.toml)"
        );
    }
    let cache = cache
        .then(DirCache::from_env)
        .flatten()
        .map(|c| std::sync::Arc::new(c) as std::sync::Arc<dyn DatabaseCache>);
    let engine = Engine::builder(rules)
        .allowlist(config.allowlist()?)
        .backend(if backend == BackendArg::Regex {
            Backend::RegexOnly
        } else {
            Backend::Auto
        })
        .database_cache(cache)
        .build()?;
    for w in engine.warnings() {
        eprintln!("guard: warning: {w}");
    }
    Ok(engine)
}

impl FormatArg {
    pub fn format(self) -> Format {
        match self {
            FormatArg::Human => Format::Human,
            FormatArg::Json => Format::Json,
            FormatArg::Jsonl => Format::Jsonl,
            FormatArg::Sarif => Format::Sarif,
        }
    }
}

impl ColorArg {
    /// Whether to colour output going to a terminal (`is_tty`) or not.
    pub fn enabled(self, is_tty: bool) -> bool {
        match self {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => is_tty && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

/// How findings are shown and identified (`GUARD_FINDING_KEY` keys the ids); shared by commands.
pub fn finding_options(reveal: Reveal, decode: bool) -> FindingOptions {
    FindingOptions {
        reveal,
        id_key: std::env::var_os("GUARD_FINDING_KEY").map(|k| k.into_encoded_bytes()),
        decode,
        known: None,
    }
}

/// The shared filters of a run: the config's path allowlist and suppressions, and the baseline.
pub fn filters(config: &Config, baseline: Option<&std::path::Path>) -> anyhow::Result<Filters> {
    let mut f = Filters::new(config.path_allowlist()?, load_baseline(baseline)?);
    if let Some(list) = config.suppressions() {
        f = f.suppress(Box::new(move |x| list.suppresses(x)));
    }
    Ok(f)
}

/// The finding ids of a `--baseline` file, if one was given.
pub fn load_baseline(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<std::collections::HashSet<crate::finding::FindingId>>> {
    Ok(path
        .map(Baseline::load)
        .transpose()?
        .map(|b| b.ids().into_iter().cloned().collect()))
}

struct Bar(Option<indicatif::ProgressBar>);

impl Progress for Bar {
    fn bytes(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
}

pub fn run(a: ScanArgs) -> anyhow::Result<i32> {
    let config = Config::discover(a.config.as_deref())?;
    // Never dropped: the process exits after the scan, and freeing the catalogue's automata one
    // allocation at a time cost 1-2 ms of every run.
    let engine =
        std::mem::ManuallyDrop::new(load_engine(&config, &a.select, a.backend, !a.no_cache)?);
    let reveal = if a.show_secrets {
        Reveal::Shown
    } else {
        Reveal::Redacted
    };
    let opts = RunOptions {
        limits: Limits {
            max_size: a.max_file_size,
            binary: a.binary,
        },
        findings: FindingOptions {
            known: a.known.matcher(None)?,
            ..finding_options(reveal, a.decode)
        },
        threads: jobs(a.threads),
    };

    let bar = if !a.quiet && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {binary_bytes} scanned ({binary_bytes_per_sec})",
            )
            .expect("template is valid"),
        );
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let progress = Bar(bar);

    // Sources in command-line order; consecutive paths share one walk.
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if a.git {
        sources.extend(history_sources(&a)?);
    } else {
        let mut paths = Vec::new();
        let fs_opts = FsOptions {
            no_ignore: a.no_ignore,
            exclude: a.exclude.clone(),
        };
        for p in &a.paths {
            if p.as_os_str() == "-" {
                if !paths.is_empty() {
                    sources.push(Box::new(FsSource::new(
                        std::mem::take(&mut paths),
                        fs_opts.clone(),
                    )));
                }
                sources.push(Box::new(ReaderSource::stdin()));
            } else {
                paths.push(p.clone());
            }
        }
        if !paths.is_empty() {
            sources.push(Box::new(FsSource::new(paths, fs_opts)));
        }
    }

    let (out, is_tty): (Box<dyn Write>, bool) = match (&a.output, &a.write_baseline) {
        (_, Some(_)) => (Box::new(std::io::sink()), false),
        (Some(p), None) => (
            Box::new(std::io::BufWriter::new(
                std::fs::File::create(p)
                    .with_context(|| format!("cannot create {}", p.display()))?,
            )),
            false,
        ),
        (None, None) => (
            Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            std::io::stdout().is_terminal(),
        ),
    };
    let color = a.color.enabled(is_tty);
    let format = a.format.format();
    let filters = filters(&config, a.baseline.as_deref())?;
    let bar_ref = &progress.0;
    let mut pipeline = Pipeline::new(
        filters,
        Box::new(move |e| {
            if let Some(b) = bar_ref {
                b.suspend(|| eprintln!("guard: {e}"));
            } else {
                eprintln!("guard: {e}");
            }
        }),
    );
    pipeline = match &a.write_baseline {
        Some(path) => pipeline.sink(Box::new(BaselineWriter::new(path.clone()))),
        None => pipeline.sink(report::sink(format, out, engine.ruleset(), reveal, color)),
    };
    for sink in a.known.sinks(opts.findings.known.is_some(), "scan")? {
        pipeline = pipeline.sink(sink);
    }
    pipeline::run(&engine, sources, &opts, &mut pipeline, &progress)?;
    if let Some(b) = &progress.0 {
        b.finish_and_clear();
    }
    let totals = pipeline.finish()?;

    if let Some(path) = &a.write_baseline {
        eprintln!(
            "guard: wrote {} finding id(s) to {}",
            totals.findings,
            path.display()
        );
    }
    if totals.truncated > 0 {
        eprintln!(
            "guard: {} stream(s) cut at the size limit ({} bytes); the rest was not scanned (raise it with --max-file-size)",
            totals.truncated,
            a.max_file_size.unwrap_or(crate::source::DEFAULT_STREAM_CAP)
        );
    }
    if totals.files == 0 && totals.errors == 0 {
        let why = totals.notes();
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join(", "))
        };
        eprintln!("guard: nothing was scanned: 0 files read{why}; that is not a clean result");
        return Ok(super::EXIT_ERROR);
    }
    Ok(if totals.errors > 0 {
        super::EXIT_ERROR
    } else if totals.findings == 0 || a.write_baseline.is_some() {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10"), Ok(10));
        assert_eq!(parse_size("10K"), Ok(10240));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("17179869184G").is_err());
        assert!(parse_size("0").is_err());
    }
}
