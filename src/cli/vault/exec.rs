//! `guard exec`: run a command with approved secrets injected by the daemon, which launches it on
//! this process's stdio; signals that reach this process are forwarded; approvals are asked for
//! at the terminal, or waited for.

use super::{exit_code_for, other, passphrase, rpc_err, unlock_here, with_passphrase};
use crate::vault::client::{Client, ClientError};
use crate::vault::command::is_harmless_env;
use crate::vault::exec::ProjectFile;
use crate::vault::rpc;
use crate::vault::{tty, VaultPaths};
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args)]
#[command(
    after_help = "Example (.guard/secrets.toml):\n  [[secret]]\n  name = \"api_token\"\n  env = \"API_TOKEN\"\n  ttl = \"30m\"\n\n  guard exec -- ./deploy.sh\n\nThe daemon runs the command (on this process's stdin/stdout/stderr) with the values in its\nenvironment and its output redacted. The first use of a secret by a command needs a human's\napproval: at a terminal guard asks there; without one it waits for a human to approve it."
)]
pub struct ExecArgs {
    #[arg(long, env = "GUARD_VAULT_DIR")]
    vault_dir: Option<PathBuf>,
    /// Context to read secrets from [default: the project file's, else "default"]
    #[arg(long)]
    context: Option<String>,
    /// Project file [default: nearest .guard/secrets.toml or .secrets.json]
    #[arg(long)]
    file: Option<PathBuf>,
    /// guard's own messages (errors, approval) as JSON envelopes on stderr
    #[arg(long)]
    json: bool,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// What of this process's environment the daemon may use for the command: `PATH` (to find
/// argv[0]), the harmless variables, and the project's pass-through ones. The daemon filters
/// again; nothing else reaches the command.
pub(crate) fn environment(pass_env: &[String]) -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k == "PATH" || is_harmless_env(k) || pass_env.contains(k))
        .collect()
}

fn current_umask() -> u32 {
    // SAFETY: umask(2) swaps the mask; it is restored at once (single-threaded at this point).
    unsafe {
        let m = libc::umask(0o077);
        libc::umask(m);
        m as u32
    }
}

mod forward {
    //! Signals that reach `guard exec` (Ctrl-C in the terminal, a `kill` of the CLI) are
    //! forwarded to the command the daemon runs, which is not in our process group.
    use std::sync::atomic::{AtomicI32, Ordering};

    static PIPE: AtomicI32 = AtomicI32::new(-1);
    use crate::vault::exec::FORWARDED_SIGNALS as SIGNALS;

    extern "C" fn on_signal(sig: libc::c_int) {
        let fd = PIPE.load(Ordering::Relaxed);
        if fd >= 0 {
            let b = sig as u8;
            // SAFETY: write(2) is async-signal-safe; a full pipe just drops the signal.
            unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
        }
    }

    /// Forwards signals over `conn` until dropped.
    pub struct Forwarding {
        write_end: std::os::fd::OwnedFd,
    }

    pub fn start(conn: std::os::unix::net::UnixStream) -> std::io::Result<Forwarding> {
        use std::io::Read;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fresh descriptors, each wrapped once below.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // The reader blocks; only the writer (used from the handler) must not.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        std::thread::spawn(move || {
            let mut r = std::fs::File::from(r);
            let mut b = [0u8; 1];
            while let Ok(1) = r.read(&mut b) {
                let _ = crate::vault::client::notify(
                    &conn,
                    "signal",
                    serde_json::json!({"signal": b[0] as i32}),
                );
            }
        });
        PIPE.store(w.as_raw_fd(), Ordering::SeqCst);
        for &s in SIGNALS {
            // SAFETY: installs a handler that only calls write(2).
            unsafe { libc::signal(s, on_signal as *const () as libc::sighandler_t) };
        }
        Ok(Forwarding { write_end: w })
    }

    impl Drop for Forwarding {
        fn drop(&mut self) {
            for &s in SIGNALS {
                // SAFETY: restores the default disposition.
                unsafe { libc::signal(s, libc::SIG_DFL) };
            }
            PIPE.store(-1, Ordering::SeqCst);
            let _ = &self.write_end; // closed on drop: the forwarding thread ends
        }
    }
}

