//! Detection quality against the hand labels of `corpus/`: recall and precision per rule and
//! overall, held to the floors in `corpus/thresholds.toml` (never lowered).
//!
//! Labels: `corpus/<case>.expected` lines `rule.id LINE` are the positives. Every other non-blank
//! line of `<case>.txt` that does not start with `#` is a labelled negative. A finding is a true
//! positive when a label names its rule and start line, and a false positive on any line that
//! carries no label. A finding of another rule on a labelled line is neither: the leaked line was
//! caught, under another name (several families cover the same file shapes: `.npmrc`, docker
//! auths, wp-config), and it is listed for curation. A label is a miss when nothing at all was
//! found on its line. Findings are taken from `guard scan -f jsonl` of the corpus directory (the
//! file path a user runs, encoded-content decoding included).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// One corpus case: its labels and its negative lines.
struct Case {
    name: String,
    positives: BTreeSet<(String, u64)>,
    negatives: BTreeSet<u64>,
}

fn load_cases() -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let labels = std::fs::read_to_string(p.with_extension("expected"))
                .unwrap_or_else(|e| panic!("{}: .expected: {e}", p.display()));
            let positives: BTreeSet<(String, u64)> = labels
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let (r, n) = l
                        .split_once(' ')
                        .unwrap_or_else(|| panic!("{}: label {l:?}", p.display()));
                    let n: u64 = n
                        .trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("{}: label {l:?}", p.display()));
                    (r.to_string(), n)
                })
                .collect();
            let labelled: BTreeSet<u64> = positives.iter().map(|(_, n)| *n).collect();
            let data = std::fs::read(p).expect("readable");
            let negatives = data
                .split(|&b| b == b'\n')
                .enumerate()
                .map(|(i, l)| (i as u64 + 1, l.trim_ascii()))
                .filter(|(n, l)| !l.is_empty() && !l.starts_with(b"#") && !labelled.contains(n))
                .map(|(n, _)| n)
                .collect();
            Case {
                name: p.file_name().expect("name").to_string_lossy().into_owned(),
                positives,
                negatives,
            }
        })
        .collect()
}

/// (file name, rule, line) of every finding guard reports on the corpus directory.
fn findings() -> Vec<(String, String, u64)> {
    let cache = tempfile::tempdir().expect("tempdir");
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = Command::cargo_bin("guard")
        .expect("the guard binary should be built")
        .env("GUARD_CACHE_DIR", cache.path())
        .env_remove("GUARD_FINDING_KEY")
        .current_dir(cwd.path())
        .args(["scan", "--binary", "--no-ignore", "-f", "jsonl"])
        .arg(corpus_dir())
        .output()
        .expect("runs");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("JSONL");
            let path = v["path"].as_str().expect("path");
            (
                Path::new(path)
                    .file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned(),
                v["rule"].as_str().expect("rule").to_string(),
                v["line"].as_u64().expect("line"),
            )
        })
        .collect()
}

