//! The pipeline page: a funnel per stage (entered, advanced, conversion,
//! time in stage, stalls, refused moves and what blocked them most) for a
//! period, overall or for one owner; and a stage's records now.

use super::super::render::{PageError, page};
use super::super::{Console, layout};
use super::{PageQuery, period_start, record_href, value};
use crate::report::pipeline::StageFigures;
use crate::store::Store;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Width of the bars' area in the charts, in SVG units.
const BAR_AREA: f64 = 460.0;
/// Records listed per stage page.
const STAGE_PAGE: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineQuery {
    pipeline: Option<String>,
    since: Option<String>,
    owner: Option<String>,
}

/// One stage's row in the funnel, with its bars' geometry.
#[derive(Serialize)]
struct StageRow<'a> {
    stage: &'a str,
    figures: &'a StageFigures,
    now_in: usize,
    href: String,
    y: f64,
    entered_width: f64,
    median_width: f64,
    p90_x: Option<f64>,
}

/// `GET /?pipeline=&since=30d&owner=`.
pub async fn show<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Extension(session): Extension<super::super::session::Session>,
    PageQuery(q): PageQuery<PipelineQuery>,
) -> Result<Response, PageError> {
    let app = &console.app;
    let workflows = app.workflows.load_full();
    let names: Vec<String> = workflows
        .pipelines
        .values()
        .map(|p| p.name.clone())
        .collect();
    let layout = layout(&console, &session, "pipeline");
    let Some(chosen) = q.pipeline.clone().or_else(|| names.first().cloned()) else {
        return Ok(page(
            "pipeline.html",
            layout,
            minijinja::context! { pipelines => names },
        ));
    };
    let chosen = chosen.as_str();
    if !names.iter().any(|n| n == chosen) {
        return Err(PageError::not_found(format!("no pipeline {chosen}")));
    }
    let period = q.since.as_deref().unwrap_or(super::DEFAULT_PERIOD);
    let since = period_start(period, app.clock.now())?;
    let figures = console
        .figures
        .pipeline(app.store.clone(), workflows.clone(), period, since)
        .await?;
    let report = figures.reports.iter().find(|r| r.pipeline == chosen);
    let owners: Vec<String> = report.map_or(Vec::new(), |r| r.by_owner.keys().cloned().collect());
    let stages = match (report, q.owner.as_deref()) {
        (Some(r), Some(owner)) => r.by_owner.get(owner).ok_or_else(|| {
            PageError::not_found(format!("{owner} has no visits in {chosen} in this period"))
        })?,
        (Some(r), None) => &r.stages,
        (None, _) => &Vec::new(),
    };
    let rows = funnel(chosen, stages, &figures);
    let context = minijinja::context! {
        pipelines => names,
        pipeline => chosen,
        since => period,
        owner => q.owner.clone(),
        owners => owners,
        rows => value(&rows),
        chart_height => rows.len() as f64 * 36.0 + 8.0,
        summary => report.map(|r| minijinja::context! {
            won => r.won, lost => r.lost, win_rate => r.win_rate, median_cycle_days => r.median_cycle_days,
        }),
        forecast => report.and_then(|r| match q.owner.as_deref() {
            Some(owner) => r.forecast_by_owner.get(owner),
            None => r.forecast.as_ref(),
        }).map(value),
    };
    Ok(page("pipeline.html", layout, context))
}

/// The funnel's rows: bars scaled to the stage most entered, and time in
/// stage to the longest 90th percentile.
fn funnel<'a>(
    pipeline: &str,
    stages: &'a [(String, StageFigures)],
    figures: &super::super::figures::PipelineFigures,
) -> Vec<StageRow<'a>> {
    let most_entered = stages
        .iter()
        .map(|(_, f)| f.entered)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let longest = stages
        .iter()
        .filter_map(|(_, f)| f.p90_hours_in_stage.or(f.median_hours_in_stage))
        .fold(0.0_f64, f64::max);
    let scale = |hours: f64| {
        if longest > 0.0 {
            hours / longest * BAR_AREA
        } else {
            0.0
        }
    };
    stages
        .iter()
        .enumerate()
        .map(|(i, (stage, f))| StageRow {
            stage,
            figures: f,
            now_in: figures
                .members
                .get(&(pipeline.to_owned(), stage.clone()))
                .map_or(0, Vec::len),
            href: format!(
                "/stages/{}/{}",
                super::encode(pipeline),
                super::encode(stage)
            ),
            y: i as f64 * 36.0 + 4.0,
            entered_width: f.entered as f64 / most_entered * BAR_AREA,
            median_width: f.median_hours_in_stage.map_or(0.0, scale),
            p90_x: f.p90_hours_in_stage.map(scale),
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageQuery {
    page: Option<usize>,
}

/// `GET /stages/{pipeline}/{stage}`: who is in the stage now, longest
/// there first, with owner, days in stage and whether they stalled.
pub async fn stage<S: Store>(
    State(console): State<Arc<Console<S>>>,
    Extension(session): Extension<super::super::session::Session>,
    Path((pipeline, stage)): Path<(String, String)>,
    PageQuery(q): PageQuery<StageQuery>,
) -> Result<Response, PageError> {
    let app = &console.app;
    let workflows = app.workflows.load_full();
    let known = workflows
        .pipelines
        .values()
        .find(|p| p.name == pipeline)
        .is_some_and(|p| p.stage_index(&stage).is_some());
    if !known {
        return Err(PageError::not_found(format!(
            "no stage {stage} in a pipeline {pipeline}"
        )));
    }
    let now = app.clock.now();
    let since = period_start(super::DEFAULT_PERIOD, now)?;
    let figures = console
        .figures
        .pipeline(app.store.clone(), workflows, super::DEFAULT_PERIOD, since)
        .await?;
    let empty = Vec::new();
    let members = figures
        .members
        .get(&(pipeline.clone(), stage.clone()))
        .unwrap_or(&empty);
    let page_no = q.page.unwrap_or(0);
    let mut rows = Vec::new();
    for m in members
        .iter()
        .skip(page_no.saturating_mul(STAGE_PAGE))
        .take(STAGE_PAGE)
    {
        let owner = app.store.record(&m.key)?.and_then(|r| r.owner);
        rows.push(minijinja::context! {
            record => m.key.to_string(),
            href => record_href(&m.key),
            owner => owner,
            days => (now - m.entered_at).num_hours() as f64 / 24.0,
            stalled => m.stalled,
        });
    }
    let more = members.len() > (page_no + 1) * STAGE_PAGE;
    Ok(page(
        "stage.html",
        layout(&console, &session, "pipeline"),
        minijinja::context! {
            pipeline => pipeline, stage => stage, rows => rows, total => members.len(),
            page => page_no, more => more,
        },
    ))
}
