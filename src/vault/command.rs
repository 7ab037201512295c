//! What runs: the identity of a command that an approval names, and the environment it gets.
//!
//! Design decision: an approval must name what runs, not who claims to run it — a client id is
//! just a string an agent can copy. So an approval is bound to a *fingerprint*: SHA-256 over
//! - the resolved executable (argv[0] searched in the caller's `PATH`, symlinks resolved) and the
//!   SHA-256 of its content — for a script started by its shebang that is the script itself;
//! - the shebang's interpreter chain, resolved as the kernel and `/usr/bin/env` will resolve it
//!   (in the child's `PATH`), with the content hash of each;
//! - every argument, verbatim (so `sh -c '…'` binds the script text);
//! - the path and content hash of every argument that names a regular file (`python3 deploy.py`
//!   binds `deploy.py`);
//! - the working directory (the project: relative paths resolve against it);
//! - the variables the project passes through (`env = [...]` in `.guard/secrets.toml`), with
//!   their values and the content hash of any file a value names.
//!
//! **The command never sees the caller's environment.** An environment is code (`BASH_FUNC_*`,
//! `BASH_ENV`, `PATH`, `PYTHONWARNINGS`+`BROWSER`, `GIT_*`, `*_PROXY`, `HOME` → dotfiles…) and a
//! denylist of it cannot be completed, so the child gets a clean one ([`child_env`]): a short
//! allowlist of harmless variables from the caller ([`is_harmless_env`]), `PATH` =
//! [`SAFE_PATH`], `HOME`/`USER`/`LOGNAME`/`SHELL` from the password database, the pass-through
//! variables (fingerprinted and shown to the human), and the injected secrets.
//!
//! What the command loads *later* by name (a sourced file, an import, a config file in `HOME`) is
//! not pinned: THREAT_MODEL.md says so. Content hashes are computed from an opened descriptor
//! every time, except for files no user but root can change (root-owned, not group/other
//! writable, and we are not root), whose hashes are cached by (device, inode, size, mtime,
//! ctime): a write through a shared mapping does not always update those stamps, so a file the
//! user can write is never trusted from the cache.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `PATH` every approved command runs with (unless the project passes `PATH` through).
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Environment variables that decide which code runs: stripped before the *daemon* is started
/// (autostart) and never accepted as the variable a secret is delivered in. Approved commands do
/// not need this list: they get a clean environment. `LD_*` as a prefix.
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
    "PYTHONWARNINGS",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "RUBYLIB",
    "RUBYOPT",
    "GCONV_PATH",
    "LOCPATH",
    "GIT_EXEC_PATH",
    "GIT_CONFIG_PARAMETERS",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "CLASSPATH",
    "GEM_PATH",
    "GEM_HOME",
    "MALLOC_CONF",
];

pub fn is_code_env(name: &str) -> bool {
    name.starts_with("LD_") || name.starts_with("BASH_FUNC_") || CODE_ENV.contains(&name)
}

/// Variables an approved command gets from the caller without being named anywhere: they only
/// choose language, terminal and time zone, and their values are checked ([`harmless_value`]).
pub fn is_harmless_env(name: &str) -> bool {
    matches!(
        name,
        "LANG" | "LANGUAGE" | "TERM" | "TZ" | "COLUMNS" | "LINES" | "NO_COLOR" | "COLORTERM"
    ) || (name.starts_with("LC_") && name[3..].bytes().all(|b| b.is_ascii_uppercase()))
}

/// A locale or terminal name with a `/` is a path glibc or curses would load: not passed.
fn harmless_value(name: &str, value: &str) -> bool {
    value.len() <= 256
        && !value.bytes().any(|b| b.is_ascii_control())
        && match name {
            "COLUMNS" | "LINES" => value.bytes().all(|b| b.is_ascii_digit()),
            "TZ" => !value.contains(".."),
            _ => !value.contains('/'),
        }
}

/// The user's account from the password database (never from the caller's environment).
pub struct Account {
    pub name: String,
    pub home: String,
    pub shell: String,
}

pub fn account() -> Option<Account> {
    use std::ffi::CStr;
    // SAFETY: getpwuid_r fills `pw` with pointers into `buf`, which outlives their use here.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let rc = libc::getpwuid_r(
            libc::getuid(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        );
        if rc != 0 || out.is_null() {
            return None;
        }
        let s = |p: *const libc::c_char| {
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        Some(Account {
            name: s(pw.pw_name)?,
            home: s(pw.pw_dir)?,
            shell: s(pw.pw_shell)
                .filter(|s| !s.is_empty())
                .unwrap_or("/bin/sh".into()),
        })
    }
}

