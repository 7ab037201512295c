//! `guard redact` (stdin → stdout, or a command's stdout and stderr) and `guard fingerprint`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::scan_cmd::{load_engine, BackendArg, RuleSelect};
use crate::config::Config;
use crate::engine::known::{KnownMatcher, KnownSet, MIN_VALUE_LEN};
use crate::engine::Engine;
use crate::fingerprint;
use crate::redact::jsonl::JsonLines;
use crate::redact::rsyslog::Rsyslog;
use crate::redact::spool::{LazySpool, LeakEvent};
use crate::redact::BlockRedactor;
use crate::redact::{RedactOptions, Redaction, Template, DEFAULT_TEMPLATE};

#[derive(Args)]
#[command(after_help = "Examples:
  make test 2>&1 | guard redact | tee build.log     redact a build log as it is written
  guard redact -- ./deploy.sh --verbose             run a command, redact its stdout and stderr
  guard redact --fingerprints ci.fp < app.log       also redact known values (see `guard fingerprint`)
  guard redact --jsonl --field msg                  JSON lines: redact the `msg` field of each record
  guard redact --rsyslog                            rsyslog mmexternal filter (contrib/rsyslog/)

Every rule match and every known value (raw, base64 at any alignment, hex, URL-encoded,
JSON-escaped) is replaced by the replacement text; every other byte is passed unchanged, binary
included. A complete line is written as soon as nothing pending can still cover it. guard.toml is
not read unless --config names it: a file in the working directory must not be able to switch
redaction off, and the inline `guard:allow` marker is ignored here for the same reason.

Exit status: 0; 1 with --fail-on-redact when something was redacted; 2 error (output stops: nothing
is passed unexamined). With a command, its exit status (or its signal) is guard's.")]
pub struct RedactArgs {
    /// Also redact the values fingerprinted in FILE (`guard fingerprint add`, `guard vault
    /// fingerprints`)
    #[arg(long, value_name = "FILE")]
    fingerprints: Option<PathBuf>,
    /// Exit 1 if anything was redacted (a CI step that must not print secrets)
    #[arg(long)]
    fail_on_redact: bool,
    /// Replacement text; `{id}` becomes the rule id or the stored secret's name
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_TEMPLATE)]
    replacement: String,
    /// Input is JSON lines: redact string values (of --field only, if given), re-serialize;
    /// a line that is not JSON is redacted as text
    #[arg(long, conflicts_with = "rsyslog")]
    jsonl: bool,
    /// With --jsonl: the field to redact (a dotted path reaches into objects; repeatable)
    #[arg(long, value_name = "NAME", requires = "jsonl")]
    field: Vec<String>,
    /// Speak rsyslog's mmexternal protocol (interface.input="fulljson"), fail-closed with the
    /// nonce echo of contrib/rsyslog/guard-redact.conf
    #[arg(long)]
    rsyslog: bool,
    /// Most bytes held waiting for a pending match before they are redacted wholesale (never
    /// less than the longest rule window plus two 1 MiB reads)
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    max_hold: usize,
    /// Where leak events for known values are written [default: $XDG_STATE_HOME/guard/leaks]
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Config file with extra rules and allowlists (read only when given)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    select: RuleSelect,
    /// Run this command, redacting its stdout and stderr separately
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<std::ffi::OsString>,
}