pub fn run_exec(a: ExecArgs) -> anyhow::Result<i32> {
    let json = a.json;
    match exec(a) {
        Ok(code) => Ok(code),
        Err(e) => {
            // Keep stdout for the child: exec reports its own errors on stderr even with --json.
            let (code, acts) = match &e {
                ClientError::Rpc {
                    code, next_actions, ..
                } => (*code, next_actions.clone()),
                _ => (rpc::FAILED, vec![]),
            };
            if json {
                eprintln!("{}", rpc::err_envelope(code, &e.to_string(), &acts));
            } else {
                eprintln!("guard exec: {e}");
                for n in &acts {
                    eprintln!("  next: {}  ({})", n.command, n.description);
                }
            }
            Ok(exit_code_for(code))
        }
    }
}

/// The daemon asked for a human's approval: ask at the terminal if there is one, else wait for a
/// human to approve it elsewhere. `Ok` means: ask the daemon again.
fn get_approval(
    paths: &VaultPaths,
    c: &mut Client,
    data: &Value,
    json: bool,
) -> Result<(), ClientError> {
    let req = data["request"]
        .as_str()
        .ok_or(ClientError::Protocol)?
        .to_string();
    let command = data["command"].as_str().unwrap_or("");
    let what = format!(
        "{command}\n  wants secret(s) {} (context {})",
        data["secrets"], data["context"]
    );
    if tty::say(&format!("guard: {what}")).is_ok() {
        let allow = tty::ask("guard: allow this command to use them?") == Some(true);
        let params = json!({"request": req, "allow": allow});
        let params = if allow {
            c.verify_peer()?;
            with_passphrase(params, &passphrase("vault passphrase: ")?)
        } else {
            params
        };
        c.call("approve", params)?;
        return Ok(());
    }
    let message = format!(
        "approval required: a human must approve {what}. They do it at a terminal with the vault \
         passphrase (`guard vault pending` lists this request, {req}). Waiting…"
    );
    if json {
        eprintln!(
            "{}",
            json!({"ok": false, "error": {"code": "approval_pending", "message": message},
                   "data": data, "next_actions": data.get("next_actions")})
        );
    } else {
        eprintln!("guard exec: {message}");
    }
    // A second connection, so this one stays free for asking again.
    Client::connect(paths)?.call("await_approval", json!({"request": req}))?;
    Ok(())
}

fn exec(a: ExecArgs) -> Result<i32, ClientError> {
    let paths = VaultPaths::resolve(a.vault_dir.as_deref());
    let cwd = std::env::current_dir()?;
    let pf = match &a.file {
        Some(f) => ProjectFile::load(f),
        None => ProjectFile::find(&cwd),
    }
    .map_err(other)?;
    let context = a
        .context
        .or(pf.context.clone())
        .unwrap_or_else(|| "default".into());
    let request = crate::vault::api::ExecRequest {
        context,
        secrets: pf
            .secrets
            .iter()
            .map(|s| crate::vault::api::ExecSecret {
                name: s.name.clone(),
                env: s.env.clone(),
                ttl: s.ttl.map(|t| format!("{}ms", t.as_millis())),
            })
            .collect(),
        argv: a.command.clone(),
        cwd: cwd.clone(),
        env: environment(&pf.env),
        pass_env: pf.env.clone(),
        umask: Some(current_umask()),
        caller: None,
    };
    let params = serde_json::to_value(&request).map_err(other)?;
    let mut c = Client::connect_or_start(&paths)?;
    for _ in 0..4 {
        let reply = {
            let _fwd = forward::start(c.notifier()?)?;
            c.call_with_fds("exec", params.clone(), &[0, 1, 2])
        };
        match reply {
            Ok(env) => {
                let data = &env["data"];
                if data["status"] == "approval_required" {
                    get_approval(&paths, &mut c, data, a.json)?;
                    continue;
                }
                if let Some(code) = data["exit_code"].as_i64() {
                    return Ok(code as i32);
                }
                return Ok(128 + data["signal"].as_i64().unwrap_or(0) as i32);
            }
            Err(ClientError::Rpc { code, .. }) if code == rpc::LOCKED && tty::available() => {
                unlock_here(&mut c, None)?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(rpc_err(rpc::DENIED, "no approval after several attempts"))
}
