//! `guard rules check`: every example of every rule must produce a finding of that rule, every
//! negative example must not, and both match backends must agree on every example.

use super::{Allowlist, Backend, Engine, EngineError, Match, RuleIndex};
use crate::rules::{Rule, Ruleset};

/// One failed expectation, with enough context to fix the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub rule: String,
    pub origin: String,
    pub message: String,
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
    for (i, rule) in set.rules().iter().enumerate() {
        let i = RuleIndex(i as u32);
        let mut bad = |message: String| {
            problems.push(Problem {
                rule: rule.id.0.clone(),
                origin: rule.origin.clone(),
                message,
            })
        };
        if rule.spec.examples.is_empty() {
            bad("has no examples".into());
        }
        if rule.spec.negative_examples.is_empty() {
            bad("has no negative_examples".into());
        }
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
        let problems = check(&set).expect("builtin rules should compile");
        assert!(problems.is_empty(), "{problems:#?}");
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
