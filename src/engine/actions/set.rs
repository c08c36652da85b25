//! `set:` writes fields on the record.

use super::{ActionResult, Done, render};
use crate::config::workflows::FieldValue;
use crate::engine::Work;
use serde_json::Value as Json;

pub(in crate::engine) fn set(work: &mut Work, fields: &[(String, FieldValue)]) -> ActionResult {
    let mut values = serde_json::Map::new();
    for (name, value) in fields {
        let v = match value {
            FieldValue::Template(t) => Json::String(render(work, t, &[])?),
            FieldValue::Literal(v) => v.clone(),
        };
        values.insert(name.clone(), v);
    }
    let changed = work.merge_fields(&values);
    if changed.is_empty() {
        return Ok(Done::Skipped("no field changed".to_owned()));
    }
    let detail = format!("changed {}", changed.join(", "));
    work.note_updated(changed);
    Ok(Done::Ok(Some(detail)))
}
