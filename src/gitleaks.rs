//! Migration from gitleaks: a `.gitleaks.toml` and a `.gitleaksignore`, named in `guard.toml`:
//!
//! ```toml
//! [import]
//! gitleaks = ".gitleaks.toml"        # its allowlists and custom rules
//! gitleaksignore = ".gitleaksignore" # its fingerprints, as a suppression list
//! ```
//!
//! Paths are relative to the directory of `guard.toml`. What is imported:
//! - `[[rules]]` become guard rules `gitleaks.<id>` (confidence `medium`): `regex` (translated,
//!   below), `keywords`, `secretGroup` (that group becomes guard's `secret` group; without it guard
//!   takes group 1, where gitleaks takes the first non-empty group), `entropy` (`min_entropy`),
//!   and the rule's allowlists (`regexes` on the secret and `stopwords` become the rule's `allow`).
//! - The global `[allowlist]` / `[[allowlists]]`: `paths` (regexes on the reported path),
//!   `regexes` (on the secret), `stopwords`, and `commits` (findings in git history introduced by
//!   those commits are suppressed).
//! - `.gitleaksignore` lines `commit:file:rule:line` or `file:rule:line` suppress the finding at
//!   that file and line (and commit, when given). The rule part is matched for imported rules;
//!   gitleaks' own builtin rule ids mean nothing to guard, so such a line suppresses any guard
//!   finding at that place.
//!
//! Regexes are RE2 (Go) syntax, which guard's parser mostly shares (`(?i)`, `[[:alpha:]]`, `\z`
//! parse as they are). Translated: `\Q…\E` literals are escaped; unbounded repetitions (`*`, `+`,
//! `{n,}`) are bounded to at most [`REPEAT_CAP`] (guard confirms a bounded window around each
//! prefilter hit, so every rule has a maximum length); `^`, `$`, `\A` and `\z` become line anchors
//! (`(?m:^)`, `(?m:$)`), since guard matches windows of a file, not the file as one string.
//! Every change that can alter what a rule matches is listed as a warning naming the rule.
//! `keywords` are kept as they are: like gitleaks, guard's regex backend skips a rule when none
//! of its keywords occurs in the input; the Hyperscan backend does not gate on keywords, so a
//! gitleaks keyword that is not part of the match itself can make the two backends differ (guard's
//! own rules are held to "every match contains a keyword" by `guard rules check`).
//!
//! Not imported, each listed as a warning naming the rule and why (never dropped silently):
//! rules guard refuses (nested unbounded repetitions, Unicode classes, patterns too large or that
//! can match empty), path-only rules and a rule's `path` restriction (the rule is imported and
//! applies to every file), composite rules (`[[rules.required]]`), allowlists with
//! `regexTarget = "match"` or `"line"`, `condition = "AND"` across several criteria, per-rule
//! `paths` and `commits`, `targetRules`, and `[extend]` (gitleaks' default rules are not imported;
//! guard's builtin rules apply instead).

use std::collections::{BTreeMap, BTreeSet};

use regex_syntax::ast::{self, Ast};

use crate::finding::{Finding, Origin};
use crate::rules::{Confidence, RuleSpec};

/// Largest repetition an unbounded gitleaks repetition (`*`, `+`, `{n,}`) is given.
pub const REPEAT_CAP: u32 = 256;

/// What a `.gitleaks.toml` turned into.
#[derive(Debug, Default)]
pub struct Import {
    pub rules: Vec<RuleSpec>,
    /// Regexes on the reported path.
    pub path_regexes: Vec<String>,
    /// Regexes on the secret value.
    pub secret_regexes: Vec<String>,
    pub stopwords: Vec<String>,
    /// Commit ids (or prefixes) whose findings are suppressed.
    pub commits: Vec<String>,
    /// gitleaks rule id → guard rule id, for `.gitleaksignore`.
    pub ids: BTreeMap<String, String>,
    /// What was changed or could not be imported, one line each, naming the rule.
    pub warnings: Vec<String>,
}

/// A regex after translation, with what the translation changed.
#[derive(Debug)]
pub struct Translated {
    pub pattern: String,
    pub notes: Vec<String>,
}

