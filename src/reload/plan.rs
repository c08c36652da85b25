//! `dealflow plan`: what a reload of a folder would change in a running
//! daemon. The daemon describes its running set ([`Summary`]: a fingerprint
//! per rule, sequence, step, pipeline and scoring model, and how many
//! enrollments wait on each step and how many records each kind has); the
//! command compiles the folder, describes it the same way and compares.

use crate::config::Workflows;
use crate::config::model::OnStepRemoved;
use crate::engine::sequence::renamed_step;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write;

/// A workflow set described for comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Content hash of the files.
    pub version: String,
    /// Rule → (kind, fingerprint).
    pub rules: BTreeMap<String, Item>,
    /// Sequence → its fingerprint and its steps' fingerprints.
    pub sequences: BTreeMap<String, SequenceItem>,
    /// Pipeline → (kind, fingerprint).
    pub pipelines: BTreeMap<String, Item>,
    /// Scoring model → (kind, fingerprint).
    pub scoring: BTreeMap<String, Item>,
    /// Active enrollments by sequence and the step they wait on (daemon only).
    #[serde(default)]
    pub enrollments: BTreeMap<String, BTreeMap<String, usize>>,
    /// Records by kind (daemon only).
    #[serde(default)]
    pub records: BTreeMap<String, usize>,
}

/// One named item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The record kind it is for, if any.
    pub kind: Option<String>,
    /// Changes whenever its compiled form does.
    pub fingerprint: String,
}

/// A sequence and its steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SequenceItem {
    /// The sequence as a whole.
    pub item: Item,
    /// Step id → fingerprint.
    pub steps: BTreeMap<String, String>,
}

fn fingerprint(value: &impl std::fmt::Debug) -> String {
    let digest = Sha256::digest(format!("{value:?}").as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn steps(list: &[crate::config::workflows::Step], out: &mut BTreeMap<String, String>) {
    for s in list {
        if let Some(id) = &s.id {
            out.insert(id.clone(), fingerprint(&s.kind));
        }
        if let crate::config::workflows::StepKind::Branch {
            then, otherwise, ..
        } = &s.kind
        {
            steps(then, out);
            steps(otherwise, out);
        }
    }
}

/// Describes a compiled set (without counts).
pub fn summarize(w: &Workflows) -> Summary {
    let item = |kind: Option<&String>, v: &dyn std::fmt::Debug| Item {
        kind: kind.cloned(),
        fingerprint: fingerprint(&v),
    };
    Summary {
        version: w.version.clone(),
        rules: w
            .rules
            .iter()
            .map(|r| (r.name.clone(), item(r.kind.as_ref(), r)))
            .collect(),
        sequences: w
            .sequences
            .values()
            .map(|s| {
                let mut step_prints = BTreeMap::new();
                steps(&s.steps, &mut step_prints);
                let seq = SequenceItem {
                    item: item(s.kind.as_ref(), s),
                    steps: step_prints,
                };
                (s.name.clone(), seq)
            })
            .collect(),
        pipelines: w
            .pipelines
            .values()
            .map(|p| (p.name.clone(), item(Some(&p.kind), p)))
            .collect(),
        scoring: w
            .scoring
            .iter()
            .map(|m| (m.name.clone(), item(Some(&m.kind), m)))
            .collect(),
        enrollments: BTreeMap::new(),
        records: BTreeMap::new(),
    }
}

/// The comparison, ready to print; `refused` says whether the daemon would
/// refuse the reload.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The report.
    pub text: String,
    /// Whether the reload would be refused.
    pub refused: bool,
    /// Whether anything differs.
    pub changed: bool,
}

/// Compares the running set (with its counts) and a new one.
pub fn compare(running: &Summary, new: &Workflows) -> Plan {
    let proposed = summarize(new);
    let mut text = String::new();
    let mut changed = false;
    let records = |kind: &Option<String>| match kind {
        Some(k) => format!(
            " ({k}: {} records)",
            running.records.get(k).copied().unwrap_or(0)
        ),
        None => String::new(),
    };
    for (title, old, now) in [
        ("rules", &running.rules, &proposed.rules),
        ("pipelines", &running.pipelines, &proposed.pipelines),
        ("scoring models", &running.scoring, &proposed.scoring),
    ] {
        let lines = item_lines(old, now, &records);
        if !lines.is_empty() {
            changed = true;
            let _ = writeln!(text, "{title}:\n{}", lines.join("\n"));
        }
    }
    let mut refusals = Vec::new();
    let mut seq_lines = Vec::new();
    for (name, old) in &running.sequences {
        let waiting = running.enrollments.get(name);
        let count = |step: &str| waiting.and_then(|w| w.get(step)).copied().unwrap_or(0);
        let total: usize = waiting.map(|w| w.values().sum()).unwrap_or(0);
        let Some(now) = proposed.sequences.get(name) else {
            seq_lines.push(format!("  - {name} (removed: {total} active enrollments exit with reason definition_removed)"));
            continue;
        };
        if now.item.fingerprint == old.item.fingerprint {
            continue;
        }
        seq_lines.push(format!("  ~ {name} ({total} active enrollments)"));
        let definition = new.sequences.get(name);
        for (step, print) in &old.steps {
            match now.steps.get(step) {
                Some(p) if p == print => {}
                Some(_) => seq_lines.push(format!("      ~ step {step} ({} waiting)", count(step))),
                None => {
                    let n = count(step);
                    let renamed = definition.and_then(|d| renamed_step(&d.steps, step));
                    let fate = match (renamed, definition.and_then(|d| d.on_step_removed)) {
                        (Some(to), _) => format!("continue at {to} (renamed_from)"),
                        (None, Some(OnStepRemoved::Exit)) => {
                            "exit (on_step_removed: exit)".to_owned()
                        }
                        (None, Some(OnStepRemoved::Next)) => {
                            "continue at the next step (on_step_removed: next)".to_owned()
                        }
                        (None, None) if n > 0 => {
                            refusals.push(format!(
                                "{n} enrollment(s) of {name} wait on step \"{step}\""
                            ));
                            "REFUSED: nothing says where they go".to_owned()
                        }
                        (None, None) => "none wait there".to_owned(),
                    };
                    seq_lines.push(format!("      - step {step} ({n} waiting: {fate})"));
                }
            }
        }
        for step in now.steps.keys().filter(|s| !old.steps.contains_key(*s)) {
            seq_lines.push(format!("      + step {step}"));
        }
    }
    for name in proposed
        .sequences
        .keys()
        .filter(|n| !running.sequences.contains_key(*n))
    {
        seq_lines.push(format!("  + {name}"));
    }
    if !seq_lines.is_empty() {
        changed = true;
        let _ = writeln!(text, "sequences:\n{}", seq_lines.join("\n"));
    }
    let refused = !refusals.is_empty();
    let verdict = if refused {
        format!("The reload would be REFUSED: {}.", refusals.join("; "))
    } else if changed {
        "The reload would be accepted.".to_owned()
    } else {
        "No changes.".to_owned()
    };
    let header = format!("plan: version {} → {}\n", running.version, proposed.version);
    Plan {
        text: format!("{header}{text}{verdict}"),
        refused,
        changed,
    }
}

fn item_lines(
    old: &BTreeMap<String, Item>,
    now: &BTreeMap<String, Item>,
    records: &dyn Fn(&Option<String>) -> String,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, item) in now {
        match old.get(name) {
            None => lines.push(format!("  + {name}{}", records(&item.kind))),
            Some(o) if o.fingerprint != item.fingerprint => {
                lines.push(format!("  ~ {name}{}", records(&item.kind)))
            }
            Some(_) => {}
        }
    }
    for (name, item) in old.iter().filter(|(n, _)| !now.contains_key(*n)) {
        lines.push(format!("  - {name}{}", records(&item.kind)));
    }
    lines
}

