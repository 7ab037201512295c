//! `guard exec` support: the project's secret declarations, the output masker, and the launch of
//! the child by the daemon.
//!
//! Design decisions:
//! - A project declares what it needs in `.guard/secrets.toml` (`[[secret]] name/env/ttl`,
//!   optional top-level `context`), found by walking up from the working directory;
//!   agent-secrets' `.secrets.json` is accepted too (its `client_id` is ignored: a client id is
//!   self-declared and proves nothing — approvals name the command, see [`crate::vault::command`]).
//! - The *daemon* launches the child ([`launch`]) on the caller's stdio, passed over the socket:
//!   values exist only in the daemon and in the child's environment, never in a client.
//! - The child's stdout and stderr go through the engine's stream redactor ([`crate::redact`]):
//!   every builtin rule, plus the fingerprints of the injected values under a fresh key, so a
//!   value is replaced by `[REDACTED:<secret name>]` raw and encoded (base64 at any alignment,
//!   hex, URL-encoded, JSON-escaped), split across reads or not; a complete line is written at
//!   once. A value shorter than 8 bytes is refused: it cannot be redacted reliably.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no .guard/secrets.toml or .secrets.json in {start} or any parent directory")]
    NoProjectFile { start: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid project file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub name: String,
    pub env: String,
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct ProjectFile {
    pub path: PathBuf,
    /// The directory the project file belongs to (parent of `.guard/`).
    pub root: PathBuf,
    pub context: Option<String>,
    pub secrets: Vec<SecretSpec>,
    /// Variables of the caller passed through to the command (`env = [...]`): part of the
    /// approval's fingerprint and shown to the human. Nothing else of the caller's environment
    /// reaches the command (see [`crate::vault::command`]).
    pub env: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    context: Option<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    secret: Vec<TomlSecret>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlSecret {
    name: String,
    env: Option<String>,
    ttl: Option<String>,
}
#[derive(Deserialize)]
struct JsonFile {
    #[serde(default)]
    secrets: Vec<JsonSecret>,
    context: Option<String>,
    #[serde(default)]
    env: Vec<String>,
}
#[derive(Deserialize)]
struct JsonSecret {
    name: String,
    env_var: Option<String>,
    ttl: Option<String>,
}

/// (name, env var, ttl) as written in either file format.
type RawSecret = (String, Option<String>, Option<String>);

fn default_env(name: &str) -> String {
    name.to_ascii_uppercase().replace(['-', '.'], "_")
}

impl ProjectFile {
    /// Find and parse the nearest project file from `start` upward.
    pub fn find(start: &Path) -> Result<Self, ExecError> {
        let mut dir = Some(start);
        while let Some(d) = dir {
            let t = d.join(".guard/secrets.toml");
            if t.is_file() {
                return Self::load(&t);
            }
            let j = d.join(".secrets.json");
            if j.is_file() {
                return Self::load(&j);
            }
            dir = d.parent();
        }
        Err(ExecError::NoProjectFile {
            start: start.into(),
        })
    }

    pub fn load(path: &Path) -> Result<Self, ExecError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExecError::Read {
            path: path.into(),
            source,
        })?;
        let parse = |reason: String| ExecError::Parse {
            path: path.into(),
            reason,
        };
        let ttl = |t: Option<String>| -> Result<Option<Duration>, ExecError> {
            t.map(|t| crate::vault::config::parse_duration(&t).map_err(|e| parse(e.to_string())))
                .transpose()
        };
        let is_json = path.extension().is_some_and(|e| e == "json");
        let (context, pass_env, raw): (_, _, Vec<RawSecret>) = if is_json {
            let f: JsonFile = serde_json::from_str(&text).map_err(|e| parse(e.to_string()))?;
            (
                f.context,
                f.env,
                f.secrets
                    .into_iter()
                    .map(|s| (s.name, s.env_var, s.ttl))
                    .collect(),
            )
        } else {
            let f: TomlFile = toml::from_str(&text).map_err(|e| parse(e.message().to_string()))?;
            (
                f.context,
                f.env,
                f.secret
                    .into_iter()
                    .map(|s| (s.name, s.env, s.ttl))
                    .collect(),
            )
        };
        let valid_env = |env: &str| {
            !env.is_empty()
                && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !env.as_bytes()[0].is_ascii_digit()
        };
        for e in &pass_env {
            if !valid_env(e) {
                return Err(parse(format!(
                    "invalid environment variable name {e:?} in env"
                )));
            }
        }
        let mut secrets = Vec::new();
        for (name, env, t) in raw {
            if !crate::vault::valid_name(&name) {
                return Err(parse(format!("invalid secret name {name:?}")));
            }
            let env = env.unwrap_or_else(|| default_env(&name));
            if !valid_env(&env) {
                return Err(parse(format!("invalid environment variable name {env:?}")));
            }
            secrets.push(SecretSpec {
                name,
                env,
                ttl: ttl(t)?,
            });
        }
        let parent = path.parent().unwrap_or(Path::new("."));
        let root = if parent.file_name().is_some_and(|n| n == ".guard") {
            parent.parent().unwrap_or(parent)
        } else {
            parent
        };
        Ok(Self {
            path: path.into(),
            root: root.into(),
            context,
            secrets,
            env: pass_env,
        })
    }
}