/// Translates an RE2 regex into guard's syntax. `bound` caps unbounded repetitions (rule
/// patterns; allowlist regexes need no bound).
pub fn translate_regex(re: &str, bound: bool) -> Result<Translated, String> {
    let mut notes = Vec::new();
    let pre = unquote(re);
    if pre != re {
        notes.push("\\Q…\\E literals escaped".to_string());
    }
    let mut tree = ast::parse::Parser::new()
        .parse(&pre)
        .map_err(|e| format!("regex does not parse: {}", first_line(&e.to_string())))?;
    let mut seen = Seen::default();
    rewrite(&mut tree, bound, &mut seen);
    if seen.unbounded {
        notes.push(format!(
            "unbounded repetition (*, +, {{n,}}) bounded to {REPEAT_CAP}"
        ));
    }
    if seen.anchors && !(pre.starts_with("(?") && flags_prefix_has_m(&pre)) {
        notes.push("^/$/\\A/\\z anchors match at line boundaries in guard".to_string());
    }
    let mut pattern = String::new();
    ast::print::Printer::new()
        .print(&tree, &mut pattern)
        .map_err(|e| e.to_string())?;
    Ok(Translated { pattern, notes })
}

fn flags_prefix_has_m(p: &str) -> bool {
    p[2..]
        .split([')', ':'])
        .next()
        .is_some_and(|f| f.contains('m') && !f.contains('-'))
}

#[derive(Default)]
struct Seen {
    unbounded: bool,
    anchors: bool,
}

fn rewrite(node: &mut Ast, bound: bool, seen: &mut Seen) {
    match node {
        Ast::Repetition(r) => {
            use ast::{RepetitionKind as K, RepetitionRange as R};
            if bound {
                let new = match &r.op.kind {
                    K::ZeroOrMore => Some(R::Bounded(0, REPEAT_CAP)),
                    K::OneOrMore => Some(R::Bounded(1, REPEAT_CAP)),
                    K::Range(R::AtLeast(n)) => Some(R::Bounded(*n, (*n).max(REPEAT_CAP))),
                    _ => None,
                };
                if let Some(range) = new {
                    r.op.kind = K::Range(range);
                    seen.unbounded = true;
                }
            }
            rewrite(&mut r.ast, bound, seen);
        }
        Ast::Group(g) => rewrite(&mut g.ast, bound, seen),
        Ast::Alternation(a) => a.asts.iter_mut().for_each(|x| rewrite(x, bound, seen)),
        Ast::Concat(c) => c.asts.iter_mut().for_each(|x| rewrite(x, bound, seen)),
        Ast::Assertion(a) => {
            use ast::AssertionKind as A;
            let kind = match a.kind {
                A::StartLine | A::StartText => A::StartLine,
                A::EndLine | A::EndText => A::EndLine,
                _ => return,
            };
            seen.anchors = true;
            let span = a.span;
            let flag = ast::FlagsItem {
                span,
                kind: ast::FlagsItemKind::Flag(ast::Flag::MultiLine),
            };
            *node = Ast::group(ast::Group {
                span,
                kind: ast::GroupKind::NonCapturing(ast::Flags {
                    span,
                    items: vec![flag],
                }),
                ast: Box::new(Ast::assertion(ast::Assertion { span, kind })),
            });
        }
        _ => {}
    }
}

/// Makes capture group `n` the `secret` group; false when there is no such group.
fn name_secret_group(node: &mut Ast, n: u32) -> bool {
    match node {
        Ast::Group(g) => {
            let index = match &g.kind {
                ast::GroupKind::CaptureIndex(i) => Some(*i),
                ast::GroupKind::CaptureName { name, .. } => Some(name.index),
                ast::GroupKind::NonCapturing(_) => None,
            };
            if index == Some(n) {
                g.kind = ast::GroupKind::CaptureName {
                    starts_with_p: true,
                    name: ast::CaptureName {
                        span: g.span,
                        name: "secret".into(),
                        index: n,
                    },
                };
                return true;
            }
            name_secret_group(&mut g.ast, n)
        }
        Ast::Repetition(r) => name_secret_group(&mut r.ast, n),
        Ast::Alternation(a) => a.asts.iter_mut().any(|x| name_secret_group(x, n)),
        Ast::Concat(c) => c.asts.iter_mut().any(|x| name_secret_group(x, n)),
        _ => false,
    }
}