/// The running set described with its counts, for `GET /v1/workflows`.
pub fn running_summary<S: crate::store::Store>(
    w: &Workflows,
    store: &S,
) -> Result<Summary, crate::store::StoreError> {
    const PAGE: usize = 1_000;
    let mut summary = summarize(w);
    let waiting = &mut summary.enrollments;
    crate::store::for_each_item(
        |after| store.active_enrollments(after, PAGE),
        |e| {
            let step = e.next_step.unwrap_or_else(|| "(none)".to_owned());
            *waiting
                .entry(e.sequence)
                .or_default()
                .entry(step)
                .or_default() += 1;
        },
    )?;
    for kind in &w.kinds {
        let mut count = 0;
        crate::store::for_each_item(
            |after| store.records_of_kind(kind, after, PAGE),
            |_| count += 1,
        )?;
        summary.records.insert(kind.clone(), count);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Workflows {
        crate::config::load_for_tests(yaml)
    }

    const BASE: &str = "sequences:\n  - name: s\n    for: lead\n    steps:\n      - { id: a, task: { title: a } }\n      - wait: 1d\n      - { id: b, task: { title: b } }\nrules:\n  - name: r\n    for: lead\n    on: x\n    do: [ { enroll: s } ]\n";

    #[test]
    fn an_unchanged_folder_plans_nothing_even_when_lines_move() {
        let running = summarize(&load(BASE));
        let moved = format!("# a comment that shifts every line\n{BASE}");
        let plan = compare(&running, &load(&moved));
        assert!(!plan.changed, "{}", plan.text);
        assert!(plan.text.ends_with("No changes."));
    }

    #[test]
    fn a_removed_step_with_waiting_enrollments_is_refused() {
        let mut running = summarize(&load(BASE));
        running
            .enrollments
            .insert("s".into(), [("b".to_owned(), 7)].into());
        running.records.insert("lead".into(), 40);
        let new = BASE
            .replace("id: b, task: { title: b }", "id: c, task: { title: c }")
            .replace("title: a", "title: A");
        let plan = compare(&running, &load(&new));
        assert!(plan.refused, "{}", plan.text);
        assert!(
            plan.text.contains("- step b (7 waiting: REFUSED"),
            "{}",
            plan.text
        );
        assert!(plan.text.contains("~ step a"), "{}", plan.text);
        assert!(plan.text.contains("+ step c"), "{}", plan.text);
        let renamed = new.replace("id: c,", "id: c, renamed_from: b,");
        let plan = compare(&running, &load(&renamed));
        assert!(!plan.refused, "{}", plan.text);
        assert!(
            plan.text.contains("continue at c (renamed_from)"),
            "{}",
            plan.text
        );
        let rule_changed = BASE.replace("on: x", "on: other");
        let plan = compare(&running, &load(&rule_changed));
        assert!(
            plan.text.contains("rules:\n  ~ r (lead: 40 records)"),
            "{}",
            plan.text
        );
    }
}
