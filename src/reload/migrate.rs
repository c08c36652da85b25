//! What a new workflow set means for enrollments in flight (SPEC §3.6
//! "Reload"): each waiting enrollment continues at the step with the same
//! id, or the step that says `renamed_from` it; one waiting on a removed
//! step follows its sequence's `on_step_removed`, and without one the
//! reload is refused, naming the step and how many wait there.

use crate::config::Workflows;
use crate::config::model::OnStepRemoved;
use crate::engine::sequence::{EnrollmentMove, has_step, renamed_step, steps_after};
use crate::state::Enrollment;
use crate::store::{EnrollmentTable, StoreError};
use std::collections::BTreeMap;

/// Enrollments read per page while checking.
const PAGE: usize = 1_000;

/// Why a reload is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(.stranded))]
pub struct Stranded {
    /// (sequence, removed step) → enrollments waiting there.
    pub stranded: BTreeMap<(String, String), usize>,
}

fn describe(stranded: &BTreeMap<(String, String), usize>) -> String {
    let parts: Vec<String> = stranded
        .iter()
        .map(|((sequence, step), n)| {
            format!("{n} enrollment(s) of {sequence} wait on step \"{step}\", which the new definition removes")
        })
        .collect();
    format!(
        "reload refused: {}; keep the step, name it in `renamed_from:` of its replacement, or set `on_step_removed: exit` or `next` on the sequence",
        parts.join("; ")
    )
}

/// Either reason a reload stops here.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Enrollments would be stranded.
    #[error(transparent)]
    Stranded(#[from] Stranded),
    /// Reading enrollments failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The moves the new set needs, or the refusal.
pub fn plan<S: EnrollmentTable>(
    old: &Workflows,
    new: &Workflows,
    store: &S,
) -> Result<Vec<(Enrollment, EnrollmentMove)>, MigrateError> {
    let mut moves = Vec::new();
    let mut stranded: BTreeMap<(String, String), usize> = BTreeMap::new();
    crate::store::for_each_item(
        |after| store.active_enrollments(after, PAGE),
        |e| match decide(&e, old, new) {
            Decision::Stay => {}
            Decision::Move(m) => moves.push((e, m)),
            Decision::Stranded(step) => {
                *stranded.entry((e.sequence.clone(), step)).or_default() += 1;
            }
        },
    )?;
    if stranded.is_empty() {
        Ok(moves)
    } else {
        Err(Stranded { stranded }.into())
    }
}

enum Decision {
    Stay,
    Move(EnrollmentMove),
    Stranded(String),
}

fn decide(e: &Enrollment, old: &Workflows, new: &Workflows) -> Decision {
    let Some(definition) = new.sequences.get(&e.sequence) else {
        return Decision::Move(EnrollmentMove::Exit("definition_removed".to_owned()));
    };
    // Not yet started or about to end: nothing to map.
    let Some(step) = e.next_step.as_deref().filter(|_| e.timer.is_some()) else {
        return Decision::Stay;
    };
    if has_step(&definition.steps, step) {
        return Decision::Stay;
    }
    if let Some(renamed) = renamed_step(&definition.steps, step) {
        return Decision::Move(EnrollmentMove::To(renamed));
    }
    match definition.on_step_removed {
        None => Decision::Stranded(step.to_owned()),
        Some(OnStepRemoved::Exit) => {
            Decision::Move(EnrollmentMove::Exit("definition_changed".to_owned()))
        }
        Some(OnStepRemoved::Next) => Decision::Move(next_surviving(e, step, old, new)),
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
            .commit(Changes {
                enrollments: vec![e],
                ..Changes::default()
            })
            .unwrap();
        store
    }

    fn moves(old: &str, new: &str, step: &str) -> Result<Vec<EnrollmentMove>, String> {
        plan(&load(old), &load(new), &waiting_on(step))
            .map(|m| m.into_iter().map(|(_, to)| to).collect())
            .map_err(|e| e.to_string())
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
}
