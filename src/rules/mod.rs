//! Rules: the schema of `rules/*.toml`, the embedded builtin set, and the loader.
//!
//! A rule is data, not code: one TOML table per token format, written from the provider's
//! published format. The loader does all the static analysis the engine relies on, once, so the
//! hot path never re-checks it: every pattern parses as a byte regex with Unicode off, has a
//! bounded maximum match length (the confirm stage searches a window of that length ending at each
//! prefilter hit, and stream mode holds back at most that many bytes), and cannot match empty.

use std::{fmt, path::Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

pub use crate::pattern::{PatternInfo, MAX_RULE_LEN};

/// Examples and negative examples a builtin rule needs, each (a user rule needs one of each).
pub const MIN_EXAMPLES_BUILTIN: usize = 2;

/// Stable rule identifier, `<provider>.<name>`; never reused for a different format.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuleId(pub String);

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// Offline validators: checks a token's own structure (checksums, embedded headers) without
/// asking the provider, so a random string of the right shape is not reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validator {
    GithubChecksum,
    NpmChecksum,
    Jwt,
    PypiMacaroon,
}

/// A rule as written in TOML (the user-facing schema).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub name: String,
    pub pattern: String,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub min_entropy: Option<f64>,
    #[serde(default)]
    pub validate: Option<Validator>,
    pub confidence: Confidence,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default)]
    pub examples: Vec<String>,
    #[serde(default)]
    pub negative_examples: Vec<String>,
    /// Regexes on the secret value marking it as not a secret (identifiers, checksums, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

/// A checked rule: the spec plus what the loader derived from the pattern.
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: RuleId,
    pub spec: RuleSpec,
    /// Longest possible match in bytes (≤ [`MAX_RULE_LEN`]).
    pub max_len: usize,
    /// What the loader derived from the pattern (line-locality, start literals).
    pub pattern: PatternInfo,
    /// Where the rule came from (file name), for messages.
    pub origin: String,
    /// Embedded at build time (and so proven by the test-suite).
    pub builtin: bool,
    /// Translated from another scanner's config (gitleaks), which has no examples to prove.
    pub imported: bool,
}

