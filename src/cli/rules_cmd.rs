//! `guard rules list|check`.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};

use super::scan_cmd::RuleSelect;
use crate::config::Config;
use crate::engine::check::{self, ProblemKind};
use crate::rules::{Rule, Ruleset};

/// Output of `guard rules list` (spelled `--format`/`-f`, as in `guard scan`).
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    /// One rule per line: id, confidence, name
    Human,
    /// A JSON array of rule objects
    Json,
}

#[derive(Subcommand)]
pub enum RulesCmd {
    /// List the active rules (builtin plus guard.toml)
    #[command(after_help = "Examples:
  guard rules list -f json | jq -r '.[].id'
  guard rules list --min-confidence high    the rules `guard scan --min-confidence high` runs

JSON fields: id, name, confidence, keywords, description, references, validate, origin.")]
    List {
        /// Config file (default: ./guard.toml, else guard.toml at the git root)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Output format
        #[arg(short, long, value_enum, default_value_t = ListFormat::Human)]
        format: ListFormat,
        /// Same as --format json (kept so older scripts keep working)
        #[arg(long, hide = true, conflicts_with = "format")]
        json: bool,
        #[command(flatten)]
        select: RuleSelect,
    },
    /// Prove every rule's examples: each example matches, each negative does not, on both backends
    #[command(
        after_help = "Examples:\n  guard rules check                 check the builtin rules and guard.toml\n  guard rules check my-rules.toml   check only the rules in a file\n  guard rules check --builtin rules/acme.toml   hold a file to the builtin standard\n\nBuiltin rules need >= 2 examples and >= 2 negative_examples; rules in guard.toml or a file\nneed >= 1 of each.\n\nExit status: 0 all pass, 1 a rule fails its examples, 2 a rule file does not load."
    )]
    Check {
        /// Rule file to check (default: builtin rules plus guard.toml)
        file: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Check FILE as a builtin rule file (>= 2 examples and >= 2 negative examples per rule)
        #[arg(long, requires = "file")]
        builtin: bool,
    },
}

fn active_rules(config: Option<&std::path::Path>) -> anyhow::Result<Ruleset> {
    let mut rules = Ruleset::builtin()?;
    let config = Config::discover(config)?;
    config.apply_rules(&mut rules)?;
    for w in config.warnings() {
        eprintln!("guard: warning: {w}");
    }
    Ok(rules)
}

/// The JSON object `guard rules list -f json` prints for one rule.
pub fn rule_json(r: &Rule) -> serde_json::Value {
    serde_json::json!({
        "id": r.id.0,
        "name": r.spec.name,
        "confidence": r.spec.confidence.as_str(),
        "keywords": r.spec.keywords,
        "description": r.spec.description,
        "references": r.spec.references,
        "validate": r.spec.validate,
        "origin": r.origin,
    })
}

pub fn run(c: RulesCmd) -> anyhow::Result<i32> {
    match c {
        RulesCmd::List {
            config,
            format,
            json,
            select,
        } => {
            let mut rules = active_rules(config.as_deref())?;
            select.apply(&mut rules);
            if json || format == ListFormat::Json {
                let v: Vec<_> = rules.rules().iter().map(rule_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for r in rules.rules() {
                    println!(
                        "{:<40} {:<6} {}",
                        r.id.0,
                        r.spec.confidence.as_str(),
                        r.spec.name
                    );
                }
                eprintln!("{} rules", rules.len());
            }
            Ok(0)
        }
        RulesCmd::Check {
            file,
            config,
            builtin,
        } => {
            let rules = match &file {
                Some(f) => {
                    let mut s = Ruleset::empty();
                    s.add_file(f)?;
                    if builtin {
                        s.mark_builtin();
                    }
                    s
                }
                None => active_rules(config.as_deref())?,
            };
            let problems = check::check(&rules)?;
            for p in &problems {
                println!("FAIL {} ({}): {}", p.rule, p.origin, p.message);
            }
            let mut thin: Vec<&str> = problems
                .iter()
                .filter(|p| p.kind == ProblemKind::TooFewExamples)
                .map(|p| p.rule.as_str())
                .collect();
            thin.dedup();
            if !thin.is_empty() {
                println!(
                    "{} rule(s) with too few examples or negative examples: {}",
                    thin.len(),
                    thin.join(", ")
                );
            }
            let n_examples: usize = rules
                .rules()
                .iter()
                .map(|r| r.spec.examples.len() + r.spec.negative_examples.len())
                .sum();
            println!(
                "{} rules, {} examples checked on both backends: {}",
                rules.len(),
                n_examples,
                if problems.is_empty() {
                    "all pass".to_string()
                } else {
                    format!("{} problem(s)", problems.len())
                }
            );
            Ok(if problems.is_empty() { 0 } else { 1 })
        }
    }
}
