//! What replacing the running workflow set with a new one changes, decided
//! once (SPEC §3.6 "Reload"): which rules, pipelines, scoring models and
//! sequences differ, how many records and enrollments each touches, and
//! where each waiting enrollment goes. Each enrollment continues at the
//! step with the same id, or the step that says `renamed_from` it; one
//! waiting on a removed step follows its sequence's `on_step_removed`, and
//! without one the reload is refused, naming the step and how many wait.
//!
//! The worker applies a plan (or refuses it); `POST /v1/plan` answers the
//! same value as a dry run for `dealflow plan`. Both sets are compiled by
//! the same build in the same process, and items are compared as compiled
//! values (`PartialEq`; expressions and templates by what they say, not
//! where they were compiled).

use super::sequence::{EnrollmentMove, has_step, renamed_step, steps_after};
use super::{ReadError, StateView};
use crate::config::Workflows;
use crate::config::model::OnStepRemoved;
use crate::config::workflows::{Step, StepKind};
use crate::state::Enrollment;
use crate::state::for_each_item;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::{self, Write};

/// Enrollments and records read per page.
const PAGE: usize = 1_000;

/// Everything a reload changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadPlan {
    /// The running set's version.
    pub from_version: String,
    /// The new set's version.
    pub to_version: String,
    /// Rules added, changed or removed.
    pub rules: Vec<ItemChange>,
    /// Pipelines added, changed or removed.
    pub pipelines: Vec<ItemChange>,
    /// Scoring models added, changed or removed.
    pub scoring: Vec<ItemChange>,
    /// Sequences added, changed or removed.
    pub sequences: Vec<SequenceChange>,
    /// Waiting enrollments that must move, and where (applied by the
    /// worker; not part of the dry run's answer).
    #[serde(skip)]
    pub moves: Vec<(Enrollment, EnrollmentMove)>,
}

/// Added, changed or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the new set.
    Added,
    /// In both, compiled differently.
    Changed,
    /// Only in the running set.
    Removed,
}

impl Change {
    fn mark(self) -> char {
        match self {
            Change::Added => '+',
            Change::Changed => '~',
            Change::Removed => '-',
        }
    }
}

/// A rule, pipeline or scoring model that differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemChange {
    /// Its name.
    pub name: String,
    /// How it differs.
    pub change: Change,
    /// The record kind it is for, with how many records of it there are.
    pub kind: Option<KindCount>,
}

/// A record kind and how many records it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindCount {
    /// The kind.
    pub kind: String,
    /// Its records.
    pub records: usize,
}

/// A sequence that differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceChange {
    /// Its name.
    pub name: String,
    /// How it differs.
    pub change: Change,
    /// Its active enrollments.
    pub active: usize,
    /// Its steps that differ (changed sequences only).
    pub steps: Vec<StepChange>,
}

/// A step that differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepChange {
    /// Its id.
    pub step: String,
    /// How it differs.
    pub change: Change,
    /// Enrollments waiting on it.
    pub waiting: usize,
    /// Where they go (removed steps only).
    pub fate: Option<StepFate>,
}

/// Where the enrollments waiting on a removed step go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum StepFate {
    /// To the step that says `renamed_from` it.
    Renamed {
        /// That step.
        step: String,
    },
    /// They exit (`on_step_removed: exit`).
    Exit,
    /// On to the next surviving step (`on_step_removed: next`).
    Next,
    /// Nowhere: the reload is refused.
    Refused,
    /// None wait there.
    NoneWaiting,
}

impl ReloadPlan {
    /// The removed steps enrollments wait on with nowhere to go, said.
    fn stranded(&self) -> Vec<String> {
        self.sequences
            .iter()
            .flat_map(|s| s.steps.iter().map(move |step| (s, step)))
            .filter(|(_, step)| step.fate == Some(StepFate::Refused))
            .map(|(s, step)| {
                format!(
                    "{} enrollment(s) of {} wait on step \"{}\"",
                    step.waiting, s.name, step.step
                )
            })
            .collect()
    }

    /// Why the reload must be refused, if it must.
    pub fn refusal(&self) -> Option<String> {
        let stranded = self.stranded();
        (!stranded.is_empty()).then(|| {
            format!(
                "reload refused: {}, which the new definition removes; keep the step, name it in `renamed_from:` of its replacement, or set `on_step_removed: exit` or `next` on the sequence",
                stranded.join("; ")
            )
        })
    }