impl Rule {
    /// How many examples, and how many negative examples, `guard rules check` requires.
    pub fn min_examples(&self) -> usize {
        if self.builtin {
            MIN_EXAMPLES_BUILTIN
        } else if self.imported {
            0
        } else {
            1
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{origin}:{line}: {message}")]
    Parse {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{origin}:{line}: rule {id}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        id: String,
        message: String,
    },
    #[error("duplicate rule id {id} ({first} and {second})")]
    Duplicate {
        id: String,
        first: String,
        second: String,
    },
    #[error("cannot read rule file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// An ordered, checked set of rules. Order is load order and is the engine's pattern index.
#[derive(Clone, Debug, Default)]
pub struct Ruleset {
    rules: Vec<Rule>,
}

impl Ruleset {
    /// The rules embedded from `rules/*.toml` at build time. `build.rs` parsed them and
    /// analysed their patterns with this crate's own [`crate::pattern`] (a rule it refuses fails
    /// the build), so start-up only deserializes; ids are checked again here.
    pub fn builtin() -> Result<Ruleset, RulesError> {
        #[derive(Deserialize)]
        struct Prebuilt {
            origin: String,
            line: usize,
            spec: RuleSpec,
            max_len: usize,
            spans_newline: bool,
            start_literals: Option<Vec<Vec<u8>>>,
        }
        let list: Vec<Prebuilt> =
            serde_json::from_str(BUILTIN_RULES_JSON).map_err(|e| RulesError::Parse {
                origin: "builtin rules".into(),
                line: e.line(),
                message: "embedded rules do not deserialize (rebuild guard)".into(),
            })?;
        let mut seen = std::collections::HashSet::with_capacity(list.len());
        let mut rules = Vec::with_capacity(list.len());
        for p in list {
            if !valid_id(&p.spec.id) || !seen.insert(p.spec.id.clone()) {
                return Err(RulesError::Invalid {
                    origin: p.origin,
                    line: p.line,
                    id: p.spec.id,
                    message: "invalid or duplicate id".into(),
                });
            }
            rules.push(Rule {
                id: RuleId(p.spec.id.clone()),
                spec: p.spec,
                max_len: p.max_len,
                pattern: crate::pattern::PatternInfo {
                    max_len: p.max_len,
                    spans_newline: p.spans_newline,
                    start_literals: p.start_literals,
                },
                origin: p.origin,
                builtin: true,
                imported: false,
            });
        }
        Ok(Ruleset { rules })
    }

    /// Holds every rule of the set to the builtin standard (`guard rules check --builtin FILE`:
    /// a rule file on its way into `rules/`).
    pub fn mark_builtin(&mut self) {
        self.rules.iter_mut().for_each(|r| r.builtin = true);
    }

    pub fn empty() -> Ruleset {
        Ruleset::default()
    }

    /// Loads a rule file from disk and adds its rules.
    pub fn add_file(&mut self, path: &Path) -> Result<(), RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.add_toml(&path.display().to_string(), &text)
    }

    /// Parses `[[rule]]` tables from TOML text and adds them; `origin` names the source in errors.
    pub fn add_toml(&mut self, origin: &str, text: &str) -> Result<(), RulesError> {
        let file: RuleFile = toml::from_str(text).map_err(|e| RulesError::Parse {
            origin: origin.to_string(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
            message: e.message().to_string(),
        })?;
        for spec in file.rule {
            let line = find_rule_line(text, &spec.id);
            self.add_spec(origin, line, spec)?;
        }
        Ok(())
    }

    /// Adds one rule after checking it; `line` is only used in error messages.
    pub fn add_spec(
        &mut self,
        origin: &str,
        line: usize,
        spec: RuleSpec,
    ) -> Result<(), RulesError> {
        let invalid = |message: String| RulesError::Invalid {
            origin: origin.to_string(),
            line,
            id: spec.id.clone(),
            message,
        };
        if !valid_id(&spec.id) {
            return Err(invalid(
                "id must be <provider>.<name> in [a-z0-9_.-]".into(),
            ));
        }
        let pattern = crate::pattern::analyze(&spec.pattern).map_err(invalid)?;
        for a in &spec.allow {
            crate::pattern::byte_regex(a)
                .map_err(|e| invalid(format!("allow regex {a:?} does not compile: {e}")))?;
        }
        if spec.keywords.iter().any(|k| k.is_empty()) {
            return Err(invalid("keywords must not be empty strings".into()));
        }
        if let Some(e) = spec.min_entropy {
            if !(0.0..=8.0).contains(&e) {
                return Err(invalid(format!(
                    "min_entropy {e} is outside 0..=8 bits/char"
                )));
            }
        }
        if let Some(prev) = self.rules.iter().find(|r| r.id.0 == spec.id) {
            return Err(RulesError::Duplicate {
                id: spec.id.clone(),
                first: prev.origin.clone(),
                second: origin.to_string(),
            });
        }
        self.rules.push(Rule {
            id: RuleId(spec.id.clone()),
            spec,
            max_len: pattern.max_len,
            pattern,
            origin: origin.to_string(),
            builtin: false,
            imported: false,
        });
        Ok(())
    }

    /// Adds a rule translated from another scanner's config ([`crate::gitleaks`]): checked like
    /// any rule, but it needs no examples.
    pub fn add_imported(&mut self, origin: &str, spec: RuleSpec) -> Result<(), RulesError> {
        self.add_spec(origin, 0, spec)?;
        if let Some(r) = self.rules.last_mut() {
            r.imported = true;
        }
        Ok(())
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Drops rules whose id equals one of `ids` or starts with `prefix` for an entry `prefix*`.
    pub fn disable(&mut self, ids: &[String]) {
        self.rules
            .retain(|r| !ids.iter().any(|d| id_matches(&r.id.0, d)));
    }

    /// Keeps only the rules whose id equals one of `ids` or starts with `prefix` for an entry
    /// `prefix*`. Returns the entries that matched no rule (a typo would otherwise silently
    /// leave nothing to run).
    pub fn enable_only<'a>(&mut self, ids: &'a [String]) -> Vec<&'a str> {
        let unused = ids
            .iter()
            .filter(|e| !self.rules.iter().any(|r| id_matches(&r.id.0, e)))
            .map(String::as_str)
            .collect();
        self.rules
            .retain(|r| ids.iter().any(|e| id_matches(&r.id.0, e)));
        unused
    }

    /// Keeps only the rules for which `keep` is true (used by `rules check FILE`).
    pub fn retain(&mut self, keep: impl FnMut(&Rule) -> bool) {
        self.rules.retain(keep);
    }

    /// Hash over everything that affects matching; keys the compiled-database cache.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"guard-ruleset-v1\0");
        for r in &self.rules {
            h.update(r.id.0.as_bytes());
            h.update([0]);
            h.update(r.spec.pattern.as_bytes());
            h.update([0]);
        }
        h.finalize().into()
    }
}

/// Whether rule id `id` is named by `entry`: the id itself, or a prefix ending in `*`.
fn id_matches(id: &str, entry: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => id == entry,
    }
}

