//! Baselines: finding ids recorded earlier, suppressed on later scans.
//!
//! A baseline stores ids (keyed hashes of rule + secret), the rule and the path for humans — never
//! the secret — so committing it leaks nothing, and moving code does not churn it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, FindingId};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Baseline {
    pub version: u32,
    pub findings: Vec<BaselineEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct BaselineEntry {
    pub id: FindingId,
    pub rule: String,
    pub path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read baseline {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("baseline {path} is not a guard baseline: {message}")]
    Format { path: PathBuf, message: String },
}

impl Baseline {
    pub fn from_findings(findings: &[Finding]) -> Baseline {
        let set: BTreeSet<BaselineEntry> = findings
            .iter()
            .map(|f| BaselineEntry {
                id: f.id.clone(),
                rule: f.rule.0.clone(),
                path: f.origin.path().to_string(),
            })
            .collect();
        Baseline {
            version: 1,
            findings: set.into_iter().collect(),
        }
    }

    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let text = std::fs::read(path).map_err(|source| BaselineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let b: Baseline = serde_json::from_slice(&text).map_err(|e| BaselineError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if b.version != 1 {
            return Err(BaselineError::Format {
                path: path.to_path_buf(),
                message: format!("unsupported version {}", b.version),
            });
        }
        Ok(b)
    }

    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let mut text = serde_json::to_vec_pretty(self).expect("a baseline always serializes");
        text.push(b'\n');
        std::fs::write(path, text).map_err(|source| BaselineError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn ids(&self) -> BTreeSet<&FindingId> {
        self.findings.iter().map(|e| &e.id).collect()
    }
}

/// A pipeline sink that records every finding reaching it and writes the baseline at the end
/// (`--write-baseline`).
pub struct BaselineWriter {
    path: PathBuf,
    entries: BTreeSet<BaselineEntry>,
}

impl BaselineWriter {
    pub fn new(path: PathBuf) -> BaselineWriter {
        BaselineWriter {
            path,
            entries: BTreeSet::new(),
        }
    }
}

impl crate::pipeline::FindingSink for BaselineWriter {
    fn finding(&mut self, f: &Finding) -> std::io::Result<()> {
        self.entries.insert(BaselineEntry {
            id: f.id.clone(),
            rule: f.rule.0.clone(),
            path: f.origin.path().to_string(),
        });
        Ok(())
    }

    fn finish(&mut self, _totals: &crate::pipeline::Totals) -> std::io::Result<()> {
        let b = Baseline {
            version: 1,
            findings: std::mem::take(&mut self.entries).into_iter().collect(),
        };
        b.save(&self.path).map_err(std::io::Error::other)
    }
}
