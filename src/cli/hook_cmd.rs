//! `guard hook`: git hooks. `pre-commit` scans what is staged, `pre-push` the commits being
//! pushed, `commit-msg` the message; `install`/`uninstall` manage the shims of `hooks/`.
//!
//! The hooks are the same pipeline as `guard scan` (engine, filters, report formats); the sources
//! are git changes ([`crate::source::staged`]) and only findings on *added* lines are reported.
//! A change that adds nothing scannable (deletions, binaries) passes — git said what is staged,
//! so "0 files" is an answer here, not a failure — but anything that could not be read fails the
//! hook (exit 2) rather than letting the commit through unscanned.
//!
//! Installing never overwrites: an existing hook is moved to `<hook>.guard-chained` and the shim
//! runs it after guard passes; `uninstall` moves it back.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::scan_cmd::{self, BackendArg, ColorArg, FormatArg, RuleSelect};
use crate::config::Config;
use crate::finding::{Origin, Reveal};
use crate::pipeline::{self, Pipeline, RunOptions};
use crate::report;
use crate::source::staged::{self, AddedOnly, BlobSource, Change, Changes, Git};
use crate::source::{Content, Limits, OneUnit, Source, Unit};

#[derive(Subcommand)]
#[command(
    after_help = "Exit status: 0 pass, 1 blocked (findings), 2 error (the hook could not read \
what it had to scan: the commit or push is refused).

Install in the current repository:  guard hook install [--pre-push]
With the pre-commit framework:      see .pre-commit-hooks.yaml (id: guard)"
)]
pub enum HookCmd {
    /// Scan the lines the staged changes add (index against HEAD); run by git before a commit
    PreCommit(HookArgs),
    /// Scan the lines added by the commits being pushed (git's pre-push protocol on stdin)
    PrePush {
        /// Remote name (passed by git; informational)
        remote: Option<String>,
        /// Remote URL (passed by git; informational)
        url: Option<String>,
        #[command(flatten)]
        opts: HookArgs,
    },
    /// Scan a commit message file (the part above a `git commit -v` scissors line)
    CommitMsg {
        file: PathBuf,
        #[command(flatten)]
        opts: HookArgs,
    },
    /// Install the hook shims into this repository's hooks directory, chaining existing hooks
    Install(InstallArgs),
    /// Remove guard's shims and restore the hooks they chained
    Uninstall,
}

#[derive(Args)]
pub struct HookArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value_t = FormatArg::Human)]
    format: FormatArg,
    /// Print secrets in clear text (redacted by default in every format)
    #[arg(long)]
    show_secrets: bool,
    /// Config file (default: ./guard.toml, else guard.toml at the git root)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    select: RuleSelect,
    #[command(flatten)]
    known: scan_cmd::LeakArgs,
    /// Suppress findings recorded in this baseline file
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Colour: auto (when stdout is a terminal), always, never
    #[arg(long, value_enum, default_value_t = ColorArg::Auto)]
    color: ColorArg,
    /// No notes on stderr (skipped binaries, submodules, nothing staged); findings and errors stay
    #[arg(short, long)]
    quiet: bool,
    /// Report every file and the bytes scanned
    #[arg(short, long)]
    verbose: bool,
    /// Do not read or write the compiled-database cache
    #[arg(long)]
    no_cache: bool,
}

#[derive(Args)]
pub struct InstallArgs {
    /// Also install the pre-push hook (scans the commits being pushed)
    #[arg(long)]
    pre_push: bool,
    /// Also install the commit-msg hook (scans commit messages)
    #[arg(long)]
    commit_msg: bool,
    /// Replace an existing `<hook>.guard-chained` (left from an earlier install) with the current hook
    #[arg(long)]
    force: bool,
}

pub fn run(cmd: HookCmd) -> anyhow::Result<i32> {
    match cmd {
        HookCmd::PreCommit(opts) => pre_commit(&opts),
        HookCmd::PrePush { opts, .. } => pre_push(&opts),
        HookCmd::CommitMsg { file, opts } => commit_msg(&file, &opts),
        HookCmd::Install(a) => install(&a),
        HookCmd::Uninstall => uninstall(),
    }
}

fn pre_commit(opts: &HookArgs) -> anyhow::Result<i32> {
    let git = Git::default();
    let changes = staged::staged(&git).context("cannot read the staged changes")?;
    scan_changes(opts, &git, changes, Bypass::Commit)
}

fn pre_push(opts: &HookArgs) -> anyhow::Result<i32> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the pre-push input")?;
    let git = Git::default();
    let refs = staged::parse_push_lines(&input)?;
    let commits = staged::pushed_commits(&git, &refs).context("cannot list the pushed commits")?;
    if opts.verbose {
        eprintln!("guard: {} commit(s) to push", commits.len());
    }
    let changes =
        staged::commit_changes(&git, &commits).context("cannot read the pushed commits")?;
    scan_changes(opts, &git, changes, Bypass::Push)
}

