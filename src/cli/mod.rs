//! Command-line front end: clap commands, the only place `anyhow` is used.
//!
//! Exit codes are the contract with CI systems and git hooks: 0 clean, 1 findings, 2 error.

use clap::{Parser, Subcommand};

mod hook_cmd;
#[cfg(feature = "mcp")]
mod mcp_cmd;
mod redact_cmd;
mod rules_cmd;
mod scan_cmd;
#[cfg(feature = "vault")]
mod vault;

#[derive(Parser)]
#[command(name = "guard", version, about = "Find secrets before they leak, and keep them out of output",
    long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scan files, directories or stdin (`-`) for secrets
    Scan(scan_cmd::ScanArgs),
    /// Git hooks: scan what is staged, pushed or written as a commit message; install the shims
    #[command(subcommand)]
    Hook(hook_cmd::HookCmd),
    /// Redact secrets out of a stream (stdin → stdout) or a command's output
    Redact(redact_cmd::RedactArgs),
    /// Fingerprint known values for `guard redact --fingerprints` (values are never stored)
    #[command(subcommand)]
    Fingerprint(redact_cmd::FingerprintCmd),
    /// List or check the detection rules
    #[command(subcommand)]
    Rules(rules_cmd::RulesCmd),
    /// The age-encrypted secret store and its daemon
    #[cfg(feature = "vault")]
    Vault(vault::VaultArgs),
    /// Run a command with secrets injected into its environment, its output redacted
    #[cfg(feature = "vault")]
    Exec(vault::ExecArgs),
    /// Serve the Model Context Protocol on stdin/stdout: AI agents scan and redact text, and run
    /// commands with stored secrets they never see
    #[cfg(feature = "mcp")]
    Mcp(mcp_cmd::McpArgs),
}

/// Exit code for "an error happened" (bad input, I/O failure, bad config).
pub const EXIT_ERROR: i32 = 2;

/// Entry point used by `main`: parses arguments, runs the command, maps errors to exit code 2.
pub fn main() -> i32 {
    reset_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Scan(a) => scan_cmd::run(a),
        Command::Rules(c) => rules_cmd::run(c),
        Command::Hook(c) => hook_cmd::run(c),
        Command::Redact(a) => redact_cmd::run_redact(a),
        Command::Fingerprint(c) => redact_cmd::run_fingerprint(c),
        #[cfg(feature = "vault")]
        Command::Vault(a) => vault::run_vault(a),
        #[cfg(feature = "vault")]
        Command::Exec(a) => vault::run_exec(a),
        #[cfg(feature = "mcp")]
        Command::Mcp(a) => mcp_cmd::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return 0;
            }
            eprintln!("guard: error: {e:#}");
            EXIT_ERROR
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A closed stdout (`guard scan . | head`) should end the process quietly, not panic in `println!`.
fn reset_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    /// clap checks a command definition (duplicate flags, bad defaults) only in debug builds,
    /// by panicking when the command runs: check every subcommand here, in every profile.
    #[test]
    fn command_line_definition_is_valid() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