/// Rules declared `confidence = "low"` (generic detectors): their precision is held by the
/// overall floor, not a per-rule one (`guard scan --min-confidence medium` drops them).
fn low_confidence_rules() -> BTreeSet<String> {
    let out = Command::cargo_bin("guard")
        .expect("the guard binary should be built")
        .args(["rules", "list", "-f", "json"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rules list JSON");
    v.as_array()
        .expect("a list of rules")
        .iter()
        .filter(|r| r["confidence"] == "low")
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Score {
    tp: u64,
    fp: u64,
    missed: u64,
}

impl Score {
    fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.missed)
    }
    fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    overall: Floors,
    counts: Counts,
    per_rule: PerRule,
    #[serde(default)]
    rule: BTreeMap<String, Floors>,
}

#[derive(serde::Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct Floors {
    #[serde(default)]
    recall: Option<f64>,
    #[serde(default)]
    precision: Option<f64>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Counts {
    positives: u64,
    negatives: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PerRule {
    recall: f64,
    precision: f64,
    min_samples: u64,
}

fn thresholds() -> Thresholds {
    let p = corpus_dir().join("thresholds.toml");
    toml::from_str(&std::fs::read_to_string(&p).expect("corpus/thresholds.toml exists"))
        .expect("corpus/thresholds.toml parses")
}

/// Scores per rule, plus the false positives as `case:line rule` for the report.
fn score(
    cases: &[Case],
    found: &[(String, String, u64)],
) -> (BTreeMap<String, Score>, Vec<String>) {
    let mut per: BTreeMap<String, Score> = BTreeMap::new();
    let mut wrong = Vec::new();
    let by_case: BTreeMap<&str, &Case> = cases.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut hit: BTreeSet<(&str, &str, u64)> = BTreeSet::new();
    let mut lines_hit: BTreeSet<(&str, u64)> = BTreeSet::new();
    for (file, rule, line) in found {
        let Some(case) = by_case.get(file.as_str()) else {
            continue; // .expected and thresholds.toml are not cases
        };
        let s = per.entry(rule.clone()).or_default();
        lines_hit.insert((file.as_str(), *line));
        if case.positives.contains(&(rule.clone(), *line)) {
            if hit.insert((file, rule, *line)) {
                s.tp += 1;
            }
        } else if case.positives.iter().any(|(_, l)| l == line) {
            wrong.push(format!(
                "{file}:{line} {rule} (another rule on a labelled line)"
            ));
        } else {
            s.fp += 1;
            let why = if case.negatives.contains(line) {
                "negative line"
            } else {
                "unlabelled line"
            };
            wrong.push(format!("{file}:{line} {rule} ({why})"));
        }
    }
    for c in cases {
        for (rule, line) in &c.positives {
            let s = per.entry(rule.clone()).or_default();
            if hit.contains(&(c.name.as_str(), rule.as_str(), *line)) {
                continue;
            }
            if lines_hit.contains(&(c.name.as_str(), *line)) {
                s.tp += 1; // caught by another rule
            } else {
                s.missed += 1;
                wrong.push(format!("{}:{line} {rule} (missed)", c.name));
            }
        }
    }
    (per, wrong)
}

fn table(per: &BTreeMap<String, Score>, total: Score) -> String {
    let mut t = format!(
        "{:<44} {:>5} {:>5} {:>6} {:>7} {:>9}\n",
        "rule", "tp", "fp", "missed", "recall", "precision"
    );
    for (rule, s) in per.iter().chain([(&"OVERALL".to_string(), &total)]) {
        t.push_str(&format!(
            "{:<44} {:>5} {:>5} {:>6} {:>7.3} {:>9.3}\n",
            rule,
            s.tp,
            s.fp,
            s.missed,
            s.recall(),
            s.precision()
        ));
    }
    t
}

/// Recall and precision per rule and overall, against the floors of `corpus/thresholds.toml`.
#[test]
fn corpus_recall_and_precision_meet_thresholds() {
    let th = thresholds();
    let cases = load_cases();
    let (per, wrong) = score(&cases, &findings());
    let total = per.values().fold(Score::default(), |a, s| Score {
        tp: a.tp + s.tp,
        fp: a.fp + s.fp,
        missed: a.missed + s.missed,
    });
    let report = table(&per, total);
    println!("{report}");
    let mut fails = Vec::new();
    let mut floor = |what: String, got: f64, min: Option<f64>| {
        if let Some(min) = min {
            if got < min {
                fails.push(format!("{what} {got:.3} < {min}"));
            }
        }
    };
    floor("overall recall".into(), total.recall(), th.overall.recall);
    floor(
        "overall precision".into(),
        total.precision(),
        th.overall.precision,
    );
    let low = low_confidence_rules();
    assert!(low.len() < per.len(), "rules list gave confidences");
    for (rule, s) in &per {
        let own = th.rule.get(rule).copied().unwrap_or(Floors {
            recall: None,
            precision: None,
        });
        if s.tp + s.missed >= th.per_rule.min_samples || own.recall.is_some() {
            let min = own
                .recall
                .map_or(th.per_rule.recall, |r| r.max(th.per_rule.recall));
            floor(format!("{rule} recall"), s.recall(), Some(min));
        }
        let judged = !low.contains(rule) && s.tp + s.fp >= th.per_rule.min_samples;
        if judged || own.precision.is_some() {
            let min = own
                .precision
                .map_or(th.per_rule.precision, |p| p.max(th.per_rule.precision));
            floor(format!("{rule} precision"), s.precision(), Some(min));
        }
    }
    assert!(
        fails.is_empty(),
        "below corpus/thresholds.toml:\n  {}\n\n{report}\nfalse positives and misses:\n  {}",
        fails.join("\n  "),
        wrong.join("\n  ")
    );
}

/// The scorer itself: a miss, a false positive on a negative line, and another rule on a label.
#[test]
fn quality_scoring_counts_misses_and_false_positives() {
    let cases = vec![Case {
        name: "c.txt".into(),
        positives: [("a.x".to_string(), 2), ("a.x".to_string(), 4)].into(),
        negatives: [1, 3].into(),
    }];
    let found = vec![
        ("c.txt".to_string(), "a.x".to_string(), 2),
        ("c.txt".to_string(), "a.x".to_string(), 2),
        ("c.txt".to_string(), "b.y".to_string(), 3),
        ("c.txt".to_string(), "b.y".to_string(), 4),
        ("c.expected".to_string(), "b.y".to_string(), 1),
    ];
    let (per, wrong) = score(&cases, &found);
    let a = per["a.x"];
    assert_eq!(
        (a.tp, a.fp, a.missed),
        (2, 0, 0),
        "line 4 was caught by b.y"
    );
    let b = per["b.y"];
    assert_eq!((b.tp, b.fp, b.missed), (0, 1, 0));
    assert_eq!(b.precision(), 0.0);
    assert_eq!(a.recall(), 1.0);
    assert_eq!(
        wrong,
        [
            "c.txt:3 b.y (negative line)",
            "c.txt:4 b.y (another rule on a labelled line)",
        ]
    );
    // Nothing on a labelled line is a miss.
    let (per, wrong) = score(&cases, &found[..1]);
    assert_eq!(per["a.x"].missed, 1);
    assert_eq!(wrong, ["c.txt:4 a.x (missed)"]);
}

/// The corpus is big enough for the figures above to mean something (issue 10: >= 500 labelled
/// positives and >= 500 labelled negatives). Separate from the quality floors on purpose: the
/// corpus is still being written.
#[test]
fn corpus_has_enough_labelled_positives_and_negatives() {
    let th = thresholds();
    let cases = load_cases();
    let pos: u64 = cases.iter().map(|c| c.positives.len() as u64).sum();
    let neg: u64 = cases.iter().map(|c| c.negatives.len() as u64).sum();
    assert!(
        pos >= th.counts.positives && neg >= th.counts.negatives,
        "corpus has {pos} labelled positives (need {}) and {neg} labelled negatives (need {}) in {} cases",
        th.counts.positives,
        th.counts.negatives,
        cases.len()
    );
}