    /// Whether anything differs.
    pub fn changed(&self) -> bool {
        !(self.rules.is_empty()
            && self.pipelines.is_empty()
            && self.scoring.is_empty()
            && self.sequences.is_empty())
    }
}

/// Decides what replacing `old` by `new` changes, reading the counts and
/// the waiting enrollments from `state`.
pub fn plan(
    old: &Workflows,
    new: &Workflows,
    state: &dyn StateView,
) -> Result<ReloadPlan, ReadError> {
    let mut records = RecordCounts {
        state,
        counted: BTreeMap::new(),
    };
    let mut plan = ReloadPlan {
        from_version: old.version.clone(),
        to_version: new.version.clone(),
        ..ReloadPlan::default()
    };
    plan.rules = item_changes(old, new, &mut records, |w| {
        w.rules.iter().map(|r| (&r.name, r.kind.as_ref(), r))
    })?;
    plan.pipelines = item_changes(old, new, &mut records, |w| {
        w.pipelines.values().map(|p| (&p.name, Some(&p.kind), p))
    })?;
    plan.scoring = item_changes(old, new, &mut records, |w| {
        w.scoring.iter().map(|m| (&m.name, Some(&m.kind), m))
    })?;
    let waiting = waiting_enrollments(old, new, state, &mut plan.moves)?;
    plan.sequences = sequence_changes(old, new, &waiting);
    Ok(plan)
}

/// Records per kind, counted once each.
struct RecordCounts<'s> {
    state: &'s dyn StateView,
    counted: BTreeMap<String, usize>,
}

impl RecordCounts<'_> {
    fn of(&mut self, kind: &str) -> Result<usize, ReadError> {
        if let Some(n) = self.counted.get(kind) {
            return Ok(*n);
        }
        let mut n = 0;
        for_each_item(
            |after| self.state.records_of_kind(kind, after, PAGE),
            |_| n += 1,
        )?;
        self.counted.insert(kind.to_owned(), n);
        Ok(n)
    }
}