/// RE2's `\Q…\E` (quoted literal), which guard's parser lacks, as escaped text.
fn unquote(re: &str) -> String {
    let mut out = String::new();
    let mut rest = re;
    while let Some(i) = rest.find("\\Q") {
        // An escaped backslash before `\Q` (`\\Q`) is a literal backslash and a `Q`.
        let backslashes = rest[..i].chars().rev().take_while(|&c| c == '\\').count();
        if backslashes % 2 == 1 {
            out.push_str(&rest[..i + 2]);
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let body = &rest[i + 2..];
        let (lit, after) = match body.find("\\E") {
            Some(j) => (&body[..j], &body[j + 2..]),
            None => (body, ""),
        };
        out.push_str(&regex_syntax::escape(lit));
        rest = after;
    }
    out.push_str(rest);
    out
}

fn first_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// `gitleaks.<id>`, lowercased, with characters outside guard's id alphabet replaced by `-`.
pub fn guard_id(gitleaks_id: &str) -> String {
    let name: String = gitleaks_id
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("gitleaks.{name}")
}

fn strings(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One allowlist table, old (`[allowlist]`) or new (`[[allowlists]]`) form.
struct Allow {
    paths: Vec<String>,
    regexes: Vec<String>,
    stopwords: Vec<String>,
    commits: Vec<String>,
    /// `regexTarget` other than the secret.
    target: Option<String>,
    and: bool,
    target_rules: Vec<String>,
    unknown: Vec<String>,
}

fn allow_table(t: &toml::Table) -> Allow {
    const KNOWN: &[&str] = &[
        "description",
        "paths",
        "regexes",
        "stopwords",
        "commits",
        "regexTarget",
        "condition",
        "targetRules",
    ];
    Allow {
        paths: strings(t.get("paths")),
        regexes: strings(t.get("regexes")),
        stopwords: strings(t.get("stopwords")),
        commits: strings(t.get("commits")),
        target: t
            .get("regexTarget")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && *s != "secret")
            .map(str::to_string),
        and: t
            .get("condition")
            .and_then(|v| v.as_str())
            .is_some_and(|c| c.eq_ignore_ascii_case("and")),
        target_rules: strings(t.get("targetRules")),
        unknown: t
            .keys()
            .filter(|k| !KNOWN.contains(&k.as_str()))
            .cloned()
            .collect(),
    }
}

impl Allow {
    fn kinds(&self) -> usize {
        [
            !self.paths.is_empty(),
            !self.regexes.is_empty(),
            !self.stopwords.is_empty(),
            !self.commits.is_empty(),
        ]
        .iter()
        .filter(|&&b| b)
        .count()
    }
}

/// The allowlist tables of a table: `allowlist` (one) and `allowlists` (an array).
fn allow_tables(t: &toml::Table) -> Vec<&toml::Table> {
    let mut v: Vec<&toml::Table> = t
        .get("allowlist")
        .and_then(|a| a.as_table())
        .into_iter()
        .collect();
    if let Some(arr) = t.get("allowlists").and_then(|a| a.as_array()) {
        v.extend(arr.iter().filter_map(|x| x.as_table()));
    }
    v
}

/// Translates a `.gitleaks.toml` (`origin` names it in warnings).
pub fn import(origin: &str, text: &str) -> Result<Import, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
    let mut out = Import::default();
    let warn = |out: &mut Import, msg: String| out.warnings.push(format!("{origin}: {msg}"));
    for key in doc.keys() {
        match key.as_str() {
            "title" | "description" | "rules" | "allowlist" | "allowlists" | "minVersion" => {}
            "extend" => warn(
                &mut out,
                "[extend] not followed: gitleaks' default rules are not imported (guard's builtin rules apply instead), nor other config files".into(),
            ),
            other => warn(&mut out, format!("key {other:?} not understood; ignored")),
        }
    }
    // The global allowlists.
    for t in allow_tables(&doc) {
        let a = allow_table(t);
        let what = "global allowlist";
        for k in &a.unknown {
            warn(
                &mut out,
                format!("{what}: key {k:?} not understood; ignored"),
            );
        }
        if !a.target_rules.is_empty() {
            warn(&mut out, format!("{what} with targetRules {:?} not imported: guard has no allowlist scoped to rules", a.target_rules));
            continue;
        }
        if a.and && a.kinds() > 1 {
            warn(&mut out, format!("{what} with condition = \"AND\" not imported: guard applies each criterion alone, which would allow more than gitleaks does"));
            continue;
        }
        for p in &a.paths {
            match translate_regex(p, false)
                .and_then(|t| crate::pattern::byte_regex(&t.pattern).map(|_| t.pattern))
            {
                Ok(p) => out.path_regexes.push(p),
                Err(e) => warn(
                    &mut out,
                    format!("{what}: path regex {p:?} not imported: {e}"),
                ),
            }
        }
        if let Some(target) = &a.target {
            if !a.regexes.is_empty() {
                warn(&mut out, format!("{what}: {} regex(es) with regexTarget = {target:?} not imported: guard's allowlist regexes apply to the secret only", a.regexes.len()));
            }
        } else {
            for r in &a.regexes {
                match translate_regex(r, false)
                    .and_then(|t| crate::pattern::byte_regex(&t.pattern).map(|_| t.pattern))
                {
                    Ok(p) => out.secret_regexes.push(p),
                    Err(e) => warn(&mut out, format!("{what}: regex {r:?} not imported: {e}")),
                }
            }
        }
        out.stopwords.extend(a.stopwords);
        out.commits.extend(a.commits);
    }
    // The rules.
    let rules = doc
        .get("rules")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for (n, r) in rules.iter().enumerate() {
        let Some(t) = r.as_table() else {
            warn(&mut out, format!("rules[{n}] is not a table; ignored"));
            continue;
        };
        let gid = t
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("rule-{}", n + 1));
        match import_rule(&gid, t) {
            Ok((spec, notes)) => {
                for note in notes {
                    warn(&mut out, format!("rule {gid}: {note}"));
                }
                if !taken.insert(spec.id.clone()) {
                    warn(
                        &mut out,
                        format!(
                            "rule {gid}: not imported: id {} is taken by another rule",
                            spec.id
                        ),
                    );
                    continue;
                }
                out.ids.insert(gid, spec.id.clone());
                out.rules.push(spec);
            }
            Err(why) => warn(&mut out, format!("rule {gid}: not imported: {why}")),
        }
    }
    Ok(out)
}

