//! `guard.toml`: the user's extra rules, disabled rules and allowlists.
//!
//! Looked up as `--config FILE`, else `guard.toml` in the current directory, else at the root of
//! the git work tree containing it — the place a team commits shared policy.
//!
//! ```toml
//! [rules]
//! disable = ["generic.*"]          # rule ids, or a prefix ending in *
//!
//! [allowlist]
//! paths = ['(^|/)testdata/']       # regexes on the reported path
//! regexes = ['^AKIA[0-9A-Z]{12}EXAMPLE$']  # regexes on the secret value
//! stopwords = ["dummy"]            # case-insensitive substrings of the secret value
//! inline = true                    # honour `guard:allow` comments (default)
//!
//! [[rule]]                         # same schema as rules/*.toml
//! id = "acme.internal_token"
//! ...
//! ```

use std::path::{Path, PathBuf};

use regex_automata::meta;
use serde::Deserialize;

use crate::engine::Allowlist;
use crate::rules::{RuleSpec, RulesError, Ruleset};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub rules: RulesSection,
    #[serde(default)]
    pub allowlist: AllowSection,
    #[serde(default)]
    pub rule: Vec<RuleSpec>,
    #[serde(skip)]
    pub path: Option<PathBuf>,
    #[serde(skip)]
    text: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSection {
    #[serde(default)]
    pub disable: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowSection {
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub regexes: Vec<String>,
    #[serde(default)]
    pub stopwords: Vec<String>,
    #[serde(default = "yes")]
    pub inline: bool,
}

fn yes() -> bool {
    true
}

impl Default for AllowSection {
    fn default() -> Self {
        AllowSection {
            paths: vec![],
            regexes: vec![],
            stopwords: vec![],
            inline: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// `explicit` if given (must exist), else the first `guard.toml` found as documented above.
    pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(p) = explicit {
            return Config::load(p);
        }
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let mut candidates = vec![cwd.join("guard.toml")];
        if let Some(root) = cwd.ancestors().find(|d| d.join(".git").exists()) {
            candidates.push(root.join("guard.toml"));
        }
        match candidates.into_iter().find(|p| p.is_file()) {
            Some(p) => Config::load(&p),
            None => Ok(Config::default()),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0),
            message: e.message().to_string(),
        })?;
        c.path = Some(path.to_path_buf());
        c.text = text;
        Ok(c)
    }

    fn origin(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "guard.toml".into())
    }

    /// Applies `[rules]` and `[[rule]]` to `set`.
    pub fn apply_rules(&self, set: &mut Ruleset) -> Result<(), ConfigError> {
        set.disable(&self.rules.disable);
        let origin = self.origin();
        for spec in &self.rule {
            let line = self
                .text
                .lines()
                .position(|l| l.contains(&format!("\"{}\"", spec.id)))
                .map(|i| i + 1)
                .unwrap_or(0);
            set.add_spec(&origin, line, spec.clone())?;
        }
        Ok(())
    }

    pub fn allowlist(&self) -> Result<Allowlist, ConfigError> {
        let mut a = Allowlist::new();
        a.inline = self.allowlist.inline;
        for w in &self.allowlist.stopwords {
            a.add_stopword(w);
        }
        for r in &self.allowlist.regexes {
            a.add_regex(r).map_err(|message| ConfigError::Invalid {
                path: self.path.clone().unwrap_or_default(),
                message,
            })?;
        }
        Ok(a)
    }

    pub fn path_allowlist(&self) -> Result<Vec<meta::Regex>, ConfigError> {
        self.allowlist
            .paths
            .iter()
            .map(|p| {
                crate::engine::byte_regex(p).map_err(|e| ConfigError::Invalid {
                    path: self.path.clone().unwrap_or_default(),
                    message: format!("allowlist path regex {p:?}: {e}"),
                })
            })
            .collect()
    }
}
