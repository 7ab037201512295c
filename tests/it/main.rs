//! The integration test binary: drives the real `guard` binary (and the library where a test
//! needs to control chunking).
mod gitleaks;
mod history;
mod hooks;
mod mcp;
mod openbao;
mod pipeline;
mod quality;
mod redact;
mod scan;
mod vault;

/// An empty git configuration file for `GIT_CONFIG_GLOBAL`, so tests see no user configuration.
/// Not `/dev/null`: some sandboxes put a regular file there, which other processes write into.
pub fn empty_git_config() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    &DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("gitconfig");
        std::fs::write(&p, b"").expect("write gitconfig");
        (d, p)
    })
    .1
}