/// One `[[rules]]` table → a guard rule, and the notes on what changed.
fn import_rule(gid: &str, t: &toml::Table) -> Result<(RuleSpec, Vec<String>), String> {
    const KNOWN: &[&str] = &[
        "id",
        "description",
        "regex",
        "secretGroup",
        "entropy",
        "keywords",
        "path",
        "tags",
        "allowlist",
        "allowlists",
        "report",
        "required",
        "skipReport",
    ];
    let mut notes = Vec::new();
    for k in t.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        notes.push(format!("key {k:?} not understood; ignored"));
    }
    if t.contains_key("required") {
        return Err("composite rules ([[rules.required]]) are not supported".into());
    }
    if t.get("report").and_then(|v| v.as_bool()) == Some(false)
        || t.get("skipReport").and_then(|v| v.as_bool()) == Some(true)
    {
        return Err(
            "a rule that does not report (report = false) only serves composite rules".into(),
        );
    }
    let Some(regex) = t.get("regex").and_then(|v| v.as_str()) else {
        return Err(if t.contains_key("path") {
            "path-only rules (a file name, no regex) are not supported".into()
        } else {
            "no regex".into()
        });
    };
    if t.contains_key("path") {
        notes.push("its `path` restriction is not imported: the rule applies to every file".into());
    }
    let tr = translate_regex(regex, true)?;
    notes.extend(tr.notes);
    let mut pattern = tr.pattern;
    if let Some(g) = t.get("secretGroup").and_then(|v| v.as_integer()) {
        if g > 0 {
            let mut tree = ast::parse::Parser::new()
                .parse(&pattern)
                .map_err(|e| format!("regex does not parse: {}", first_line(&e.to_string())))?;
            if !name_secret_group(&mut tree, g as u32) {
                return Err(format!("secretGroup {g} is not a group of the regex"));
            }
            pattern.clear();
            ast::print::Printer::new()
                .print(&tree, &mut pattern)
                .map_err(|e| e.to_string())?;
        }
    }
    crate::pattern::analyze(&pattern)?;
    crate::pattern::byte_regex(&pattern).map_err(|e| format!("regex does not compile: {e}"))?;
    let min_entropy = match t.get("entropy") {
        Some(v) => {
            let e = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
            match e {
                Some(e) if (0.0..=8.0).contains(&e) => Some(e),
                Some(e) if e > 8.0 => return Err(format!("entropy {e} is above 8 bits/char")),
                _ => None,
            }
        }
        None => None,
    };
    let mut allow = Vec::new();
    for a in allow_tables(t).into_iter().map(allow_table) {
        for k in &a.unknown {
            notes.push(format!("allowlist key {k:?} not understood; ignored"));
        }
        if a.and && a.kinds() > 1 {
            notes.push("allowlist with condition = \"AND\" not imported (guard would apply each criterion alone, allowing more)".into());
            continue;
        }
        if !a.paths.is_empty() {
            notes.push(format!("allowlist paths {:?} not imported: guard has no per-rule path allowlist (use [allowlist] paths)", a.paths));
        }
        if !a.commits.is_empty() {
            notes.push(format!(
                "allowlist commits {:?} not imported: guard has no per-rule commit allowlist",
                a.commits
            ));
        }
        if let Some(target) = &a.target {
            if !a.regexes.is_empty() {
                notes.push(format!("allowlist regexes with regexTarget = {target:?} not imported: a rule's `allow` regexes apply to the secret only"));
            }
        } else {
            for r in &a.regexes {
                match translate_regex(r, false)
                    .and_then(|t| crate::pattern::byte_regex(&t.pattern).map(|_| t.pattern))
                {
                    Ok(p) => allow.push(p),
                    Err(e) => notes.push(format!("allowlist regex {r:?} not imported: {e}")),
                }
            }
        }
        allow.extend(
            a.stopwords
                .iter()
                .map(|w| format!("(?i){}", regex_syntax::escape(w))),
        );
    }
    let description = t
        .get("description")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let spec = RuleSpec {
        id: guard_id(gid),
        name: if description.is_empty() {
            gid.to_string()
        } else {
            description.clone()
        },
        pattern,
        keywords: strings(t.get("keywords"))
            .into_iter()
            .filter(|k| !k.is_empty())
            .collect(),
        min_entropy,
        validate: None,
        confidence: Confidence::Medium,
        description: format!("Imported from gitleaks rule {gid}. {description}")
            .trim()
            .to_string(),
        references: vec![],
        examples: vec![],
        negative_examples: vec![],
        allow,
    };
    Ok((spec, notes))
}

