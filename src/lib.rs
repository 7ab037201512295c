//! # guard — secret-leak scanner and output guard
//!
//! One engine, many sources. A tour, in the order data flows:
//!
//! - [`pattern`] (a leaf): how every regex is compiled (bytes, Unicode off) and what is derived
//!   from a pattern before any scan — maximum length, whether it can span a newline, its start
//!   literals, and the bounds that refuse patterns too costly to run.
//! - [`rules`]: the schema of `rules/*.toml` (embedded at build time) and the loader; [`config`]
//!   adds the user's `guard.toml` rules and allowlists, and [`gitleaks`] what it imports from a
//!   `.gitleaks.toml` and `.gitleaksignore`.
//! - [`engine`]: bytes in, matches out, no I/O. A Hyperscan prefilter over all rules at once, a
//!   regex-automata confirm stage on a bounded window around each hit, filters (entropy, offline
//!   checksum validators, allowlists), overlap resolution. Block mode for whole inputs, stream
//!   mode that settles matches as soon as it can (at every newline for line-local rules), and a
//!   parallel path for one large input — all proven equal. The compiled database is cached by
//!   the caller through [`engine::DatabaseCache`] ([`cache::DirCache`] on disk for the CLI).
//! - [`source`]: everything guard reads is a [`source::Source`] of units — bytes with a typed
//!   [`finding::Origin`]: files and directories (`source::fs`), stdin and FIFOs
//!   (`source::reader`), git history with the commit that introduced each blob (`source::git`,
//!   feature `git`), and the staged or pushed changes of the git hooks (`source::staged`). Size
//!   tiers, binary detection and size limits are shared helpers.
//! - [`finding`]: a match placed in its origin, with a stable keyed id and a redacted snippet.
//! - [`pipeline`]: units are scanned on every core; findings are pushed, in order and as they are
//!   confirmed, through shared filters (path allowlist, baseline, duplicates) into
//!   [`pipeline::FindingSink`]s: the [`report`] formats (human, JSON, JSONL, SARIF),
//!   [`baseline::BaselineWriter`], leak events for stored values found by their fingerprints
//!   (`redact::spool::SpoolSink`) and the user's provider [`revoke`] hooks.
//! - [`redact`]: the output guard behind `guard redact`, `guard exec` and the log-shipper
//!   adapters (JSON lines, rsyslog mmexternal): every byte written only once the stream has
//!   settled it, each rule match and each known stored value (the engine's fingerprint stage)
//!   replaced, fail-closed; leak events for known values go to a spool. [`fingerprint`] reads and
//!   writes the fingerprint files; [`random`] is the kernel's random source.
//! - [`vault`] (feature `vault`): the store behind a backend trait (the local age store, or
//!   OpenBao KV v2: `vault::backend`), the daemon (typed requests in `vault::api`), leases, the
//!   sealed audit chain and `guard exec`; only a human with the passphrase on the terminal
//!   approves, and no value reaches a client (THREAT_MODEL.md). The daemon closes the loop: it
//!   consumes the spool's leak events and revokes and rotates a leaked stored value, once
//!   (`vault::server::leak`), then republishes the fingerprints that running redactors reload.
//! - `cli` (feature `cli`): the clap commands, the only place `anyhow` is used. `guard mcp`
//!   (feature `mcp`) is one of them: an MCP server over stdio whose tools call the engine and
//!   the vault daemon like any other client, and audit each call with the agent's name and
//!   purpose.
//!
//! ```
//! use guard::{engine::Engine, rules::Ruleset};
//! let rules = Ruleset::builtin().expect("builtin rules should load");
//! let engine = Engine::builder(rules).build().expect("builtin rules should compile");
//! let mut scratch = engine.scratch().expect("scratch space");
//! // A classic GitHub token whose CRC32 tail is wrong is not reported...
//! let fake = format!("token = ghp_{}", "x".repeat(36));
//! assert!(engine.scan_block(&mut scratch, fake.as_bytes()).expect("scan").is_empty());
//! // ...one with a valid checksum is, with the secret's offsets.
//! let random = "FakeTokenForTheDocs00000000000";
//! let crc = guard::engine::validate::base62_crc(crc32fast::hash(random.as_bytes()));
//! let token = format!("in a log line: ghp_{random}{}", std::str::from_utf8(&crc).expect("base62 is ASCII"));
//! let found = engine.scan_block(&mut scratch, token.as_bytes()).expect("scan");
//! assert_eq!(engine.rule(found[0].rule).id.0, "github.pat_classic");
//! assert_eq!(found[0].secret_start, 15);
//! ```
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod baseline;
pub mod cache;
pub mod child;
pub mod config;
pub mod engine;
pub mod finding;
pub mod fingerprint;
pub mod gitleaks;
pub mod pattern;
pub mod pipeline;
pub mod random;
pub mod redact;
pub mod report;
pub mod revoke;
pub mod rules;
pub mod source;
#[cfg(feature = "vault")]
pub mod vault;

#[cfg(feature = "cli")]
pub mod cli;
