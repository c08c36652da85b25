//! The promise of `validate` (issue 18): a folder that compiled without an
//! error runs everything it wrote. Each section's compiler reports why it
//! leaves an item out; this check counts what went in and what came out, so
//! an item left out with no error (a compiler bug) is an error, not a rule
//! that silently never runs.

use super::context::Cx;
use crate::config::diagnostic::Code;
use crate::config::diagnostic::Position;
use crate::config::loader::SourceSet;
use crate::config::model::{Located, StepSpec};
use crate::config::workflows::{Step, StepKind, Workflows};

/// Reports every section whose compiled count differs from what the files wrote.
pub fn check(set: &SourceSet, workflows: &Workflows, cx: &mut Cx) {
    let files = || set.files.iter().map(|f| &f.model);
    let written = Counts {
        rules: files().map(|m| m.rules.len()).sum(),
        actions: files()
            .flat_map(|m| &m.rules)
            .map(|r| r.actions.len())
            .sum(),
        sequences: files().map(|m| m.sequences.len()).sum(),
        steps: files()
            .flat_map(|m| &m.sequences)
            .map(|s| written_steps(&s.steps))
            .sum(),
        pipelines: files().map(|m| m.pipelines.len()).sum(),
        stages: files()
            .flat_map(|m| &m.pipelines)
            .map(|p| p.stages.len())
            .sum(),
        models: files().map(|m| m.scoring.len()).sum(),
        score_rules: files()
            .flat_map(|m| &m.scoring)
            .map(|s| s.rules.len() + s.thresholds.len())
            .sum(),
        tests: files().map(|m| m.tests.len()).sum(),
    };
    let compiled = Counts {
        rules: workflows.rules.len(),
        actions: workflows.rules.iter().map(|r| r.actions.len()).sum(),
        sequences: workflows.sequences.len(),
        steps: workflows
            .sequences
            .values()
            .map(|s| compiled_steps(&s.steps))
            .sum(),
        pipelines: workflows.pipelines.len(),
        stages: workflows.pipelines.values().map(|p| p.stages.len()).sum(),
        models: workflows.scoring.len(),
        score_rules: workflows
            .scoring
            .iter()
            .map(|m| m.rules.len() + m.thresholds.len())
            .sum(),
        tests: workflows.tests.len(),
    };
    for (what, written, compiled) in written.differences(&compiled) {
        cx.error_at(
            Position::file(""), Code::Internal,
            format!(
                "{written} {what} written but {compiled} compiled, with no error saying why; this is a dealflow bug, please report it with the folder"
            ),
        );
    }
}

/// How many of each item a folder holds.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    rules: usize,
    actions: usize,
    sequences: usize,
    steps: usize,
    pipelines: usize,
    stages: usize,
    models: usize,
    score_rules: usize,
    tests: usize,
}

impl Counts {
    fn named(&self) -> [(&'static str, usize); 9] {
        [
            ("rules", self.rules),
            ("rule actions", self.actions),
            ("sequences", self.sequences),
            ("sequence steps", self.steps),
            ("pipelines", self.pipelines),
            ("stages", self.stages),
            ("scoring models", self.models),
            ("scoring rules and thresholds", self.score_rules),
            ("tests", self.tests),
        ]
    }

    fn differences(&self, other: &Counts) -> Vec<(&'static str, usize, usize)> {
        self.named()
            .into_iter()
            .zip(other.named())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((what, a), (_, b))| (what, a, b))
            .collect()
    }
}

fn written_steps(steps: &[Located<StepSpec>]) -> usize {
    steps
        .iter()
        .map(|s| 1 + written_steps(&s.get().then) + written_steps(&s.get().otherwise))
        .sum()
}

fn compiled_steps(steps: &[Step]) -> usize {
    steps
        .iter()
        .map(|s| match &s.kind {
            StepKind::Branch {
                then, otherwise, ..
            } => 1 + compiled_steps(then) + compiled_steps(otherwise),
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_names_the_section_and_both_counts() {
        let written = Counts {
            rules: 3,
            steps: 5,
            ..Counts::default()
        };
        let compiled = Counts {
            rules: 2,
            steps: 5,
            ..Counts::default()
        };
        assert_eq!(written.differences(&compiled), [("rules", 3, 2)]);
    }
}
