//! The integration test binary: drives the real `guard` binary (and the library where a test
//! needs to control chunking).
mod gitleaks;
mod history;
mod hooks;
mod pipeline;
mod quality;
mod redact;
mod scan;
mod vault;