/// The environment an approved command runs with (secrets are added by the launcher):
/// harmless caller variables, the pass-through ones, `PATH`, and the account's identity.
pub fn child_env(caller: &[(String, String)], pass_env: &[String]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v.to_string()));
    };
    set("PATH", SAFE_PATH);
    if let Some(a) = account() {
        set("HOME", &a.home);
        set("USER", &a.name);
        set("LOGNAME", &a.name);
        set("SHELL", &a.shell);
    }
    for (k, v) in caller {
        if is_harmless_env(k) && harmless_value(k, v) {
            set(k, v);
        }
    }
    for (k, v) in caller {
        if pass_env.iter().any(|p| p == k) {
            set(k, v);
        }
    }
    env.sort();
    env
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
    #[error("interpreter {interp:?} of {path} not found")]
    Interpreter { path: PathBuf, interp: String },
}

/// A command as the caller asks to run it.
pub struct CommandSpec<'a> {
    pub argv: &'a [String],
    pub cwd: &'a Path,
    /// The caller's environment (only the harmless and pass-through variables are used).
    pub env: &'a [(String, String)],
    /// Variables the project passes through to the command (`env = [...]`).
    pub pass_env: &'a [String],
}

/// A resolved command: what will be executed, with which environment, and its fingerprint.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub exe: PathBuf,
    /// The executable, opened when it was hashed: a binary is executed through this descriptor
    /// (`/proc/self/fd/N`), so what runs is the file that was hashed even if the path is swapped.
    pub exe_file: Option<Arc<std::fs::File>>,
    /// Whether `exe` starts with `#!` (then the interpreter re-opens it by path).
    pub script: bool,
    pub cwd: PathBuf,
    /// The complete environment of the child, secrets excepted.
    pub env: Vec<(String, String)>,
    pub fingerprint: String,
    /// What a human is shown: pass-through variables, executable, arguments, directory, short
    /// fingerprint — every part escaped for a terminal.
    pub display: String,
}

#[derive(Serialize)]
struct Canonical<'a> {
    v: u32,
    exe: &'a Path,
    exe_sha256: &'a str,
    interpreters: Vec<(PathBuf, String)>,
    args: &'a [String],
    files: Vec<(usize, PathBuf, String)>,
    cwd: &'a Path,
    env: Vec<(&'a str, Option<&'a str>)>,
    env_files: Vec<(&'a str, PathBuf, String)>,
}

/// (device, inode, size, mtime s, mtime ns, ctime s, ctime ns) of a file.
type FileStamp = (u64, u64, u64, i64, i64, i64, i64);

/// Content hashes of files only root can change, keyed by [`FileStamp`].
#[derive(Default)]
pub struct HashCache {
    map: HashMap<FileStamp, String>,
}

/// Whether a cached hash may be trusted for this file: nobody but root can write it, and we are
/// not root. Anything else is re-hashed every time (mmap writes need not move the stamps).
fn only_root_writes(m: &std::fs::Metadata) -> bool {
    // SAFETY: getuid(2) cannot fail.
    let me = unsafe { libc::getuid() };
    me != 0 && m.uid() == 0 && m.mode() & 0o022 == 0
}

impl HashCache {
    /// SHA-256 (hex) of a regular file's content, and the open file it was read from.
    pub fn open_and_hash(&mut self, path: &Path) -> Result<(String, std::fs::File), CommandError> {
        let read = |source| CommandError::Read {
            path: path.into(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(read)?;
        let m = f.metadata().map_err(read)?;
        if !m.is_file() {
            return Err(read(std::io::Error::other("not a regular file")));
        }
        let key = (
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        );
        let trusted = only_root_writes(&m);
        if trusted {
            if let Some(h) = self.map.get(&key) {
                return Ok((h.clone(), f));
            }
        }
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(read)?;
        let hex = hex::encode(h.finalize());
        if trusted {
            if self.map.len() > 4096 {
                self.map.clear();
            }
            self.map.insert(key, hex.clone());
        }
        Ok((hex, f))
    }

    /// SHA-256 (hex) of a regular file's content.
    pub fn sha256(&mut self, path: &Path) -> Result<String, CommandError> {
        self.open_and_hash(path).map(|(h, _)| h)
    }
}

/// `name` as `execvp` would find it in `path_var`, relative to `cwd`.
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
        .unwrap_or(SAFE_PATH)
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

/// The `#!` line of an open file: (interpreter, optional argument), as the kernel splits it.
fn shebang(f: &std::fs::File) -> Option<(String, Option<String>)> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 256];
    let n = f.read_at(&mut buf, 0).ok()?;
    let b = &buf[..n];
    if !b.starts_with(b"#!") {
        return None;
    }
    let end = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
    let line = String::from_utf8_lossy(&b[2..end]);
    let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
    let (interp, arg) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], Some(line[i..].trim().to_string())),
        None => (line, None),
    };
    Some((interp.to_string(), arg.filter(|a| !a.is_empty())))
}

