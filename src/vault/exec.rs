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
//! - [`Masker`] is the stand-in for the engine's stream redactor, with the interface that one will
//!   keep: `Masker::new(named values)` then `filter(reader, writer)`. It replaces every exact
//!   occurrence of an injected value with `[REDACTED:<secret name>]`, leftmost-longest, finds a
//!   value split across any read boundary by holding back only the longest suffix that is still a
//!   proper prefix of some value (< max value length bytes), and writes + flushes everything else
//!   immediately — so complete lines are never delayed. Swapping in the fingerprint-based engine
//!   redactor (encodings, rules) only has to honour the same `filter` contract.

use aho_corasick::{AhoCorasick, MatchKind};
use serde::Deserialize;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

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

/// Masks exact occurrences of known values in a byte stream (see the module doc for the contract).
#[derive(Clone)]
pub struct Masker {
    inner: Arc<MaskerInner>,
}

struct MaskerInner {
    ac: Option<AhoCorasick>,
    values: Vec<Zeroizing<Vec<u8>>>,
    replacements: Vec<Vec<u8>>,
    max_len: usize,
}

impl Masker {
    /// `values`: (secret name, value). Empty values are ignored.
    pub fn new<'a>(values: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut vals = Vec::new();
        let mut reps = Vec::new();
        for (name, v) in values {
            if !v.is_empty() {
                vals.push(Zeroizing::new(v.to_vec()));
                reps.push(format!("[REDACTED:{name}]").into_bytes());
            }
        }
        let ac = (!vals.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(vals.iter().map(|v| v.as_slice()))
                .expect("literal patterns should always build")
        });
        let max_len = vals.iter().map(|v| v.len()).max().unwrap_or(0);
        Self {
            inner: Arc::new(MaskerInner {
                ac,
                values: vals,
                replacements: reps,
                max_len,
            }),
        }
    }

    /// Length of the longest suffix of `buf` that is a proper prefix of some value.
    fn holdback(&self, buf: &[u8]) -> usize {
        let max = self.inner.max_len.saturating_sub(1).min(buf.len());
        (1..=max)
            .rev()
            .find(|&k| {
                let tail = &buf[buf.len() - k..];
                self.inner
                    .values
                    .iter()
                    .any(|v| v.len() > k && v.starts_with(tail))
            })
            .unwrap_or(0)
    }

    /// Mask what can be decided in `buf`, writing it to `out`; returns how many bytes of `buf`
    /// were consumed (the rest must be kept and prefixed to the next read). `eof` flushes all.
    pub fn mask_chunk(&self, buf: &[u8], eof: bool, out: &mut Vec<u8>) -> usize {
        let Some(ac) = &self.inner.ac else {
            out.extend_from_slice(buf);
            return buf.len();
        };
        let safe = if eof {
            buf.len()
        } else {
            buf.len() - self.holdback(buf)
        };
        let mut pos = 0;
        for m in ac.find_iter(buf) {
            if m.start() >= safe {
                break;
            }
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(&self.inner.replacements[m.pattern().as_usize()]);
            pos = m.end();
        }
        let cut = safe.max(pos);
        out.extend_from_slice(&buf[pos..cut]);
        cut
    }

    /// Copy `reader` to `writer`, masking; flushes after every read so output stays live.
    pub fn filter<R: Read, W: Write>(&self, mut reader: R, mut writer: W) -> std::io::Result<()> {
        let mut pending: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
        let mut chunk = Zeroizing::new(vec![0u8; 64 * 1024]);
        let mut out: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let eof = n == 0;
            pending.extend_from_slice(&chunk[..n]);
            out.clear();
            let used = self.mask_chunk(&pending, eof, &mut out);
            pending.drain(..used);
            if !out.is_empty() {
                writer.write_all(&out)?;
                writer.flush()?;
            }
            if eof {
                return Ok(());
            }
        }
    }
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
pub struct Launch<'a> {
    /// The resolved command: executable (and the descriptor it was hashed from), directory, and
    /// the clean environment it runs with; the secrets are added on top.
    pub cmd: &'a crate::vault::command::Resolved,
    pub argv: &'a [String],
    /// (environment variable, secret name, value).
    pub secrets: Vec<(String, String, crate::vault::SecretValue)>,
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
    for (env, _, value) in &l.secrets {
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
    let masker = Masker::new(
        l.secrets
            .iter()
            .map(|(_, name, v)| (name.as_str(), v.expose_secret().as_bytes())),
    );
    let child = cmd.spawn()?;
    drop(cmd); // closes our copies of the pipes' write ends
    let m2 = masker.clone();
    let threads = vec![
        std::thread::spawn(move || {
            masker.filter(std::fs::File::from(out_r), std::fs::File::from(out))
        }),
        std::thread::spawn(move || m2.filter(std::fs::File::from(err_r), std::fs::File::from(err))),
    ];
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
    use proptest::prelude::*;

    fn run(m: &Masker, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            pending.extend_from_slice(c);
            let used = m.mask_chunk(&pending, i + 1 == chunks.len(), &mut out);
            pending.drain(..used);
        }
        out
    }

    #[test]
    fn masks_whole_and_split_values() {
        let m = Masker::new([("api", &b"fake-secret-123"[..]), ("db", &b"pw-xyz"[..])]);
        assert_eq!(
            run(&m, &[b"a fake-secret-123 b pw-xyz\n", b""]),
            b"a [REDACTED:api] b [REDACTED:db]\n"
        );
        assert_eq!(
            run(&m, &[b"x fake-se", b"cret-123 y", b""]),
            b"x [REDACTED:api] y"
        );
        assert_eq!(run(&m, &[b"fake-secret-12", b"4", b""]), b"fake-secret-124");
    }

    #[test]
    fn complete_lines_are_not_held_back() {
        let m = Masker::new([("api", &b"fake-secret-123"[..])]);
        let mut out = Vec::new();
        let used = m.mask_chunk(b"hello world\n", false, &mut out);
        assert_eq!(used, 12);
        assert_eq!(out, b"hello world\n");
        // only a possible prefix is held, never more than max_len-1 bytes
        out.clear();
        let used = m.mask_chunk(b"log: fake-sec", false, &mut out);
        assert_eq!(out, b"log: ");
        assert_eq!(13 - used, 8);
    }

    #[test]
    fn filter_streams_through_a_pipe() {
        let m = Masker::new([("t", &b"fake-token-abc"[..])]);
        let mut out = Vec::new();
        m.filter(&b"1 fake-token-abc 2 fake-token-ab"[..], &mut out)
            .unwrap();
        assert_eq!(out, b"1 [REDACTED:t] 2 fake-token-ab");
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_output(
            text in proptest::collection::vec(prop_oneof![Just(b"fake-val".to_vec()), Just(b"fake-value-long".to_vec()), Just(b"fa".to_vec()), Just(b"x\n".to_vec()), Just(b"-".to_vec())], 0..30),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let m = Masker::new([("a", &b"fake-val"[..]), ("b", &b"fake-value-long"[..])]);
            let input: Vec<u8> = text.concat();
            let whole = run(&m, &[&input, b""]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for c in cuts { chunks.push(&input[prev..c]); prev = c; }
            chunks.push(&input[prev..]);
            chunks.push(b"");
            prop_assert_eq!(run(&m, &chunks), whole.clone());
            // no value survives, and nothing but values changed
            let w = String::from_utf8(whole).unwrap();
            prop_assert!(!w.contains("fake-val"));
            let restored = w.replace("[REDACTED:a]", "fake-val").replace("[REDACTED:b]", "fake-value-long");
            prop_assert_eq!(restored.as_bytes(), &input[..]);
        }
    }

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