/// The redaction engine of the exec path: the builtin rules, compiled once per daemon (the
/// compiled database is cached on disk like the CLI's). The inline `guard:allow` marker is off:
/// the command's output must not be able to switch redaction off.
fn redaction_engine() -> Result<Arc<crate::engine::Engine>, String> {
    static ENGINE: std::sync::OnceLock<Result<Arc<crate::engine::Engine>, String>> =
        std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let rules = crate::rules::Ruleset::builtin().map_err(|e| e.to_string())?;
            let mut allow = crate::engine::Allowlist::new();
            allow.inline = false;
            let cache = crate::cache::DirCache::from_env()
                .map(|c| Arc::new(c) as Arc<dyn crate::engine::DatabaseCache>);
            crate::engine::Engine::builder(rules)
                .allowlist(allow)
                .database_cache(cache)
                .build()
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Builds the redaction engine and its stream database in the background (the daemon calls it
/// at start), so the first `guard exec` does not wait for a cold compile.
pub fn warm_redaction() {
    std::thread::spawn(|| {
        if let Ok(e) = redaction_engine() {
            let _ = crate::engine::StreamScanner::new(&e);
        }
    });
}

/// The fingerprints of the injected values, under a fresh key. A value too short to fingerprint
/// is refused: it could not be redacted from the output (and would redact noise).
fn injected_fingerprints(
    secrets: &[Injected],
) -> std::io::Result<Arc<crate::engine::known::KnownMatcher>> {
    use crate::engine::known::{KnownMatcher, KnownSet};
    let mut set = KnownSet::new(crate::fingerprint::random_key()?);
    for s in secrets {
        set.add(&s.id, s.version, s.value.expose_secret().as_bytes())
            .map_err(|e| std::io::Error::other(format!("secret {}: {e}", s.id)))?;
    }
    Ok(Arc::new(KnownMatcher::new(set)))
}

/// Copies a child's output through the engine's redactor: every rule plus the injected values
/// (raw and encoded). An engine error stops the copy: nothing passes unexamined.
fn redact_output(
    engine: Arc<crate::engine::Engine>,
    known: Arc<crate::engine::known::KnownMatcher>,
    from: std::fs::File,
    mut to: std::fs::File,
    spool: Option<(std::path::PathBuf, String)>,
) -> std::io::Result<()> {
    use crate::redact::spool::{LeakEvent, Spool};
    let mut from = from;
    let set = known.clone();
    let mut events = spool.and_then(|(dir, source)| Some((Spool::open(&dir).ok()?, source)));
    crate::redact::copy_stream(
        &engine,
        Some(known),
        crate::redact::RedactOptions::default(),
        &mut from,
        &mut to,
        &mut |_, r| {
            if let Some((spool, source)) = &mut events {
                if let Some(ev) = LeakEvent::of(set.set(), r, source, 0) {
                    // The output is redacted either way; a lost event is logged.
                    if let Err(e) = spool.record(&ev) {
                        eprintln!("guard vault daemon: leak event not recorded: {e}");
                    }
                }
            }
        },
    )
    .map_err(|e| match e {
        crate::redact::RedactError::Io(io) => io,
        other => std::io::Error::other(other.to_string()),
    })
}

/// Signals `guard exec` forwards to the command the daemon runs for it (which is not in the
/// CLI's process group, so Ctrl-C in the terminal would not reach it otherwise).
pub const FORWARDED_SIGNALS: &[i32] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// What the daemon needs to launch an approved command.
/// A secret put into the command's environment.
pub struct Injected {
    pub env: String,
    /// Its fingerprint id (`name`, or `context/name`): what redaction and leak events name.
    pub id: String,
    pub version: u32,
    pub value: crate::vault::SecretValue,
}

pub struct Launch<'a> {
    /// The resolved command: executable (and the descriptor it was hashed from), directory, and
    /// the clean environment it runs with; the secrets are added on top.
    pub cmd: &'a crate::vault::command::Resolved,
    pub argv: &'a [String],
    pub secrets: Vec<Injected>,
    /// Where a value seen in the command's output is reported (a leak event), and as what.
    pub spool: Option<(std::path::PathBuf, String)>,
    /// The caller's stdin, stdout, stderr (received over the socket).
    pub stdio: [std::os::fd::OwnedFd; 3],
    pub umask: Option<u32>,
}

/// A launched child: its process group, and the masker threads copying its output.
pub struct Running {
    child: std::process::Child,
    threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
}

fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors on success; each is wrapped once.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Start the child in its own process group with the values in its environment only; its
/// stdout/stderr go through a [`Masker`] of the injected values to the caller's descriptors.
pub fn launch(l: Launch<'_>) -> std::io::Result<Running> {
    use std::os::unix::process::CommandExt;
    let [stdin, out, err] = l.stdio;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    use std::os::fd::AsRawFd;
    // A binary runs from the descriptor it was hashed from: a path swapped since then does not
    // matter. A script's interpreter opens it by path again (THREAT_MODEL.md: the short window).
    let program = match &l.cmd.exe_file {
        Some(f) if !l.cmd.script && Path::new("/proc/self/fd").is_dir() => {
            PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
        }
        _ => l.cmd.exe.clone(),
    };
    let mut cmd = std::process::Command::new(program);
    cmd.arg0(&l.argv[0])
        .args(&l.argv[1..])
        .current_dir(&l.cmd.cwd)
        .env_clear()
        .envs(l.cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::from(stdin))
        .stdout(std::process::Stdio::from(out_w))
        .stderr(std::process::Stdio::from(err_w));
    for Injected { env, value, .. } in &l.secrets {
        cmd.env(env, value.expose_secret());
    }
    let umask = l.umask;
    // SAFETY: setpgid and umask are async-signal-safe and touch only the new process.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            if let Some(m) = umask {
                libc::umask((m & 0o777) as libc::mode_t);
            }
            Ok(())
        });
    }
    let engine = redaction_engine().map_err(std::io::Error::other)?;
    let known = injected_fingerprints(&l.secrets)?;
    let child = cmd.spawn()?;
    drop(cmd); // closes our copies of the pipes' write ends
    let threads = [(out_r, out, "stdout"), (err_r, err, "stderr")]
        .into_iter()
        .map(|(from, to, stream)| {
            let (engine, known) = (engine.clone(), known.clone());
            let spool = l.spool.clone().map(|(d, s)| (d, format!("{s} {stream}")));
            std::thread::spawn(move || {
                redact_output(
                    engine,
                    known,
                    std::fs::File::from(from),
                    std::fs::File::from(to),
                    spool,
                )
            })
        })
        .collect();
    Ok(Running { child, threads })
}