#[derive(Subcommand)]
pub enum FingerprintCmd {
    /// Read a value from stdin and add its fingerprints under NAME (the value is never stored)
    #[command(after_help = "Examples:
  printf %s \"$DEPLOY_TOKEN\" | guard fingerprint add deploy-token --file ci.fp
  guard fingerprint add db-password --file ci.fp < /run/secrets/db

One trailing newline is dropped. Values shorter than 8 bytes are refused. The file is created
0600 with a fresh random key; adding a NAME again replaces its fingerprints.",
        // `--version` here is the secret's version, not guard's.
        disable_version_flag = true)]
    Add {
        /// The secret's name, written in place of the value: [REDACTED:NAME]
        name: String,
        /// Fingerprint file (created if missing)
        #[arg(long, value_name = "FP")]
        file: PathBuf,
        /// Version number recorded with the fingerprints (leak events name it)
        #[arg(long, default_value_t = 1)]
        version: u32,
    },
    /// Add many values at once: lines `NAME<TAB>VALUE` on stdin (a CI job's masked variables)
    #[command(
        after_help = "Example:\n  env | grep ^DEPLOY_ | tr = '\\t' | guard fingerprint add-many --file ci.fp"
    )]
    AddMany {
        #[arg(long, value_name = "FP")]
        file: PathBuf,
    },
    /// List the names in a fingerprint file
    List {
        #[arg(long, value_name = "FP")]
        file: PathBuf,
    },
    /// Remove NAME from a fingerprint file
    Remove {
        name: String,
        #[arg(long, value_name = "FP")]
        file: PathBuf,
    },
}

pub fn run_fingerprint(c: FingerprintCmd) -> anyhow::Result<i32> {
    match c {
        FingerprintCmd::Add {
            name,
            file,
            version,
        } => {
            let mut value = Vec::new();
            io::stdin()
                .lock()
                .read_to_end(&mut value)
                .context("reading the value from stdin")?;
            if value.ends_with(b"\n") {
                value.pop();
                if value.ends_with(b"\r") {
                    value.pop();
                }
            }
            if value.len() < MIN_VALUE_LEN {
                anyhow::bail!(
                    "the value on stdin is {} bytes; values shorter than {MIN_VALUE_LEN} are refused (they would redact ordinary text and are easy to guess from a fingerprint)",
                    value.len()
                );
            }
            let mut set = fingerprint::load_or_new(&file)?;
            set.remove(&name);
            set.add(&name, version, &value)?;
            zero(&mut value);
            fingerprint::save(&file, &set)?;
            let n = set.entries().iter().filter(|e| e.id == name).count();
            eprintln!(
                "guard: {name}: {n} fingerprints written to {}",
                file.display()
            );
            Ok(0)
        }
        FingerprintCmd::AddMany { file } => {
            let mut input = Vec::new();
            io::stdin()
                .lock()
                .read_to_end(&mut input)
                .context("reading NAME<TAB>VALUE lines from stdin")?;
            let mut set = fingerprint::load_or_new(&file)?;
            let mut added = 0;
            for (i, line) in input.split(|&b| b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    continue;
                }
                let Some(tab) = memchr::memchr(b'\t', line) else {
                    anyhow::bail!("line {}: expected NAME<TAB>VALUE", i + 1);
                };
                let name = std::str::from_utf8(&line[..tab])
                    .map_err(|_| anyhow::anyhow!("line {}: the name is not UTF-8", i + 1))?;
                set.remove(name);
                set.add(name, 1, &line[tab + 1..])
                    .map_err(|e| anyhow::anyhow!("line {} ({name}): {e}", i + 1))?;
                added += 1;
            }
            zero(&mut input);
            fingerprint::save(&file, &set)?;
            eprintln!(
                "guard: {added} values fingerprinted into {}",
                file.display()
            );
            Ok(0)
        }
        FingerprintCmd::List { file } => {
            let set = fingerprint::load(&file)?;
            let mut names: Vec<(&str, u32)> = set
                .entries()
                .iter()
                .map(|e| (e.id.as_str(), e.version))
                .collect();
            names.dedup();
            let mut out = io::stdout().lock();
            for (n, v) in names {
                writeln!(out, "{n}\tversion {v}")?;
            }
            Ok(0)
        }
        FingerprintCmd::Remove { name, file } => {
            let mut set = fingerprint::load(&file)?;
            if set.remove(&name) == 0 {
                anyhow::bail!("{name} is not in {}", file.display());
            }
            fingerprint::save(&file, &set)?;
            Ok(0)
        }
    }
}

