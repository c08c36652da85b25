//! `emit:` raises an event a workflow names, one level deeper in the chain.

use super::{ActionResult, Done, render_json};
use crate::config::workflows::JsonTemplate;
use crate::engine::Work;
use serde_json::json;

pub(in crate::engine) fn emit(
    work: &mut Work,
    event_type: &str,
    data: Option<&JsonTemplate>,
) -> ActionResult {
    let data = data
        .map(|d| render_json(work, d))
        .transpose()?
        .unwrap_or(json!({}));
    work.emit(event_type, data);
    Ok(Done::Ok(None))
}
