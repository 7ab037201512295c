//! # guard — secret-leak scanner and output guard
//!
//! One engine, many sources. Rules (`rules/*.toml`, embedded at build time, plus the user's
//! `guard.toml`) compile into an immutable [`engine::Engine`]: a Hyperscan prefilter over all rules
//! at once, a regex-automata confirm stage on a bounded window around each prefilter hit, then
//! filters (entropy floor, offline checksum validators, allowlists). Every source — files and
//! directories (`scan::walk`), stdin (`scan::stream`), and later git blobs and log lines — feeds
//! bytes to that engine; none has a matching loop of its own. Findings flow into a
//! [`report::Sink`] (human, JSON, JSONL, SARIF).
//!
//! The vault (`vault`, feature `vault`) stores secrets age-encrypted and injects them into child
//! processes through `guard exec`, whose output is filtered so the agent never sees a value.
//!
//! ```
//! use guard::{engine::Engine, rules::Ruleset};
//! let rules = Ruleset::builtin().expect("builtin rules should load");
//! let engine = Engine::builder(rules).build().expect("builtin rules should compile");
//! let mut scratch = engine.scratch();
//! // A classic GitHub token whose CRC32 tail is wrong is not reported...
//! let fake = format!("token = ghp_{}", "x".repeat(36));
//! assert!(engine.scan_block(&mut scratch, fake.as_bytes()).is_empty());
//! // ...one with a valid checksum is, with the secret's offsets.
//! let random = "FakeTokenForTheDocs00000000000";
//! let crc = guard::engine::validate::base62_crc(crc32fast::hash(random.as_bytes()));
//! let token = format!("in a log line: ghp_{random}{}", std::str::from_utf8(&crc).expect("base62 is ASCII"));
//! let found = engine.scan_block(&mut scratch, token.as_bytes());
//! assert_eq!(engine.rule(found[0].rule).id.0, "github.pat_classic");
//! assert_eq!(found[0].secret_start, 15);
//! ```
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod baseline;
pub mod config;
pub mod engine;
pub mod finding;
pub mod report;
pub mod rules;
pub mod scan;
#[cfg(feature = "vault")]
pub mod vault;

#[cfg(feature = "cli")]
pub mod cli;
