//! `assign:` gives the record an owner: a person, or a team member picked
//! round-robin or least-loaded.

use super::{ActionError, Done};
use crate::config::model::Strategy;
use crate::config::workflows::Assignment;
use crate::engine::Work;

/// The person an assignment picks, or why none could be picked.
pub(in crate::engine) fn pick_owner(
    work: &mut Work,
    assignment: &Assignment,
) -> Result<String, ActionError> {
    let (team, strategy) = match assignment {
        Assignment::Owner(email) => return Ok(email.clone()),
        Assignment::Team { team, strategy } => (team, strategy),
    };
    let members = match work.workflows.team.teams.get(team) {
        Some(m) if !m.is_empty() => m.clone(),
        _ => return Err(format!("team {team} has no members").into()),
    };
    let picked = match strategy {
        Strategy::RoundRobin => {
            // The position lives in the store, so turns stay fair across restarts.
            let name = format!("round_robin/{team}");
            let position = work.counter(&name)?;
            work.counters.insert(name, position + 1);
            members[(position % members.len() as u64) as usize].clone()
        }
        Strategy::LeastLoaded => {
            let mut best: Option<(i64, String)> = None;
            for m in &members {
                let load = work.state.open_task_count(m)? as i64
                    + work.open_tasks.get(m).copied().unwrap_or(0);
                if best.as_ref().is_none_or(|(b, _)| load < *b) {
                    best = Some((load, m.clone()));
                }
            }
            best.map(|(_, m)| m).unwrap_or_default()
        }
    };
    Ok(picked)
}

pub(in crate::engine) fn set_owner(work: &mut Work, owner: String) -> Done {
    if work.record.owner.as_deref() == Some(owner.as_str()) {
        return Done::Skipped(format!("already owned by {owner}"));
    }
    work.record.owner = Some(owner.clone());
    work.touch();
    work.note_updated(vec!["owner".to_owned()]);
    Done::Ok(Some(format!("owner is {owner}")))
}