/// One `.gitleaksignore` fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoreEntry {
    pub commit: Option<String>,
    pub file: String,
    pub rule: String,
    pub line: u64,
}

/// The fingerprints of a `.gitleaksignore`, with the rule-id mapping of the imported config.
#[derive(Clone, Debug, Default)]
pub struct IgnoreList {
    entries: Vec<IgnoreEntry>,
    /// gitleaks rule id → guard rule id, for the imported rules.
    ids: BTreeMap<String, String>,
    /// Commits of the global allowlist.
    commits: Vec<String>,
}

/// Parses `.gitleaksignore` text; lines that are not fingerprints are returned as warnings.
pub fn parse_ignore(origin: &str, text: &str) -> (Vec<IgnoreEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.rsplitn(3, ':');
        let (Some(num), Some(rule), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            warnings.push(format!(
                "{origin}:{}: not a fingerprint (file:rule:line or commit:file:rule:line); ignored",
                n + 1
            ));
            continue;
        };
        let Ok(num) = num.parse::<u64>() else {
            warnings.push(format!(
                "{origin}:{}: line number {num:?} is not a number; ignored",
                n + 1
            ));
            continue;
        };
        let (commit, file) = match rest.split_once(':') {
            Some((c, f))
                if (7..=64).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                (Some(c.to_ascii_lowercase()), f)
            }
            _ => (None, rest),
        };
        entries.push(IgnoreEntry {
            commit,
            file: file.trim_start_matches("./").to_string(),
            rule: rule.to_string(),
            line: num,
        });
    }
    (entries, warnings)
}

