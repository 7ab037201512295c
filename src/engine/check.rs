//! `guard rules check`: every example of every rule must produce a finding of that rule, every
//! negative example must not, and both match backends must agree on every example.
//!
//! How many examples a rule needs depends on where it lives ([`Rule::min_examples`]): a builtin
//! rule (`rules/*.toml`) needs at least [`MIN_EXAMPLES_BUILTIN`] examples and as many negative
//! examples — one example proves little about a format, and a near-miss negative (right prefix,
//! wrong length or alphabet) is what catches a loose pattern; a user rule in `guard.toml` needs
//! one of each; a rule imported from a gitleaks config has none to prove.

use super::{Allowlist, Backend, Engine, EngineError, Match, RuleIndex};
use crate::rules::{Rule, Ruleset};

pub use crate::rules::MIN_EXAMPLES_BUILTIN;

/// One failed expectation, with enough context to fix the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub rule: String,
    pub origin: String,
    pub kind: ProblemKind,
    pub message: String,
}

/// What kind of expectation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The rule has fewer examples or negative examples than it needs.
    TooFewExamples,
    /// An example or negative example does not behave as stated (or the backends disagree).
    Example,
}

/// The rules of `set` that have fewer examples or negative examples than they need, one problem
/// per missing kind, naming the counts.
pub fn too_few_examples(set: &Ruleset) -> Vec<Problem> {
    let mut out = Vec::new();
    for rule in set.rules() {
        let need = rule.min_examples();
        for (have, what) in [
            (rule.spec.examples.len(), "examples"),
            (rule.spec.negative_examples.len(), "negative_examples"),
        ] {
            if have < need {
                let whose = if rule.builtin {
                    "a builtin rule"
                } else {
                    "a rule"
                };
                out.push(Problem {
                    rule: rule.id.0.clone(),
                    origin: rule.origin.clone(),
                    kind: ProblemKind::TooFewExamples,
                    message: format!("{what}: {have}; {whose} needs at least {need}"),
                });
            }
        }
    }
    out
}

/// Checks the examples of `set`. Engines are built with an empty allowlist, so a user's config
/// cannot hide a broken rule, and keep overlapping matches of different rules, so an example of a
/// loose rule is not hidden by a more confident rule matching the same bytes.
pub fn check(set: &Ruleset) -> Result<Vec<Problem>, EngineError> {
    let fast = Engine::builder(set.clone())
        .allowlist(Allowlist::new())
        .keep_overlaps(true)
        .build()?;
    let slow = Engine::builder(set.clone())
        .backend(Backend::RegexOnly)
        .keep_overlaps(true)
        .build()?;
    let mut problems = Vec::new();
    let mut few = too_few_examples(set);
    for (i, rule) in set.rules().iter().enumerate() {
        problems.extend(extract_if(&mut few, |p| p.rule == rule.id.0));
        let i = RuleIndex(i as u32);
        let mut bad = |message: String| {
            problems.push(Problem {
                rule: rule.id.0.clone(),
                origin: rule.origin.clone(),
                kind: ProblemKind::Example,
                message,
            })
        };
        for (n, ex) in rule.spec.examples.iter().enumerate() {
            let (a, b) = both(&fast, &slow, ex.as_bytes())?;
            if a != b {
                bad(format!(
                    "example {} gives different matches on the two backends",
                    n + 1
                ));
            }
            if !a.iter().any(|m| m.rule == i) {
                bad(format!("example {} does not produce a finding", n + 1));
            }
            if !keywords_hold(rule, ex.as_bytes(), &a, i) {
                bad(format!(
                    "example {}: a match contains none of the keywords",
                    n + 1
                ));
            }
        }
        for (n, ex) in rule.spec.negative_examples.iter().enumerate() {
            let (a, b) = both(&fast, &slow, ex.as_bytes())?;
            if a != b {
                bad(format!(
                    "negative example {} gives different matches on the two backends",
                    n + 1
                ));
            }
            if a.iter().any(|m| m.rule == i) {
                bad(format!("negative example {} produces a finding", n + 1));
            }
        }
    }
    Ok(problems)
}