/// The named items (name, record kind, item) that `items` lists in each
/// set, compared by name.
fn item_changes<'w, T: PartialEq + 'w, I>(
    old: &'w Workflows,
    new: &'w Workflows,
    records: &mut RecordCounts,
    items: impl Fn(&'w Workflows) -> I,
) -> Result<Vec<ItemChange>, ReadError>
where
    I: Iterator<Item = (&'w String, Option<&'w String>, &'w T)>,
{
    let by_name = |w| -> BTreeMap<&str, (Option<&String>, &T)> {
        items(w)
            .map(|(name, kind, item)| (name.as_str(), (kind, item)))
            .collect()
    };
    let (old, new) = (by_name(old), by_name(new));
    let mut changes = Vec::new();
    let mut push = |name: &str, kind: &Option<&String>, change| -> Result<(), ReadError> {
        let kind = match kind {
            Some(k) => Some(KindCount {
                kind: (*k).clone(),
                records: records.of(k)?,
            }),
            None => None,
        };
        changes.push(ItemChange {
            name: name.to_owned(),
            change,
            kind,
        });
        Ok(())
    };
    for (name, (kind, item)) in &new {
        match old.get(name) {
            None => push(name, kind, Change::Added)?,
            Some((_, before)) if before != item => push(name, kind, Change::Changed)?,
            Some(_) => {}
        }
    }
    for (name, (kind, _)) in old.iter().filter(|(n, _)| !new.contains_key(*n)) {
        push(name, kind, Change::Removed)?;
    }
    Ok(changes)
}

/// Active enrollments by sequence and the step they wait on; collects the
/// moves the new set needs on the way.
fn waiting_enrollments(
    old: &Workflows,
    new: &Workflows,
    state: &dyn StateView,
    moves: &mut Vec<(Enrollment, EnrollmentMove)>,
) -> Result<BTreeMap<String, BTreeMap<String, usize>>, ReadError> {
    let mut waiting: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for_each_item(
        |after| state.active_enrollments(after, PAGE),
        |e| {
            let step = e.next_step.clone().unwrap_or_else(|| "(none)".to_owned());
            *waiting
                .entry(e.sequence.clone())
                .or_default()
                .entry(step)
                .or_default() += 1;
            if let Some(to) = decide(&e, old, new) {
                moves.push((e, to));
            }
        },
    )?;
    Ok(waiting)
}

fn sequence_changes(
    old: &Workflows,
    new: &Workflows,
    waiting: &BTreeMap<String, BTreeMap<String, usize>>,
) -> Vec<SequenceChange> {
    let mut changes = Vec::new();
    for (name, before) in &old.sequences {
        let waits = waiting.get(name);
        let count = |step: &str| waits.and_then(|w| w.get(step)).copied().unwrap_or(0);
        let active = waits.map(|w| w.values().sum()).unwrap_or(0);
        let Some(after) = new.sequences.get(name) else {
            changes.push(SequenceChange {
                name: name.clone(),
                change: Change::Removed,
                active,
                steps: Vec::new(),
            });
            continue;
        };
        if before == after {
            continue;
        }
        let (old_steps, new_steps) = (steps_by_id(&before.steps), steps_by_id(&after.steps));
        let mut steps = Vec::new();
        for (step, kind) in &old_steps {
            let (change, fate) = match new_steps.get(step) {
                Some(k) if k == kind => continue,
                Some(_) => (Change::Changed, None),
                None => (Change::Removed, Some(fate(after, step, count(step)))),
            };
            steps.push(StepChange {
                step: step.clone(),
                change,
                waiting: count(step),
                fate,
            });
        }
        for step in new_steps.keys().filter(|s| !old_steps.contains_key(*s)) {
            steps.push(StepChange {
                step: step.clone(),
                change: Change::Added,
                waiting: 0,
                fate: None,
            });
        }
        changes.push(SequenceChange {
            name: name.clone(),
            change: Change::Changed,
            active,
            steps,
        });
    }
    for name in new
        .sequences
        .keys()
        .filter(|n| !old.sequences.contains_key(*n))
    {
        changes.push(SequenceChange {
            name: name.clone(),
            change: Change::Added,
            active: 0,
            steps: Vec::new(),
        });
    }
    changes
}

/// Where the enrollments waiting on a removed step go.
fn fate(after: &crate::config::workflows::Sequence, step: &str, waiting: usize) -> StepFate {
    match (renamed_step(&after.steps, step), after.on_step_removed) {
        (Some(step), _) => StepFate::Renamed { step },
        (None, Some(OnStepRemoved::Exit)) => StepFate::Exit,
        (None, Some(OnStepRemoved::Next)) => StepFate::Next,
        (None, None) if waiting > 0 => StepFate::Refused,
        (None, None) => StepFate::NoneWaiting,
    }
}

/// Step id → what the step does, branches included.
fn steps_by_id(list: &[Step]) -> BTreeMap<String, &StepKind> {
    let mut out = BTreeMap::new();
    fn walk<'s>(list: &'s [Step], out: &mut BTreeMap<String, &'s StepKind>) {
        for s in list {
            if let Some(id) = &s.id {
                out.insert(id.clone(), &s.kind);
            }
            if let StepKind::Branch {
                then, otherwise, ..
            } = &s.kind
            {
                walk(then, out);
                walk(otherwise, out);
            }
        }
    }
    walk(list, &mut out);
    out
}

/// Where one active enrollment goes under the new set (`None`: it stays).
fn decide(e: &Enrollment, old: &Workflows, new: &Workflows) -> Option<EnrollmentMove> {
    let Some(definition) = new.sequences.get(&e.sequence) else {
        return Some(EnrollmentMove::Exit("definition_removed".to_owned()));
    };
    // Not yet started or about to end: nothing to map.
    let step = e.next_step.as_deref().filter(|_| e.timer.is_some())?;
    if has_step(&definition.steps, step) {
        return None;
    }
    if let Some(renamed) = renamed_step(&definition.steps, step) {
        return Some(EnrollmentMove::To(renamed));
    }
    match definition.on_step_removed? {
        OnStepRemoved::Exit => Some(EnrollmentMove::Exit("definition_changed".to_owned())),
        OnStepRemoved::Next => Some(next_surviving(e, step, old, new)),
    }
}

/// `on_step_removed: next`: the first step that followed the removed one
/// in the running definition and still exists in the new one (under its
/// own or a new name); completing when none does.
fn next_surviving(
    e: &Enrollment,
    removed: &str,
    old: &Workflows,
    new: &Workflows,
) -> EnrollmentMove {
    let (Some(before), Some(after)) = (
        old.sequences.get(&e.sequence),
        new.sequences.get(&e.sequence),
    ) else {
        return EnrollmentMove::Complete;
    };
    steps_after(&before.steps, removed)
        .into_iter()
        .find_map(|id| {
            if has_step(&after.steps, &id) {
                Some(id)
            } else {
                renamed_step(&after.steps, &id)
            }
        })
        .map_or(EnrollmentMove::Complete, EnrollmentMove::To)
}

/// The plan as `dealflow plan` prints it.
impl fmt::Display for ReloadPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan: version {} → {}",
            self.from_version, self.to_version
        )?;
        for (title, items) in [
            ("rules", &self.rules),
            ("pipelines", &self.pipelines),
            ("scoring models", &self.scoring),
        ] {
            if items.is_empty() {
                continue;
            }
            writeln!(f, "{title}:")?;
            for item in items {
                let records = item
                    .kind
                    .as_ref()
                    .map(|k| format!(" ({}: {} records)", k.kind, k.records))
                    .unwrap_or_default();
                writeln!(f, "  {} {}{records}", item.change.mark(), item.name)?;
            }
        }
        if !self.sequences.is_empty() {
            writeln!(f, "sequences:")?;
            for s in &self.sequences {
                f.write_str(&sequence_lines(s))?;
            }
        }
        let stranded = self.stranded();
        if !stranded.is_empty() {
            write!(f, "The reload would be REFUSED: {}.", stranded.join("; "))
        } else if self.changed() {
            f.write_str("The reload would be accepted.")
        } else {
            f.write_str("No changes.")
        }
    }
}

