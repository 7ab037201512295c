//! `guard.toml`: the user's extra rules, disabled rules and allowlists.
//!
//! Looked up as `--config FILE`, else `guard.toml` in the current directory, else at the root of
//! the git work tree containing it — the place a team commits shared policy.
//!
//! ```toml
//! [rules]
//! enable = ["aws.*", "github.*"]   # only these builtin rules run (ids or prefixes); default: all
//! disable = ["generic.*"]          # rule ids, or a prefix ending in *; applied after `enable`
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
//!
//! [import]                         # migration from gitleaks (see `crate::gitleaks`)
//! gitleaks = ".gitleaks.toml"      # its allowlists and [[rules]], translated
//! gitleaksignore = ".gitleaksignore"  # its fingerprints suppress findings
//! ```
//!
//! Import paths are relative to the directory of `guard.toml`. What could not be translated is
//! listed on stderr on every run that loads the config (`guard: warning: …`), rule by rule.
//!
//! `enable` narrows the builtin rules only: the `[[rule]]`s of the config always run (unless
//! `disable`d). An `enable` entry that names no rule is an error, since a typo there would leave
//! guard scanning with nothing. `guard scan --min-confidence LEVEL` narrows further, per run.

use std::path::{Path, PathBuf};

use regex_automata::meta;
use serde::Deserialize;

use crate::engine::Allowlist;
use crate::gitleaks;
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
    #[serde(default)]
    pub import: ImportSection,
    #[serde(skip)]
    pub path: Option<PathBuf>,
    #[serde(skip)]
    text: String,
    /// What `[import] gitleaks` translated.
    #[serde(skip)]
    imported: Option<gitleaks::Import>,
    /// The fingerprints of `[import] gitleaksignore`.
    #[serde(skip)]
    ignore: Vec<gitleaks::IgnoreEntry>,
    #[serde(skip)]
    ignore_warnings: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSection {
    /// A `.gitleaks.toml` whose allowlists and rules are imported.
    #[serde(default)]
    pub gitleaks: Option<PathBuf>,
    /// A `.gitleaksignore` whose fingerprints suppress findings.
    #[serde(default)]
    pub gitleaksignore: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSection {
    #[serde(default)]
    pub disable: Vec<String>,
    /// When non-empty, only the builtin rules named here (ids or `prefix*`) run.
    #[serde(default)]
    pub enable: Vec<String>,
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
        let dir = path.parent().unwrap_or(Path::new("."));
        let read = |p: &Path| {
            let full = dir.join(p);
            std::fs::read_to_string(&full)
                .map(|t| (full.display().to_string(), t))
                .map_err(|source| ConfigError::Io { path: full, source })
        };
        if let Some(p) = &c.import.gitleaks {
            let (origin, text) = read(p)?;
            c.imported =
                Some(
                    gitleaks::import(&origin, &text).map_err(|message| ConfigError::Invalid {
                        path: path.to_path_buf(),
                        message: format!("[import] gitleaks: {message}"),
                    })?,
                );
        }
        if let Some(p) = &c.import.gitleaksignore {
            let (origin, text) = read(p)?;
            (c.ignore, c.ignore_warnings) = gitleaks::parse_ignore(&origin, &text);
        }
        Ok(c)
    }

    fn origin(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "guard.toml".into())
    }

    /// Applies `[rules]` and `[[rule]]` to `set` (the builtin rules): `enable`, then the
    /// config's own rules, then `disable`.
    pub fn apply_rules(&self, set: &mut Ruleset) -> Result<(), ConfigError> {
        if !self.rules.enable.is_empty() {
            let unused = set.enable_only(&self.rules.enable);
            if !unused.is_empty() {
                return Err(ConfigError::Invalid {
                    path: self.path.clone().unwrap_or_default(),
                    message: format!(
                        "[rules] enable: {} match(es) no builtin rule (see `guard rules list`)",
                        unused.join(", ")
                    ),
                });
            }
        }
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
        if let (Some(imp), Some(p)) = (&self.imported, &self.import.gitleaks) {
            let origin = p.display().to_string();
            for spec in &imp.rules {
                set.add_imported(&origin, spec.clone())?;
            }
        }
        set.disable(&self.rules.disable);
        Ok(())
    }

    /// What loading the config noticed but did not refuse, one line each (printed by the CLI).
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .imported
            .iter()
            .flat_map(|i| i.warnings.iter().cloned())
            .collect();
        w.extend(self.ignore_warnings.iter().cloned());
        w
    }

    /// Findings to suppress by place rather than by value: `.gitleaksignore` fingerprints and
    /// the commits of an imported gitleaks allowlist. `None` when there are none.
    pub fn suppressions(&self) -> Option<gitleaks::IgnoreList> {
        let ids = self
            .imported
            .as_ref()
            .map(|i| i.ids.clone())
            .unwrap_or_default();
        let commits = self
            .imported
            .as_ref()
            .map(|i| i.commits.clone())
            .unwrap_or_default();
        let list = gitleaks::IgnoreList::new(self.ignore.clone(), ids, commits);
        (!list.is_empty()).then_some(list)
    }

    pub fn allowlist(&self) -> Result<Allowlist, ConfigError> {
        let mut a = Allowlist::new();
        a.inline = self.allowlist.inline;
        let imp = self.imported.as_ref();
        for w in self
            .allowlist
            .stopwords
            .iter()
            .chain(imp.into_iter().flat_map(|i| &i.stopwords))
        {
            a.add_stopword(w);
        }
        for r in self
            .allowlist
            .regexes
            .iter()
            .chain(imp.into_iter().flat_map(|i| &i.secret_regexes))
        {
            a.add_regex(r).map_err(|message| ConfigError::Invalid {
                path: self.path.clone().unwrap_or_default(),
                message,
            })?;
        }
        Ok(a)
    }

    pub fn path_allowlist(&self) -> Result<Vec<meta::Regex>, ConfigError> {
        let imp = self.imported.as_ref();
        self.allowlist
            .paths
            .iter()
            .chain(imp.into_iter().flat_map(|i| &i.path_regexes))
            .map(|p| {
                crate::engine::byte_regex(p).map_err(|e| ConfigError::Invalid {
                    path: self.path.clone().unwrap_or_default(),
                    message: format!("allowlist path regex {p:?}: {e}"),
                })
            })
            .collect()
    }
}