/// Removes and returns the elements of `v` for which `f` holds, keeping the order of both.
fn extract_if<T>(v: &mut Vec<T>, mut f: impl FnMut(&T) -> bool) -> Vec<T> {
    let (out, keep): (Vec<T>, Vec<T>) = std::mem::take(v).into_iter().partition(|x| f(x));
    *v = keep;
    out
}

fn both(fast: &Engine, slow: &Engine, hay: &[u8]) -> Result<(Vec<Match>, Vec<Match>), EngineError> {
    Ok((
        fast.scan_block(&mut fast.scratch()?, hay)?,
        slow.scan_block(&mut slow.scratch()?, hay)?,
    ))
}

fn keywords_hold(rule: &Rule, hay: &[u8], matches: &[Match], i: RuleIndex) -> bool {
    let kws = &rule.spec.keywords;
    kws.is_empty()
        || matches.iter().filter(|m| m.rule == i).all(|m| {
            let text = hay[m.start as usize..m.end as usize].to_ascii_lowercase();
            kws.iter()
                .any(|k| memchr::memmem::find(&text, k.to_ascii_lowercase().as_bytes()).is_some())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_pass_their_own_examples() {
        let set = Ruleset::builtin().expect("builtin rules should load");
        let problems: Vec<Problem> = check(&set)
            .expect("builtin rules should compile")
            .into_iter()
            .filter(|p| p.kind == ProblemKind::Example)
            .collect();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// Every builtin rule has at least two examples and two negative examples (issue 10). The
    /// failure message lists every rule that does not, with its counts.
    #[test]
    fn builtin_rules_have_two_examples_and_two_negatives() {
        let set = Ruleset::builtin().expect("builtin rules should load");
        let few = too_few_examples(&set);
        let mut ids: Vec<&str> = few.iter().map(|p| p.rule.as_str()).collect();
        ids.dedup();
        assert!(
            few.is_empty(),
            "{} builtin rule(s) need more examples (>= {MIN_EXAMPLES_BUILTIN} examples and >= {MIN_EXAMPLES_BUILTIN} negative_examples): {}\n{}",
            ids.len(),
            ids.join(", "),
            few.iter()
                .map(|p| format!("  {} ({}): {}", p.rule, p.origin, p.message))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    #[test]
    fn minimum_examples_depend_on_where_the_rule_lives() {
        let text = r#"
[[rule]]
id = "t.x"
name = "x"
pattern = 'tok_[a-z]{8}'
keywords = ["tok_"]
confidence = "high"
examples = ["tok_abcdefgh"]
negative_examples = ["tok_abc"]
"#;
        let mut user = Ruleset::empty();
        user.add_toml("guard.toml", text).expect("valid rule");
        assert!(check(&user).expect("compiles").is_empty());
        let mut builtin = user.clone();
        builtin.mark_builtin();
        let p = check(&builtin).expect("compiles");
        let msgs: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "examples: 1; a builtin rule needs at least 2",
                "negative_examples: 1; a builtin rule needs at least 2"
            ]
        );
        assert!(p.iter().all(|p| p.kind == ProblemKind::TooFewExamples));
        let mut none = Ruleset::empty();
        none.add_toml(
            "guard.toml",
            &text.replace("examples = [\"tok_abcdefgh\"]\n", ""),
        )
        .expect("valid rule");
        assert_eq!(
            check(&none).expect("compiles")[0].message,
            "examples: 0; a rule needs at least 1"
        );
    }

    #[test]
    fn a_wrong_example_is_reported() {
        let mut set = Ruleset::empty();
        let text = r#"
[[rule]]
id = "t.x"
name = "x"
pattern = 'tok_[a-z]{8}'
keywords = ["tok_"]
confidence = "high"
examples = ["tok_abcdefgh", "tok_ABCDEFGH"]
negative_examples = ["tok_abcdefgh"]
"#;
        set.add_toml("t.toml", text).expect("valid rule");
        let p = check(&set).expect("compiles");
        let msgs: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "example 2 does not produce a finding",
                "negative example 1 produces a finding"
            ]
        );
    }
}