fn sequence_lines(s: &SequenceChange) -> String {
    let mut out = String::new();
    let _ = match s.change {
        Change::Removed => writeln!(
            out,
            "  - {} (removed: {} active enrollments exit with reason definition_removed)",
            s.name, s.active
        ),
        Change::Added => writeln!(out, "  + {}", s.name),
        Change::Changed => writeln!(out, "  ~ {} ({} active enrollments)", s.name, s.active),
    };
    for step in &s.steps {
        let _ = match (&step.change, &step.fate) {
            (Change::Added, _) => writeln!(out, "      + step {}", step.step),
            (Change::Changed, _) => {
                writeln!(out, "      ~ step {} ({} waiting)", step.step, step.waiting)
            }
            (Change::Removed, fate) => {
                let fate = match fate {
                    Some(StepFate::Renamed { step }) => {
                        format!("continue at {step} (renamed_from)")
                    }
                    Some(StepFate::Exit) => "exit (on_step_removed: exit)".to_owned(),
                    Some(StepFate::Next) => {
                        "continue at the next step (on_step_removed: next)".to_owned()
                    }
                    Some(StepFate::Refused) => "REFUSED: nothing says where they go".to_owned(),
                    Some(StepFate::NoneWaiting) | None => "none wait there".to_owned(),
                };
                writeln!(
                    out,
                    "      - step {} ({} waiting: {fate})",
                    step.step, step.waiting
                )
            }
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{RecordKey, TimerRef};
    use crate::store::{Changes, KvStore, MemoryBackend, Store};

    fn load(yaml: &str) -> Workflows {
        crate::config::load_for_tests(yaml)
    }

    fn sequence(extra: &str, steps: &str) -> String {
        format!("sequences:\n  - name: s\n    for: lead\n{extra}    steps:\n{steps}")
    }

    const STEPS: &str = "      - { id: a, task: { title: a } }\n      - wait: 1d\n      - { id: b, task: { title: b } }\n      - { id: c, task: { title: c } }\n";

    fn waiting_on(step: &str) -> KvStore<MemoryBackend> {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        let at = chrono::DateTime::UNIX_EPOCH;
        let e = Enrollment {
            record: RecordKey {
                kind: "lead".into(),
                id: "L1".into(),
            },
            sequence: "s".into(),
            enrolled_at: at,
            status: crate::state::EnrollmentStatus::Active,
            next_step: Some(step.into()),
            exit_reason: None,
            exit_cause: None,
            ended_at: None,
            timer: Some(TimerRef {
                due_at: at,
                id: "t1".into(),
            }),
            next_at: Some(at),
            messages: Default::default(),
            last_step: None,
        };
        store
            .commit(Changes::from(crate::state::Effects {
                enrollments: vec![e],
                ..crate::state::Effects::default()
            }))
            .unwrap();
        store
    }

    fn moves(old: &str, new: &str, step: &str) -> Result<Vec<EnrollmentMove>, String> {
        let plan = plan(&load(old), &load(new), &waiting_on(step)).unwrap();
        match plan.refusal() {
            Some(refused) => Err(refused),
            None => Ok(plan.moves.into_iter().map(|(_, to)| to).collect()),
        }
    }

    #[test]
    fn a_kept_step_moves_nothing() {
        let old = sequence("", STEPS);
        let new = sequence("", &STEPS.replace("title: a", "title: A"));
        assert_eq!(moves(&old, &new, "b"), Ok(vec![]));
    }

    #[test]
    fn a_removed_step_follows_on_step_removed() {
        let old = sequence("", STEPS);
        let without_b = STEPS.replace("      - { id: b, task: { title: b } }\n", "");
        let refused = moves(&old, &sequence("", &without_b), "b").unwrap_err();
        assert!(
            refused.contains("1 enrollment(s) of s wait on step \"b\""),
            "{refused}"
        );
        assert_eq!(
            moves(
                &old,
                &sequence("    on_step_removed: exit\n", &without_b),
                "b"
            ),
            Ok(vec![EnrollmentMove::Exit("definition_changed".into())])
        );
        assert_eq!(
            moves(
                &old,
                &sequence("    on_step_removed: next\n", &without_b),
                "b"
            ),
            Ok(vec![EnrollmentMove::To("c".into())])
        );
        let only_a = "      - { id: a, task: { title: a } }\n";
        assert_eq!(
            moves(&old, &sequence("    on_step_removed: next\n", only_a), "b"),
            Ok(vec![EnrollmentMove::Complete])
        );
    }

    #[test]
    fn a_removed_sequence_ends_its_enrollments() {
        let old = sequence("", STEPS);
        assert_eq!(
            moves(&old, "rules: []\n", "b"),
            Ok(vec![EnrollmentMove::Exit("definition_removed".into())])
        );
    }

    #[test]
    fn an_unchanged_folder_plans_nothing_even_when_lines_move() {
        let base = sequence("", STEPS);
        let moved = format!("# a comment that shifts every line\n{base}");
        let plan = plan(&load(&base), &load(&moved), &waiting_on("b")).unwrap();
        assert!(!plan.changed(), "{plan}");
        assert!(plan.to_string().ends_with("No changes."), "{plan}");
    }

    #[test]
    fn items_compare_by_what_they_say_not_by_what_was_compiled_before_them() {
        let rule = |name: &str, condition: &str| {
            format!(
                "  - name: {name}\n    for: lead\n    on: x\n    if: \"{condition}\"\n    do: [ {{ task: {{ title: \"{{{{ lead.id }}}}\" }} }} ]\n"
            )
        };
        let old = format!("rules:\n{}", rule("r", "lead.a == 1"));
        let rule_changes = |new: String| {
            let plan = plan(&load(&old), &load(&new), &waiting_on("b")).unwrap();
            let changes: Vec<(String, Change)> = plan
                .rules
                .iter()
                .map(|c| (c.name.clone(), c.change))
                .collect();
            (changes, plan.to_string())
        };
        // A rule ahead of it: every template of `r` is compiled under
        // another key, and is still the same.
        let ahead = format!(
            "rules:\n{}{}",
            rule("first", "true"),
            rule("r", "lead.a == 1")
        );
        let (changes, text) = rule_changes(ahead);
        assert_eq!(changes, vec![("first".to_owned(), Change::Added)], "{text}");
        let other = format!("rules:\n{}", rule("r", "lead.a == 2"));
        let (changes, text) = rule_changes(other);
        assert_eq!(changes, vec![("r".to_owned(), Change::Changed)], "{text}");
    }

    #[test]
    fn the_plan_says_what_changes_and_where_waiting_enrollments_go() {
        let rule = "rules:\n  - name: r\n    for: lead\n    on: x\n    do: [ { enroll: s } ]\n";
        let old = format!("{}{rule}", sequence("", STEPS));
        let without_b = STEPS
            .replace("id: b, task: { title: b }", "id: d, task: { title: d }")
            .replace("title: a", "title: A");
        let new = format!(
            "{}{}",
            sequence("", &without_b),
            rule.replace("on: x", "on: other")
        );
        let refused = plan(&load(&old), &load(&new), &waiting_on("b")).unwrap();
        let text = refused.to_string();
        assert!(refused.refusal().is_some(), "{text}");
        assert!(text.contains("- step b (1 waiting: REFUSED"), "{text}");
        assert!(text.contains("~ step a"), "{text}");
        assert!(text.contains("+ step d"), "{text}");
        assert!(text.contains("rules:\n  ~ r (lead: 0 records)"), "{text}");
        let renamed = new.replace("id: d,", "id: d, renamed_from: b,");
        let accepted = plan(&load(&old), &load(&renamed), &waiting_on("b")).unwrap();
        assert_eq!(accepted.refusal(), None, "{accepted}");
        assert!(
            accepted
                .to_string()
                .contains("continue at d (renamed_from)"),
            "{accepted}"
        );
        assert_eq!(accepted.moves.len(), 1);
    }
}
