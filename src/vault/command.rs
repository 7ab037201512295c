//! What runs: the identity of a command that an approval names.
//!
//! Design decision: an approval must name what runs, not who claims to run it — a client id is
//! just a string an agent can copy. So an approval is bound to a *fingerprint*: SHA-256 over
//! - the resolved executable (argv[0] searched in the caller's `PATH`, symlinks resolved) and the
//!   SHA-256 of its content — for a script started by its shebang that is the script itself;
//! - every argument, verbatim (so `sh -c '…'` binds the script text);
//! - the path and content hash of every argument that names a regular file (`python3 deploy.py`
//!   binds `deploy.py`);
//! - the working directory (the project: relative paths resolve against it);
//! - the environment variables that choose code inside the command (`LD_PRELOAD`, `BASH_ENV`,
//!   `PYTHONPATH`, `NODE_OPTIONS`, … see [`CODE_ENV`]), when set.
//!
//! A changed script, another argument, another directory or an injected loader variable gives
//! another fingerprint, hence a new approval. What the command loads *later* by name (a sourced
//! file, a program found on `PATH`, an import) is not pinned: THREAT_MODEL.md says so.
//! Content hashes are cached by (device, inode, size, mtime, ctime): ctime cannot be set back by
//! a user, so a rewrite always misses the cache.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Environment variables that decide which code an approved command runs. `LD_*` as a prefix.
pub const CODE_ENV: &[&str] = &[
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "IFS",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONINSPECT",
    "PYTHONUSERBASE",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "RUBYLIB",
    "RUBYOPT",
    "GCONV_PATH",
    "GIT_EXEC_PATH",
    "GIT_CONFIG_PARAMETERS",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "CLASSPATH",
    "GEM_PATH",
    "GEM_HOME",
];

pub fn is_code_env(name: &str) -> bool {
    name.starts_with("LD_") || CODE_ENV.contains(&name)
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("empty command")]
    Empty,
    #[error("working directory {dir}: {source}")]
    Cwd {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("command {name:?} not found (searched PATH)")]
    NotFound { name: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A command as the caller asks to run it.
pub struct CommandSpec<'a> {
    pub argv: &'a [String],
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
}

/// A resolved command: what will be executed, and its fingerprint.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub exe: PathBuf,
    pub cwd: PathBuf,
    pub fingerprint: String,
    /// What a human is shown: executable, arguments, directory, short fingerprint.
    pub display: String,
}

#[derive(Serialize)]
struct Canonical<'a> {
    v: u32,
    exe: &'a Path,
    exe_sha256: &'a str,
    args: &'a [String],
    files: Vec<(usize, PathBuf, String)>,
    cwd: &'a Path,
    env: Vec<(&'a str, &'a str)>,
}

/// (device, inode, size, mtime s, mtime ns, ctime s, ctime ns) of a file.
type FileStamp = (u64, u64, u64, i64, i64, i64, i64);

/// Content hashes keyed by [`FileStamp`].
#[derive(Default)]
pub struct HashCache {
    map: HashMap<FileStamp, String>,
}

impl HashCache {
    /// SHA-256 (hex) of a regular file's content.
    pub fn sha256(&mut self, path: &Path) -> Result<String, CommandError> {
        let read = |source| CommandError::Read {
            path: path.into(),
            source,
        };
        let m = std::fs::metadata(path).map_err(read)?;
        let key = (
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        );
        if let Some(h) = self.map.get(&key) {
            return Ok(h.clone());
        }
        let mut f = std::fs::File::open(path).map_err(read)?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(read)?;
        let hex = hex::encode(h.finalize());
        if self.map.len() > 4096 {
            self.map.clear();
        }
        self.map.insert(key, hex.clone());
        Ok(hex)
    }
}

/// `argv[0]` as `execvp` would find it, with the caller's `PATH` and working directory.
fn find_exe(name: &str, cwd: &Path, path_var: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = cwd.join(name);
        return runnable(&p).then_some(p);
    }
    path_var
        .unwrap_or("/usr/local/bin:/usr/bin:/bin")
        .split(':')
        .map(|d| {
            if d.is_empty() {
                cwd.to_path_buf()
            } else {
                cwd.join(d)
            }
        })
        .map(|d| d.join(name))
        .find(|p| runnable(p))
}