/// The interpreters a script will run under, outermost first: each `#!` interpreter (nested up
/// to the kernel's limit) and, for `/usr/bin/env NAME`, NAME searched in the child's `PATH`.
fn interpreters(
    script: &Path,
    first: &std::fs::File,
    cwd: &Path,
    child_path: &str,
    cache: &mut HashCache,
) -> Result<Vec<(PathBuf, String)>, CommandError> {
    let mut out = Vec::new();
    let mut line = shebang(first);
    let mut from = script.to_path_buf();
    for _ in 0..5 {
        let Some((interp, arg)) = line.take() else {
            break;
        };
        let missing = || CommandError::Interpreter {
            path: from.clone(),
            interp: interp.clone(),
        };
        let p = std::fs::canonicalize(cwd.join(&interp)).map_err(|_| missing())?;
        let (h, f) = cache.open_and_hash(&p)?;
        out.push((p.clone(), h));
        if p.file_name().is_some_and(|n| n == "env") {
            // `env [-S] [-opts] NAME …`: the first word that is not an option or an assignment.
            if let Some(name) = arg.as_deref().and_then(|a| {
                a.split_whitespace()
                    .find(|w| !w.starts_with('-') && !w.contains('='))
            }) {
                let found = find_exe(name, cwd, Some(child_path)).ok_or_else(missing)?;
                let target = std::fs::canonicalize(&found).map_err(|_| missing())?;
                let (h, f) = cache.open_and_hash(&target)?;
                out.push((target.clone(), h));
                line = shebang(&f);
                from = target;
                continue;
            }
        }
        line = shebang(&f);
        from = p;
    }
    Ok(out)
}

/// Resolve `spec` and compute its fingerprint.
pub fn resolve(spec: &CommandSpec<'_>, cache: &mut HashCache) -> Result<Resolved, CommandError> {
    let name = spec.argv.first().ok_or(CommandError::Empty)?;
    let cwd = std::fs::canonicalize(spec.cwd).map_err(|source| CommandError::Cwd {
        dir: spec.cwd.into(),
        source,
    })?;
    let caller = |k: &str| {
        spec.env
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    // argv[0] as the caller would find it: the result is hashed and shown, so its PATH is safe
    // to use for this one lookup. The child itself gets SAFE_PATH.
    let found = find_exe(name, &cwd, caller("PATH"))
        .ok_or_else(|| CommandError::NotFound { name: name.clone() })?;
    let exe = std::fs::canonicalize(&found).map_err(|source| CommandError::Read {
        path: found.clone(),
        source,
    })?;
    let (exe_sha256, exe_file) = cache.open_and_hash(&exe)?;
    let env = child_env(spec.env, spec.pass_env);
    let child_path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(SAFE_PATH, |(_, v)| v.as_str())
        .to_string();
    let interps = interpreters(&exe, &exe_file, &cwd, &child_path, cache)?;
    let args = &spec.argv[1..];
    let mut files = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if let Some((p, h)) = named_file(&cwd, a, cache)? {
            files.push((i + 1, p, h));
        }
    }
    let mut pass: Vec<(&str, Option<&str>)> = spec
        .pass_env
        .iter()
        .map(|k| (k.as_str(), caller(k)))
        .collect();
    pass.sort();
    pass.dedup_by(|a, b| a.0 == b.0);
    let mut env_files = Vec::new();
    for (k, v) in &pass {
        if let Some(v) = v {
            if let Some((p, h)) = named_file(&cwd, v, cache)? {
                env_files.push((*k, p, h));
            }
        }
    }
    let canonical = Canonical {
        v: 2,
        exe: &exe,
        exe_sha256: &exe_sha256,
        interpreters: interps.clone(),
        args,
        files,
        cwd: &cwd,
        env: pass.clone(),
        env_files,
    };
    let bytes = serde_json::to_vec(&canonical).expect("a command should serialize");
    let fingerprint = hex::encode(Sha256::digest(&bytes));
    let mut display = String::new();
    for (k, v) in &pass {
        match v {
            Some(v) => display.push_str(&format!("{}={} ", shell_word(k), shell_word(v))),
            None => display.push_str(&format!("(no {}) ", shell_word(k))),
        }
    }
    display.push_str(&shell_word(&exe.to_string_lossy()));
    for a in args {
        display.push(' ');
        display.push_str(&shell_word(a));
    }
    let via = interps
        .iter()
        .map(|(p, _)| shell_word(&p.to_string_lossy()))
        .collect::<Vec<_>>();
    let via = if via.is_empty() {
        String::new()
    } else {
        format!("; run by {}", via.join(" → "))
    };
    let display = format!(
        "{display}  (in {}{via}; command {})",
        shell_word(&cwd.to_string_lossy()),
        &fingerprint[..12]
    );
    Ok(Resolved {
        exe,
        exe_file: Some(Arc::new(exe_file)),
        script: !interps.is_empty(),
        cwd,
        env,
        fingerprint,
        display,
    })
}