impl IgnoreList {
    pub fn new(
        entries: Vec<IgnoreEntry>,
        ids: BTreeMap<String, String>,
        commits: Vec<String>,
    ) -> IgnoreList {
        IgnoreList {
            entries,
            ids,
            commits: commits
                .into_iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.commits.is_empty()
    }

    /// Whether `f` is suppressed by a fingerprint or an allowlisted commit.
    pub fn suppresses(&self, f: &Finding) -> bool {
        let commit = match &f.origin {
            Origin::GitBlob {
                commit: Some(c), ..
            } => Some(c.id.to_ascii_lowercase()),
            _ => None,
        };
        if let Some(c) = &commit {
            if self
                .commits
                .iter()
                .any(|a| !a.is_empty() && c.starts_with(a.as_str()))
            {
                return true;
            }
        }
        let path = f.origin.path().trim_start_matches("./");
        self.entries.iter().any(|e| {
            e.line == f.location.line
                && (path == e.file || path.ends_with(&format!("/{}", e.file)))
                && self.ids.get(&e.rule).is_none_or(|id| *id == f.rule.0)
                && e.commit
                    .as_ref()
                    .is_none_or(|ec| commit.as_ref().is_some_and(|c| c.starts_with(ec.as_str())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_re2_syntax() {
        let t = translate_regex(r"(?i)key[[:alpha:]]+=([a-z0-9]{8,})\z", true).expect("translates");
        assert_eq!(
            t.pattern,
            r"(?i)key[[:alpha:]]{1,256}=([a-z0-9]{8,256})(?m:$)"
        );
        assert_eq!(t.notes.len(), 2, "{:?}", t.notes);
        crate::pattern::analyze(&t.pattern).expect("guard accepts it");
        let t = translate_regex(r"\Qa.b*\E-[0-9]*?x", true).expect("translates");
        assert_eq!(t.pattern, r"a\.b\*-[0-9]{0,256}?x");
        // Allowlist regexes keep their unbounded repetitions.
        assert_eq!(
            translate_regex(r"^test/.*", false).expect("ok").pattern,
            r"(?m:^)test/.*"
        );
        assert!(translate_regex("a(b", true).is_err());
    }

    #[test]
    fn secret_group_becomes_the_secret() {
        let text = r#"
[[rules]]
id = "Acme_Key"
description = "ACME key"
regex = '''(acme)_(?:x)?([A-Z0-9]{20})'''
secretGroup = 2
entropy = 3
keywords = ["acme_"]
"#;
        let i = import("g.toml", text).expect("imports");
        assert_eq!(i.rules.len(), 1, "{:?}", i.warnings);
        let r = &i.rules[0];
        assert_eq!(r.id, "gitleaks.acme_key");
        assert_eq!(r.pattern, "(acme)_(?:x)?(?P<secret>[A-Z0-9]{20})");
        assert_eq!(r.min_entropy, Some(3.0));
        assert_eq!(i.ids["Acme_Key"], "gitleaks.acme_key");
        assert!(i.warnings.is_empty(), "{:?}", i.warnings);
    }

    #[test]
    fn what_cannot_be_imported_is_listed() {
        let text = r#"
title = "t"
[extend]
useDefault = true

[allowlist]
paths = ['''(^|/)vendor/''']
regexes = ['''EXAMPLE''']
stopwords = ["dummy"]
commits = ["abcdef1234567"]

[[allowlists]]
regexTarget = "line"
regexes = ['''nosecret''']

[[rules]]
id = "nested"
regex = '''(?:[a-z]+\.)+com'''

[[rules]]
id = "pathonly"
path = '''\.pem$'''

[[rules]]
id = "scoped"
regex = '''scoped_[a-z0-9]{16}'''
path = '''\.env$'''
[[rules.allowlists]]
paths = ['''test/''']
stopwords = ["sample"]
regexes = ['''^scoped_0+$''']

[[rules]]
id = "unicode"
regex = '''tok_\p{Greek}{8}'''
"#;
        let i = import("g.toml", text).expect("imports");
        let w = i.warnings.join("\n");
        for expect in [
            "[extend] not followed",
            "regexTarget = \"line\" not imported",
            "rule nested: not imported: pattern can match 65795 bytes",
            "rule pathonly: not imported: path-only rules",
            "rule scoped: its `path` restriction is not imported",
            "rule scoped: allowlist paths [\"test/\"] not imported",
            "rule unicode: not imported",
        ] {
            assert!(w.contains(expect), "missing {expect:?} in:\n{w}");
        }
        assert_eq!(i.rules.len(), 1);
        assert_eq!(i.rules[0].allow, ["(?m:^)scoped_0+(?m:$)", "(?i)sample"]);
        assert_eq!(i.path_regexes, ["((?m:^)|/)vendor/"]);
        assert_eq!(i.secret_regexes, ["EXAMPLE"]);
        assert_eq!(i.stopwords, ["dummy"]);
        assert_eq!(i.commits, ["abcdef1234567"]);
        assert!(w.lines().all(|l| l.starts_with("g.toml: ")), "{w}");
    }

    #[test]
    fn gitleaksignore_lines() {
        let (e, w) = parse_ignore(
            ".gitleaksignore",
            "# comment\n0123456789abcdef0123456789abcdef01234567:src/a.env:acme:3\nconfig/b.env:generic-api-key:12\nbroken\nx:y:z\n",
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            e,
            [
                IgnoreEntry {
                    commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                    file: "src/a.env".into(),
                    rule: "acme".into(),
                    line: 3
                },
                IgnoreEntry {
                    commit: None,
                    file: "config/b.env".into(),
                    rule: "generic-api-key".into(),
                    line: 12
                }
            ]
        );
    }
}