/// What a blocked user can do deliberately.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bypass {
    Commit,
    Push,
}

fn scan_changes(
    opts: &HookArgs,
    git: &Git,
    changes: Changes,
    bypass: Bypass,
) -> anyhow::Result<i32> {
    for s in changes.submodules.iter().filter(|_| !opts.quiet) {
        eprintln!("guard: note: submodule {s} not scanned (its own hooks cover it)");
    }
    let listed = changes.changes.len();
    let source = BlobSource::new(git, changes.changes.clone(), opts.verbose)?;
    let binary = source.binary.clone();
    let log = source.log();
    let hook = match bypass {
        Bypass::Commit => "hook:pre-commit",
        Bypass::Push => "hook:pre-push",
    };
    let totals = run_pipeline(opts, hook, Box::new(source), &changes.changes)?;
    if let Some(log) = log {
        for l in log.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            eprintln!("guard: read {l}");
        }
    }
    for b in binary
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|_| !opts.quiet)
    {
        eprintln!("guard: note: {b} looks binary; not scanned");
    }
    if opts.verbose || (!opts.quiet && totals.files == 0 && totals.errors == 0) {
        eprintln!(
            "guard: scanned {} file(s), {} bytes ({} changed file(s) with added lines, {} deleted)",
            totals.files, totals.bytes, listed, changes.deleted
        );
    }
    verdict(&totals, bypass)
}

fn commit_msg(file: &Path, opts: &HookArgs) -> anyhow::Result<i32> {
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    // `git commit -v` appends the diff below this line; git drops it, and so do we.
    let scissors = b"# ------------------------ >8 ------------------------";
    let end = text
        .windows(scissors.len())
        .position(|w| w == scissors)
        .unwrap_or(text.len());
    let unit = Unit {
        origin: Origin::File {
            path: file.display().to_string(),
        },
        content: Content::Bytes(text[..end].to_vec()),
    };
    let totals = run_pipeline(
        opts,
        "hook:commit-msg",
        Box::new(OneUnit::new(Ok(unit))),
        &[],
    )?;
    if opts.verbose {
        eprintln!("guard: scanned the commit message, {} bytes", totals.bytes);
    }
    verdict(&totals, Bypass::Commit)
}

/// Runs the shared pipeline on `source`, keeping only findings on the added lines of `changes`
/// (all findings of units that are not changes). Returns the totals.
fn run_pipeline(
    opts: &HookArgs,
    hook: &str,
    source: Box<dyn Source>,
    changes: &[Change],
) -> anyhow::Result<crate::pipeline::Totals> {
    let config = Config::discover(opts.config.as_deref())?;
    let engine = scan_cmd::load_engine(&config, &opts.select, BackendArg::Auto, !opts.no_cache)?;
    let reveal = if opts.show_secrets {
        Reveal::Shown
    } else {
        Reveal::Redacted
    };
    let run_opts = RunOptions {
        limits: Limits::default(),
        findings: crate::finding::FindingOptions {
            known: opts.known.matcher(vault_fingerprints())?,
            ..scan_cmd::finding_options(reveal, true)
        },
        threads: None,
    };
    let added = AddedOnly::new(changes);
    let filters = scan_cmd::filters(&config, opts.baseline.as_deref())?
        .scope(Box::new(move |f| added.keeps(f)));
    let is_tty = std::io::stdout().is_terminal();
    let out: Box<dyn Write> = Box::new(std::io::BufWriter::new(std::io::stdout().lock()));
    let report = report::sink(
        opts.format.format(),
        out,
        engine.ruleset(),
        reveal,
        opts.color.enabled(is_tty),
    );
    let mut pipeline =
        Pipeline::new(filters, Box::new(|e| eprintln!("guard: error: {e}"))).sink(report);
    for sink in opts.known.sinks(run_opts.findings.known.is_some(), hook)? {
        pipeline = pipeline.sink(sink);
    }
    pipeline::run(&engine, vec![source], &run_opts, &mut pipeline, &())?;
    Ok(pipeline.finish()?)
}

/// The fingerprints the vault daemon publishes (`<vault>/fingerprints.fp`), which the hooks read
/// when no `--fingerprints` is given: a staged stored value blocks the commit and is reported as
/// a leak.
fn vault_fingerprints() -> Option<PathBuf> {
    #[cfg(feature = "vault")]
    {
        Some(crate::vault::VaultPaths::resolve(None).fingerprints())
    }
    #[cfg(not(feature = "vault"))]
    {
        None
    }
}