fn valid_id(id: &str) -> bool {
    let mut parts = id.splitn(2, '.');
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
    };
    matches!((parts.next(), parts.next()), (Some(p), Some(n)) if ok(p) && ok(n))
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()[..byte.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn find_rule_line(text: &str, id: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with("id") && l.contains(&format!("\"{id}\""))
                || l.contains(&format!("'{id}'"))
        })
        .map(|i| i + 1)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, pattern: &str) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            name: "t".into(),
            pattern: pattern.into(),
            keywords: vec![],
            min_entropy: None,
            validate: None,
            confidence: Confidence::High,
            description: String::new(),
            references: vec![],
            examples: vec![],
            negative_examples: vec![],
            allow: vec![],
        }
    }

    #[test]
    fn builtin_rules_load() {
        let set = Ruleset::builtin().expect("builtin rules should load");
        assert!(set.len() >= 40, "only {} builtin rules", set.len());
    }

    /// What build.rs derived equals what the loader derives from the TOML files at run time.
    #[test]
    fn prebuilt_builtin_equals_runtime_load() {
        let built = Ruleset::builtin().expect("builtin rules should load");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("rules/")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut runtime = Ruleset::empty();
        for f in files {
            runtime.add_file(&f).expect("rule file loads");
        }
        assert_eq!(built.len(), runtime.len());
        for (a, b) in built.rules().iter().zip(runtime.rules()) {
            assert_eq!(a.id, b.id);
            assert_eq!(a.pattern, b.pattern, "{}", a.id.0);
            assert_eq!(a.spec.pattern, b.spec.pattern);
            assert_eq!(a.spec.examples, b.spec.examples);
        }
    }

    #[test]
    fn builtin_rules_settle_at_newlines() {
        // Stream mode reports a complete line at once only if every rule is line-local or starts
        // with a few known literals (a PEM header, `machine`): keep it so for the builtin set. A
        // rule spans lines only when it must (private keys, .netrc entries, JSON and INI blocks);
        // `\s`, a negated class without `\n` or a boundary class that can consume `\n` makes a
        // one-line rule multi-line by accident.
        const MAX_START_LITERALS: usize = 8;
        let set = Ruleset::builtin().expect("builtin rules should load");
        let slow: Vec<String> = set
            .rules()
            .iter()
            .filter(|r| r.pattern.spans_newline)
            .filter_map(|r| match &r.pattern.start_literals {
                None => Some(format!("{} (no start literals)", r.id.0)),
                Some(l) if l.len() > MAX_START_LITERALS => {
                    Some(format!("{} ({} start literals)", r.id.0, l.len()))
                }
                // A literal holding `\n` may be cut at any line end, so the line waits for it.
                Some(l) if l.iter().any(|l| l.contains(&b'\n')) => {
                    Some(format!("{} (a start literal holds a newline)", r.id.0))
                }
                Some(_) => None,
            })
            .collect();
        assert!(
            slow.is_empty(),
            "multi-line rules must start with at most {MAX_START_LITERALS} one-line literals: \
             {slow:?}"
        );
    }

    #[test]
    fn rejects_unbounded_and_empty_patterns() {
        let mut s = Ruleset::empty();
        let e = s
            .add_spec("f", 3, spec("a.b", "x[a-z]+"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unbounded") && e.contains("f:3") && e.contains("a.b"),
            "{e}"
        );
        assert!(s
            .add_spec("f", 1, spec("a.c", "x?"))
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(s.add_spec("f", 1, spec("a.d", "(?=x)y")).is_err());
        assert!(s.add_spec("f", 1, spec("Bad Id", "xy")).is_err());
        s.add_spec("f", 1, spec("a.e", "x[a-z]{1,4}"))
            .expect("bounded pattern is fine");
        assert_eq!(s.rules()[0].max_len, 5);
        assert!(matches!(
            s.add_spec("g", 1, spec("a.e", "yy")),
            Err(RulesError::Duplicate { .. })
        ));
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let mut s = Ruleset::empty();
        let text =
            "[[rule]]\nid = \"a.b\"\nname = \"x\"\npattern = \"ab\"\nconfidence = \"sure\"\n";
        let e = s.add_toml("my.toml", text).unwrap_err().to_string();
        assert!(e.starts_with("my.toml:5:"), "{e}");
        let text =
            "[[rule]]\nid = \"a.b\"\nname = \"x\"\npattern = \"a(b\"\nconfidence = \"low\"\n";
        let e = s.add_toml("my.toml", text).unwrap_err().to_string();
        assert!(e.contains("my.toml:2") && e.contains("a.b"), "{e}");
    }

    #[test]
    fn disable_by_id_and_prefix() {
        let mut s = Ruleset::empty();
        for id in ["a.x", "a.y", "b.z"] {
            s.add_spec("f", 1, spec(id, "xy")).expect("valid");
        }
        let mut e = s.clone();
        s.disable(&["a.*".into()]);
        assert_eq!(
            s.rules()
                .iter()
                .map(|r| r.id.0.as_str())
                .collect::<Vec<_>>(),
            ["b.z"]
        );
        let entries: Vec<String> = vec!["a.y".into(), "b.*".into(), "c.*".into()];
        let unused = e.enable_only(&entries);
        assert_eq!(unused, ["c.*"]);
        assert_eq!(
            e.rules()
                .iter()
                .map(|r| r.id.0.as_str())
                .collect::<Vec<_>>(),
            ["a.y", "b.z"]
        );
    }
}