/// Resolve `spec` and compute its fingerprint.
pub fn resolve(spec: &CommandSpec<'_>, cache: &mut HashCache) -> Result<Resolved, CommandError> {
    let name = spec.argv.first().ok_or(CommandError::Empty)?;
    let cwd = std::fs::canonicalize(spec.cwd).map_err(|source| CommandError::Cwd {
        dir: spec.cwd.into(),
        source,
    })?;
    let path_var = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let found = find_exe(name, &cwd, path_var)
        .ok_or_else(|| CommandError::NotFound { name: name.clone() })?;
    let exe = std::fs::canonicalize(&found).map_err(|source| CommandError::Read {
        path: found.clone(),
        source,
    })?;
    let exe_sha256 = cache.sha256(&exe)?;
    let args = &spec.argv[1..];
    let mut files = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if a.is_empty() || a.len() > 4096 {
            continue;
        }
        let p = cwd.join(a);
        if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
            let canon = std::fs::canonicalize(&p).unwrap_or(p);
            let h = cache.sha256(&canon)?;
            files.push((i + 1, canon, h));
        }
    }
    let mut env: Vec<(&str, &str)> = spec
        .env
        .iter()
        .filter(|(k, _)| is_code_env(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.sort();
    env.dedup_by(|a, b| a.0 == b.0);
    let canonical = Canonical {
        v: 1,
        exe: &exe,
        exe_sha256: &exe_sha256,
        args,
        files,
        cwd: &cwd,
        env,
    };
    let bytes = serde_json::to_vec(&canonical).expect("a command should serialize");
    let fingerprint = hex::encode(Sha256::digest(&bytes));
    let mut display = shell_word(&exe.display().to_string());
    for a in args {
        display.push(' ');
        display.push_str(&shell_word(a));
    }
    let display = format!(
        "{display}  (in {}; command {})",
        cwd.display(),
        &fingerprint[..12]
    );
    Ok(Resolved {
        exe,
        cwd,
        fingerprint,
        display,
    })
}

/// Quote `s` for a POSIX shell when it is not a plain word (for display only).
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@=+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(argv: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Resolved {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(
            &CommandSpec {
                argv: &argv,
                cwd,
                env: &env,
            },
            &mut HashCache::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_fingerprint_follows_what_runs() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let script = d.path().join("deploy.sh");
        std::fs::write(&script, "#!/bin/sh\necho deploy\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = [("PATH", "/usr/bin:/bin")];
        let a = fp(&["./deploy.sh"], d.path(), &path);
        assert_eq!(a.exe, std::fs::canonicalize(&script).unwrap());
        assert_eq!(
            a.fingerprint,
            fp(&["./deploy.sh"], d.path(), &path).fingerprint
        );
        // unrelated environment does not matter, code-loading variables do
        assert_eq!(
            a.fingerprint,
            fp(
                &["./deploy.sh"],
                d.path(),
                &[("PATH", "/usr/bin:/bin"), ("HOME", "/x")]
            )
            .fingerprint
        );
        let preload = fp(
            &["./deploy.sh"],
            d.path(),
            &[("PATH", "/bin"), ("LD_PRELOAD", "/tmp/x.so")],
        );
        assert_ne!(a.fingerprint, preload.fingerprint);
        // another argument, another directory
        assert_ne!(
            a.fingerprint,
            fp(&["./deploy.sh", "--prod"], d.path(), &path).fingerprint
        );
        std::fs::copy(&script, other.path().join("deploy.sh")).unwrap();
        assert_ne!(
            a.fingerprint,
            fp(&["./deploy.sh"], other.path(), &path).fingerprint
        );
        // a changed script (even same size, same second) is another command
        let sh = fp(&["sh", "deploy.sh"], d.path(), &path);
        std::fs::write(&script, "#!/bin/sh\necho DEPLOY\n").unwrap();
        assert_ne!(
            a.fingerprint,
            fp(&["./deploy.sh"], d.path(), &path).fingerprint
        );
        assert_ne!(
            sh.fingerprint,
            fp(&["sh", "deploy.sh"], d.path(), &path).fingerprint
        );
        // sh -c binds the script text
        assert_ne!(
            fp(&["sh", "-c", "echo a"], d.path(), &path).fingerprint,
            fp(&["sh", "-c", "echo b"], d.path(), &path).fingerprint
        );
    }

    #[test]
    fn path_search_and_missing_commands() {
        let d = tempfile::tempdir().unwrap();
        let r = fp(
            &["true"],
            d.path(),
            &[("PATH", "/nonexistent:/usr/bin:/bin")],
        );
        assert!(r.exe.ends_with("true"), "{:?}", r.exe);
        let argv = vec!["no-such-command-xyz".to_string()];
        assert!(matches!(
            resolve(
                &CommandSpec {
                    argv: &argv,
                    cwd: d.path(),
                    env: &[]
                },
                &mut HashCache::default()
            ),
            Err(CommandError::NotFound { .. })
        ));
    }
}