fn verdict(totals: &crate::pipeline::Totals, bypass: Bypass) -> anyhow::Result<i32> {
    let found = totals.findings;
    if totals.errors > 0 {
        eprintln!(
            "guard: {} file(s) could not be scanned; refusing to pass what was not read",
            totals.errors
        );
        return Ok(super::EXIT_ERROR);
    }
    if found == 0 {
        return Ok(0);
    }
    let (what, skip) = match bypass {
        Bypass::Commit => ("commit", "git commit --no-verify"),
        Bypass::Push => ("push", "git push --no-verify"),
    };
    eprintln!(
        "guard: {what} blocked: {found} secret(s) found in the lines being added (shown above, redacted).
  Remove the secret (and rotate it if it was real), then stage the fix.
  If it is not a secret, allowlist it:
    - put `guard:allow` in a comment on that line;
    - or add a path, regex or stop-word allowlist to guard.toml;
    - or record it in a baseline: guard scan --write-baseline .guard-baseline.json,
      and pass --baseline .guard-baseline.json to the hook.
  To {what} anyway, deliberately: {skip}"
    );
    Ok(1)
}

/// Hooks guard installs, with their shims (kept in the top-level `hooks/` directory).
const SHIMS: &[(&str, &str)] = &[
    ("pre-commit", include_str!("../../hooks/pre-commit")),
    ("pre-push", include_str!("../../hooks/pre-push")),
    ("commit-msg", include_str!("../../hooks/commit-msg")),
];

/// Every shim carries this line; a hook without it is the user's.
const MARKER: &str = "# guard-hook: ";

fn chained_path(hook: &Path) -> PathBuf {
    let mut s = hook.as_os_str().to_owned();
    s.push(".guard-chained");
    PathBuf::from(s)
}

fn is_ours(hook: &Path) -> bool {
    std::fs::read(hook).is_ok_and(|b| b.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()))
}

/// The hooks directory git uses here: `core.hooksPath` if set, else the common `.git/hooks`
/// (shared by every worktree).
fn hooks_dir() -> anyhow::Result<PathBuf> {
    let out = Git::default()
        .output(&["rev-parse", "--git-path", "hooks"], None)
        .context("not in a git repository?")?;
    let p = PathBuf::from(String::from_utf8_lossy(&out).trim_end_matches('\n'));
    Ok(if p.is_absolute() {
        p
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// `s` inside a double-quoted sh string.
fn sh_quote(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' | '\\' | '$' | '`' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

fn install(a: &InstallArgs) -> anyhow::Result<i32> {
    let dir = hooks_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe().context("cannot locate the guard binary")?;
    let exe = sh_quote(&exe.to_string_lossy());
    let wanted = |name: &str| match name {
        "pre-push" => a.pre_push,
        "commit-msg" => a.commit_msg,
        _ => true,
    };
    for (name, shim) in SHIMS.iter().filter(|(n, _)| wanted(n)) {
        let hook = dir.join(name);
        let chained = chained_path(&hook);
        let exists = hook.symlink_metadata().is_ok();
        if exists && !is_ours(&hook) {
            if chained.symlink_metadata().is_ok() && !a.force {
                bail!(
                    "{} exists and so does {}; remove one, or pass --force to replace the chained hook with the current one",
                    hook.display(),
                    chained.display()
                );
            }
            std::fs::rename(&hook, &chained)
                .with_context(|| format!("cannot move {} aside", hook.display()))?;
            eprintln!(
                "guard: kept your {name} hook as {}; it runs after guard passes",
                chained.display()
            );
        }
        let text = shim.replace("@GUARD@", &exe);
        let tmp = dir.join(format!(".{name}.guard-tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        set_executable(&tmp)?;
        std::fs::rename(&tmp, &hook)
            .with_context(|| format!("cannot install {}", hook.display()))?;
        eprintln!("guard: installed {}", hook.display());
    }
    Ok(0)
}

#[cfg(unix)]
fn set_executable(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", p.display()))
}

#[cfg(not(unix))]
fn set_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

fn uninstall() -> anyhow::Result<i32> {
    let dir = hooks_dir()?;
    let mut touched = false;
    for (name, _) in SHIMS {
        let hook = dir.join(name);
        let chained = chained_path(&hook);
        if hook.symlink_metadata().is_ok() {
            if !is_ours(&hook) {
                eprintln!("guard: {} is not guard's; left alone", hook.display());
                continue;
            }
            std::fs::remove_file(&hook)
                .with_context(|| format!("cannot remove {}", hook.display()))?;
            eprintln!("guard: removed {}", hook.display());
            touched = true;
        }
        if chained.symlink_metadata().is_ok() {
            std::fs::rename(&chained, &hook)
                .with_context(|| format!("cannot restore {}", hook.display()))?;
            eprintln!("guard: restored your {name} hook");
            touched = true;
        }
    }
    if !touched {
        eprintln!("guard: no guard hooks installed in {}", dir.display());
    }
    Ok(0)
}