impl Running {
    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Wait for the child, then for its output to drain. Blocking.
    pub fn wait(mut self) -> std::io::Result<std::process::ExitStatus> {
        let status = self.child.wait()?;
        for t in self.threads {
            let _ = t.join();
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(".guard")).unwrap();
        std::fs::create_dir_all(d.path().join("sub/dir")).unwrap();
        std::fs::write(d.path().join(".guard/secrets.toml"),
            "context = \"dev\"\n[[secret]]\nname = \"api_token\"\nenv = \"API_TOKEN\"\nttl = \"30m\"\n[[secret]]\nname = \"db-pass\"\n").unwrap();
        let p = ProjectFile::find(&d.path().join("sub/dir")).unwrap();
        assert_eq!(p.root, d.path());
        assert_eq!(p.context.as_deref(), Some("dev"));
        assert_eq!(
            p.secrets[0],
            SecretSpec {
                name: "api_token".into(),
                env: "API_TOKEN".into(),
                ttl: Some(Duration::from_secs(1800))
            }
        );
        assert_eq!(p.secrets[1].env, "DB_PASS");
        let j = tempfile::tempdir().unwrap();
        std::fs::write(j.path().join(".secrets.json"),
            r#"{"secrets":[{"name":"github_token","env_var":"GITHUB_TOKEN"},{"name":"api_key","env_var":"API_KEY","ttl":"30m"}],"client_id":"my-project"}"#).unwrap();
        let p = ProjectFile::find(j.path()).unwrap();
        assert_eq!(p.secrets[1].env, "API_KEY");
        assert!(ProjectFile::find(Path::new("/")).is_err());
    }
}