fn zero(v: &mut [u8]) {
    for b in v.iter_mut() {
        // SAFETY: a plain volatile store into an owned, initialised byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

/// Builds the redaction engine: builtin rules (plus --config only when named), no inline marker.
fn redaction_engine(config: Option<&Path>, select: &RuleSelect) -> anyhow::Result<Engine> {
    let mut cfg = match config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    cfg.allowlist.inline = false;
    load_engine(&cfg, select, BackendArg::Auto, true)
}

/// The engine `guard mcp` redacts and scans with (the current directory's `guard.toml`, the
/// inline marker off, as `guard redact`).
#[cfg(feature = "mcp")]
pub(super) fn mcp_engine() -> anyhow::Result<Engine> {
    redaction_engine(None, &RuleSelect::default())
}

fn known_matcher(path: Option<&Path>) -> anyhow::Result<Option<Arc<KnownMatcher>>> {
    Ok(path.map(fingerprint::load_matcher).transpose()?)
}

/// Writes leak events for known values; a spool that cannot be written is reported once.
struct Events {
    spool: LazySpool,
    count: u64,
}

impl Events {
    fn new(dir: Option<PathBuf>, quiet: bool) -> Events {
        Events {
            spool: LazySpool::new(dir, quiet),
            count: 0,
        }
    }

    fn record(&mut self, known: &KnownSet, r: &Redaction, source: &str, base: u64) {
        self.count += 1;
        if let Some(ev) = LeakEvent::of(known, r, source, base) {
            self.spool.record(&ev);
        }
    }
}

pub fn run_redact(a: RedactArgs) -> anyhow::Result<i32> {
    if a.rsyslog {
        return run_rsyslog(&a);
    }
    // The fingerprint file is read while the engine loads (a large set takes ~0.1 s).
    let (engine, known) = std::thread::scope(|s| {
        let known = s.spawn(|| known_matcher(a.fingerprints.as_deref()));
        let engine = redaction_engine(a.config.as_deref(), &a.select);
        (
            engine,
            known.join().expect("the fingerprint loader panicked"),
        )
    });
    let (engine, known) = (engine?, known?);
    let opts = RedactOptions {
        template: Template::parse(&a.replacement),
        max_hold: a.max_hold,
    };
    let mut events = Events::new(a.spool.clone(), false);
    let redacted = if !a.command.is_empty() {
        return run_command(&a, &engine, known, opts, &mut events);
    } else if a.jsonl {
        let j = JsonLines::new(&engine, known.clone(), opts, a.field.clone())?;
        let stdin = io::stdin();
        let mut input = stdin.lock();
        let mut out = io::stdout().lock();
        let mut n = 0u64;
        j.run(&mut input, &mut out, &mut |r, _, base| {
            n += 1;
            if let Some(k) = &known {
                events.record(k.set(), r, "redact:stdin", base);
            }
        })?;
        n
    } else {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        let mut out = io::stdout().lock();
        copy_redacted(
            &engine,
            (known.as_ref(), a.fingerprints.as_deref()),
            opts,
            &mut input,
            &mut out,
            "redact:stdin",
            &mut events,
        )?
    };
    Ok(if a.fail_on_redact && redacted > 0 {
        1
    } else {
        0
    })
}

/// Streams `input` to `out` through a redactor; returns how many replacements were written.
/// The known values are reloaded when their file changes (the vault daemon rewrites it after a
/// rotation).
fn copy_redacted(
    engine: &Engine,
    (known, file): (Option<&Arc<KnownMatcher>>, Option<&std::path::Path>),
    opts: RedactOptions,
    input: &mut dyn crate::redact::Input,
    out: &mut dyn Write,
    source: &str,
    events: &mut Events,
) -> anyhow::Result<u64> {
    let mut n = 0u64;
    let mut watch = file.map(fingerprint::Watch::new);
    crate::redact::copy_stream_watching(
        engine,
        known.cloned(),
        opts,
        input,
        out,
        &mut |r, x| {
            n += 1;
            if let Some(k) = r.known() {
                events.record(k.set(), x, source, 0);
            }
        },
        watch.as_mut(),
    )?;
    Ok(n)
}

fn run_rsyslog(a: &RedactArgs) -> anyhow::Result<i32> {
    // Nothing may reach stdout or stderr but replies: errors leave the engine unset, and every
    // message is then answered `{}` (no ack: rsyslog's fail-closed config quarantines it).
    let engine = redaction_engine(a.config.as_deref(), &a.select).ok();
    let known = a
        .fingerprints
        .as_deref()
        .and_then(|p| fingerprint::load_matcher(p).ok());
    let engine = match (&engine, a.fingerprints.is_some(), &known) {
        (Some(e), false, _) | (Some(e), true, Some(_)) => Some(e),
        _ => None, // a fingerprint file was named but did not load: refuse everything
    };
    let opts = RedactOptions {
        template: Template::parse(&a.replacement),
        max_hold: a.max_hold,
    };
    let mut r = Rsyslog {
        redactor: engine.and_then(|e| BlockRedactor::new(e, known.clone(), opts).ok()),
    };
    let mut events = Events::new(a.spool.clone(), true);
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut out = io::stdout().lock();
    let mut watch = a
        .fingerprints
        .as_deref()
        .filter(|_| known.is_some())
        .map(|p| fingerprint::Watch::new(p).quiet());
    let _ = r.run(
        &mut input,
        &mut out,
        &mut |x, _, set| {
            if let Some(set) = set {
                events.record(set, x, "rsyslog", 0);
            }
        },
        watch.as_mut(),
    );
    Ok(0)
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

fn run_command(
    a: &RedactArgs,
    engine: &Engine,
    known: Option<Arc<KnownMatcher>>,
    opts: RedactOptions,
    events: &mut Events,
) -> anyhow::Result<i32> {
    use std::process::{Command, Stdio};
    let program = &a.command[0];
    let mut child = match Command::new(program)
        .args(&a.command[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("guard: {}: command not found", program.to_string_lossy());
            return Ok(127);
        }
        Err(e) => {
            eprintln!("guard: {}: {e}", program.to_string_lossy());
            return Ok(126);
        }
    };
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: installs an async-signal-safe handler that only calls kill(2).
        unsafe { libc::signal(sig, forward as *const () as usize) };
    }
    let mut cout = child.stdout.take().expect("piped");
    let mut cerr = child.stderr.take().expect("piped");
    let name = program.to_string_lossy().into_owned();
    let (n_out, n_err) = std::thread::scope(|s| {
        let known2 = known.clone();
        let opts2 = opts.clone();
        let name2 = name.clone();
        let spool = a.spool.clone();
        let h = s.spawn(move || {
            let mut ev = Events::new(spool, false);
            let mut err = io::stderr().lock();
            let r = copy_redacted(
                engine,
                (known2.as_ref(), a.fingerprints.as_deref()),
                opts2,
                &mut cerr,
                &mut err,
                &format!("redact:stderr of {name2}"),
                &mut ev,
            );
            r
        });
        let mut out = io::stdout().lock();
        let r = copy_redacted(
            engine,
            (known.as_ref(), a.fingerprints.as_deref()),
            opts,
            &mut cout,
            &mut out,
            &format!("redact:stdout of {name}"),
            events,
        );
        (r, h.join().expect("stderr thread"))
    });
    let status = child.wait().context("waiting for the command")?;
    CHILD.store(0, Ordering::SeqCst);
    let redacted = n_out? + n_err?;
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        // Die of the same signal, as the command did.
        // SAFETY: restoring the default action and signalling ourselves.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
        }
        return Ok(128 + sig);
    }
    let code = status.code().unwrap_or(1);
    Ok(if code == 0 && a.fail_on_redact && redacted > 0 {
        1
    } else {
        code
    })
}
