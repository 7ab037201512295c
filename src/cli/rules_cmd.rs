//! `guard rules list|check`.

use std::path::PathBuf;

use clap::Subcommand;

use crate::config::Config;
use crate::engine::check;
use crate::rules::Ruleset;

#[derive(Subcommand)]
pub enum RulesCmd {
    /// List the active rules (builtin plus guard.toml)
    #[command(after_help = "Example:\n  guard rules list --json | jq -r '.[].id'")]
    List {
        /// Config file (default: ./guard.toml, else guard.toml at the git root)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Prove every rule's examples: each example matches, each negative does not, on both backends
    #[command(
        after_help = "Examples:\n  guard rules check                 check the builtin rules and guard.toml\n  guard rules check my-rules.toml   check only the rules in a file\n\nExit status: 0 all pass, 1 a rule fails its examples, 2 a rule file does not load."
    )]
    Check {
        /// Rule file to check (default: builtin rules plus guard.toml)
        file: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn active_rules(config: Option<&std::path::Path>) -> anyhow::Result<Ruleset> {
    let mut rules = Ruleset::builtin()?;
    Config::discover(config)?.apply_rules(&mut rules)?;
    Ok(rules)
}

pub fn run(c: RulesCmd) -> anyhow::Result<i32> {
    match c {
        RulesCmd::List { config, json } => {
            let rules = active_rules(config.as_deref())?;
            if json {
                let v: Vec<_> = rules
                    .rules()
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "id": r.id.0, "name": r.spec.name, "confidence": r.spec.confidence.as_str(),
                            "keywords": r.spec.keywords, "validate": r.spec.validate, "origin": r.origin,
                            "references": r.spec.references,
                        })
                    })
                    .collect();
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
        RulesCmd::Check { file, config } => {
            let rules = match &file {
                Some(f) => {
                    let mut s = Ruleset::empty();
                    s.add_file(f)?;
                    s
                }
                None => active_rules(config.as_deref())?,
            };
            let problems = check::check(&rules)?;
            for p in &problems {
                println!("FAIL {} ({}): {}", p.rule, p.origin, p.message);
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