/// The canonical path and hash of the regular file `a` names (relative to `cwd`), if it does.
fn named_file(
    cwd: &Path,
    a: &str,
    cache: &mut HashCache,
) -> Result<Option<(PathBuf, String)>, CommandError> {
    if a.is_empty() || a.len() > 4096 {
        return Ok(None);
    }
    let p = cwd.join(a);
    if !std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
        return Ok(None);
    }
    let canon = std::fs::canonicalize(&p).unwrap_or(p);
    let h = cache.sha256(&canon)?;
    Ok(Some((canon, h)))
}

/// Characters that must not reach a terminal raw: controls (C0, DEL, C1) and the invisible
/// format characters that reorder or hide text (bidi overrides, zero-width, BOM).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}' | '\u{061c}')
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x1b' => out.push_str("\\e"),
        c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c => out.push_str(&format!("\\u{:04x}", c as u32)),
    }
}

/// `s` with every character a terminal would act on escaped (`\e`, `\r`, `\x07`, `\u202e`…),
/// newlines kept. For any text printed on the human's terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\n' || !unsafe_char(c) {
            out.push(c);
        } else {
            escape_char(c, &mut out);
        }
    }
    out
}

/// Quote `s` for a POSIX shell when it is not a plain word (for display only). A word with
/// characters a terminal would act on is written `$'…'` with those escaped, so what the human
/// reads is exactly what runs.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@=+,".contains(&b))
    {
        s.to_string()
    } else if s.chars().any(unsafe_char) {
        let mut out = String::from("$'");
        for c in s.chars() {
            match c {
                '\'' => out.push_str("\\'"),
                '\\' => out.push_str("\\\\"),
                c if unsafe_char(c) => escape_char(c, &mut out),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
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
                pass_env: &[],
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
        // the caller's environment does not matter: the child never sees it
        let b = fp(
            &["./deploy.sh"],
            d.path(),
            &[
                ("PATH", "/tmp/evil:/usr/bin:/bin"),
                ("HOME", "/x"),
                ("LD_PRELOAD", "/tmp/x.so"),
                ("BASH_FUNC_echo%%", "() { :; }"),
            ],
        );
        assert_eq!(a.fingerprint, b.fingerprint);
        assert!(b
            .env
            .iter()
            .all(|(k, _)| k != "LD_PRELOAD" && !k.starts_with("BASH_FUNC")));
        assert_eq!(
            b.env.iter().find(|(k, _)| k == "PATH").unwrap().1,
            SAFE_PATH
        );
        assert_ne!(b.env.iter().find(|(k, _)| k == "HOME").unwrap().1, "/x");
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
                    env: &[],
                    pass_env: &[],
                },
                &mut HashCache::default()
            ),
            Err(CommandError::NotFound { .. })
        ));
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn spec_fp(argv: &[&str], cwd: &Path, env: &[(&str, &str)], pass: &[&str]) -> Resolved {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let pass: Vec<String> = pass.iter().map(|s| s.to_string()).collect();
        resolve(
            &CommandSpec {
                argv: &argv,
                cwd,
                env: &env,
                pass_env: &pass,
            },
            &mut HashCache::default(),
        )
        .unwrap()
    }

    #[test]
    fn pass_through_variables_are_fingerprinted_shown_and_their_files_hashed() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("cfg");
        std::fs::write(&cfg, "a").unwrap();
        let cfgs = cfg.to_str().unwrap();
        let a = spec_fp(
            &["true"],
            d.path(),
            &[("DEPLOY_CFG", cfgs)],
            &["DEPLOY_CFG"],
        );
        assert!(
            a.display.contains(&format!("DEPLOY_CFG={cfgs}")),
            "{}",
            a.display
        );
        assert!(a.env.contains(&("DEPLOY_CFG".into(), cfgs.into())));
        let none = spec_fp(&["true"], d.path(), &[], &["DEPLOY_CFG"]);
        assert_ne!(a.fingerprint, none.fingerprint);
        std::fs::write(&cfg, "b").unwrap();
        let b = spec_fp(
            &["true"],
            d.path(),
            &[("DEPLOY_CFG", cfgs)],
            &["DEPLOY_CFG"],
        );
        assert_ne!(a.fingerprint, b.fingerprint, "the file it names is hashed");
        // not passed through: not in the child's environment
        let c = spec_fp(&["true"], d.path(), &[("DEPLOY_CFG", cfgs)], &[]);
        assert!(c.env.iter().all(|(k, _)| k != "DEPLOY_CFG"));
    }

    #[test]
    fn the_shebang_interpreter_is_resolved_in_the_childs_path_and_hashed() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("x.sh");
        std::fs::write(&s, "#!/usr/bin/env sh\necho hi\n").unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
        let evil = d.path().join("evil");
        std::fs::create_dir(&evil).unwrap();
        std::fs::write(evil.join("sh"), "#!/bin/sh\necho evil\n").unwrap();
        std::fs::set_permissions(evil.join("sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:/usr/bin:/bin", evil.display());
        let r = spec_fp(&["./x.sh"], d.path(), &[("PATH", &path)], &[]);
        assert!(r.script);
        assert!(r.display.contains("run by"), "{}", r.display);
        assert!(!r.display.contains("evil"), "{}", r.display);
        // passing PATH through makes the agent's `sh` part of the command, visibly
        let p = spec_fp(&["./x.sh"], d.path(), &[("PATH", &path)], &["PATH"]);
        assert!(p.display.contains("evil/sh"), "{}", p.display);
        assert_ne!(r.fingerprint, p.fingerprint);
    }

    #[test]
    fn a_writable_file_is_rehashed_even_when_its_stamps_do_not_move() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "aaaa").unwrap();
        let mut c = HashCache::default();
        let h1 = c.sha256(&f).unwrap();
        let before = std::fs::metadata(&f).unwrap();
        std::fs::write(&f, "bbbb").unwrap();
        // put the old stamps back as far as a user can (mtime); ctime moves, but a shared
        // mapping write need not move either: the cache must not be consulted at all
        let t = filetime_of(&before);
        set_mtime(&f, t);
        assert_ne!(h1, c.sha256(&f).unwrap());
    }

    fn filetime_of(m: &std::fs::Metadata) -> libc::timespec {
        libc::timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        }
    }
    fn set_mtime(p: &Path, t: libc::timespec) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let ts = [t, t];
        // SAFETY: valid path and two timespecs.
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) };
    }

    #[test]
    fn terminal_controls_are_escaped_in_what_the_human_reads() {
        assert_eq!(shell_word("a\rb"), "$'a\\rb'");
        assert_eq!(shell_word("\x1b[2Kok"), "$'\\e[2Kok'");
        assert_eq!(shell_word("it's\u{202e}"), "$'it\\'s\\u202e'");
        assert_eq!(shell_word("plain word"), "'plain word'");
        assert_eq!(printable("x\x1b]0;t\x07\ny\r"), "x\\e]0;t\\x07\ny\\r");
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("p\r\x1b[2Kq");
        std::fs::create_dir(&sub).unwrap();
        let r = spec_fp(&["sh", "-c", "echo a\r\x1b[2Kb"], &sub, &[], &[]);
        assert!(
            !r.display.chars().any(|c| c.is_control()),
            "{:?}",
            r.display
        );
        assert!(r.display.contains("\\e[2K"), "{}", r.display);
    }
}
