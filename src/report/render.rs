//! Reports as terminal tables, CSV or JSON.

use super::pipeline::{PipelineReport, StageFigures};
use super::{OwnerFigures, SequenceFigures};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON document.
    Json,
    /// Comma-separated, one header line.
    Csv,
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

fn number(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.1}"))
}

const STAGE_COLUMNS: [&str; 13] = [
    "entered",
    "exited",
    "still_in",
    "advanced",
    "moved_back",
    "to_next",
    "to_won",
    "median_hours",
    "p90_hours",
    "stalled",
    "stall_notices",
    "refused",
    "most_blocking",
];

fn stage_cells(f: &StageFigures) -> [String; 13] {
    [
        f.entered.to_string(),
        f.exited.to_string(),
        f.still_in.to_string(),
        f.advanced.to_string(),
        f.moved_back.to_string(),
        percent(f.conversion_to_next),
        percent(f.conversion_to_won),
        number(f.median_hours_in_stage),
        number(f.p90_hours_in_stage),
        f.stalled.to_string(),
        f.stall_notices.to_string(),
        f.refused_moves.to_string(),
        f.most_blocking.clone().unwrap_or_else(|| "-".to_owned()),
    ]
}

/// A CSV field, quoted when it holds a separator, quote or line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

fn stage_table(out: &mut String, stages: &[(String, StageFigures)]) {
    let _ = write!(out, "  {:<16}", "STAGE");
    for c in STAGE_COLUMNS {
        let _ = write!(out, " {:>13}", c.to_uppercase());
    }
    out.push('\n');
    for (name, f) in stages {
        let _ = write!(out, "  {name:<16}");
        for cell in stage_cells(f) {
            let _ = write!(out, " {cell:>13}");
        }
        out.push('\n');
    }
}

/// A forecasting pipeline's money: per stage open and weighted value, then
/// the totals and velocity, overall and per owner.
fn forecast_table(out: &mut String, r: &PipelineReport) {
    let Some(total) = &r.forecast else { return };
    let _ = writeln!(
        out,
        "\n  {:<16} {:>10} {:>14} {:>14}",
        "FORECAST", "OPEN", "OPEN_VALUE", "WEIGHTED"
    );
    for (stage, f) in r.stages.iter().filter(|(_, f)| f.open_deals.is_some()) {
        let _ = writeln!(
            out,
            "  {stage:<16} {:>10} {:>14} {:>14}",
            f.open_deals.unwrap_or(0),
            number(f.open_value),
            number(f.weighted_value)
        );
    }
    let mut owners: Vec<(&str, &super::Forecast)> = vec![("(all)", total)];
    owners.extend(r.forecast_by_owner.iter().map(|(o, f)| {
        (
            if o.is_empty() {
                "(no owner)"
            } else {
                o.as_str()
            },
            f,
        )
    }));
    for (owner, f) in owners {
        let _ = writeln!(
            out,
            "  {owner}: {} open worth {}, weighted {}; won {} worth {} (average {}); velocity {} per day",
            f.open_deals,
            number(Some(f.open_value)),
            number(Some(f.weighted_value)),
            f.won_deals,
            number(Some(f.won_value)),
            number(f.average_won_value),
            number(f.velocity_per_day)
        );
    }
}

/// The forecast report: per pipeline and horizon, the forecast made then,
/// what was won since, and their ratio; per owner below.
pub fn render_forecast(reports: &[super::forecast::ForecastAccuracy], format: Format) -> String {
    let made =
        |h: &super::forecast::HorizonFigures| h.made_on.map_or("-".to_owned(), |d| d.to_string());
    match format {
        Format::Json => json(&reports),
        Format::Csv => {
            let mut out = "pipeline,days_ago,made_on,owner,forecast,closed,ratio\n".to_owned();
            for r in reports {
                for h in &r.horizons {
                    let owners = h.by_owner.iter().map(|(o, x)| {
                        let ratio = (x.forecast > 0.0).then(|| x.closed / x.forecast);
                        (o.as_str(), Some(x.forecast), Some(x.closed), ratio)
                    });
                    let rows =
                        std::iter::once(("(all)", h.forecast, h.closed, h.ratio)).chain(owners);
                    for (owner, forecast, closed, ratio) in rows {
                        let _ = writeln!(
                            out,
                            "{},{},{},{},{},{},{}",
                            csv_field(&r.pipeline),
                            h.days,
                            made(h),
                            csv_field(owner),
                            number(forecast),
                            number(closed),
                            number(ratio)
                        );
                    }
                }
            }
            out
        }
        Format::Table => {
            if reports.is_empty() {
                return "No pipeline forecasts: give one `value:` and its stages `probability:` (docs/workflows.md).\n".to_owned();
            }
            let mut out = String::new();
            for r in reports {
                let _ = writeln!(
                    out,
                    "Pipeline {}: forecasts against what was won since",
                    r.pipeline
                );
                let _ = writeln!(
                    out,
                    "  {:<9} {:<11} {:>14} {:>14} {:>8}",
                    "DAYS AGO", "MADE ON", "FORECAST", "WON SINCE", "RATIO"
                );
                for h in &r.horizons {
                    let _ = writeln!(
                        out,
                        "  {:<9} {:<11} {:>14} {:>14} {:>8}",
                        h.days,
                        made(h),
                        number(h.forecast),
                        number(h.closed),
                        number(h.ratio)
                    );
                    for (owner, o) in &h.by_owner {
                        let shown = if owner.is_empty() {
                            "(no owner)"
                        } else {
                            owner
                        };
                        let _ = writeln!(
                            out,
                            "    {shown:<28} {:>14} {:>14}",
                            number(Some(o.forecast)),
                            number(Some(o.closed))
                        );
                    }
                }
                out.push('\n');
            }
            out
        }
    }
}

/// The pipeline report.
pub fn render_pipeline(reports: &[PipelineReport], format: Format) -> String {
    match format {
        Format::Json => json(&reports),
        Format::Csv => {
            let mut out = format!("pipeline,owner,stage,{}\n", STAGE_COLUMNS.join(","));
            for r in reports {
                let mut rows = vec![("(all)".to_owned(), &r.stages)];
                rows.extend(r.by_owner.iter().map(|(o, s)| (o.clone(), s)));
                for (owner, stages) in rows {
                    for (stage, f) in stages.iter() {
                        let _ = writeln!(
                            out,
                            "{},{},{},{}",
                            r.pipeline,
                            owner,
                            stage,
                            stage_cells(f).map(|c| csv_field(&c)).join(",")
                        );
                    }
                }
            }
            out
        }
        Format::Table => {
            let mut out = String::new();
            for r in reports {
                let _ = writeln!(
                    out,
                    "Pipeline {}: won {}, lost {}, win rate {}, median cycle {} days",
                    r.pipeline,
                    r.won,
                    r.lost,
                    percent(r.win_rate),
                    number(r.median_cycle_days)
                );
                stage_table(&mut out, &r.stages);
                forecast_table(&mut out, r);
                for (owner, stages) in &r.by_owner {
                    let shown = if owner.is_empty() {
                        "(no owner)"
                    } else {
                        owner
                    };
                    let _ = writeln!(out, "\n  by owner: {shown}");
                    stage_table(&mut out, stages);
                }
                out.push('\n');
            }
            out
        }
    }
}

/// The owners report.
pub fn render_owners(owners: &BTreeMap<String, OwnerFigures>, format: Format) -> String {
    let name = |o: &str| {
        if o.is_empty() {
            "(unassigned)".to_owned()
        } else {
            o.to_owned()
        }
    };
    match format {
        Format::Json => json(owners),
        Format::Csv => {
            let mut out = String::from(
                "owner,open_tasks,overdue_tasks,handoffs_received,handoffs_open,median_handoff_response_hours,records_by_stage\n",
            );
            for (o, f) in owners {
                let stages: Vec<String> = f
                    .records_by_stage
                    .iter()
                    .map(|(s, n)| format!("{s}={n}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{}",
                    csv_field(&name(o)),
                    f.open_tasks,
                    f.overdue_tasks,
                    f.handoffs_received,
                    f.handoffs_open,
                    number(f.median_handoff_response_hours),
                    csv_field(&stages.join(" "))
                );
            }
            out
        }
        Format::Table => {
            let mut out = format!(
                "{:<28} {:>8} {:>8} {:>9} {:>14}  RECORDS BY STAGE\n",
                "OWNER", "OPEN", "OVERDUE", "HANDOFFS", "MEDIAN_RESP_H"
            );
            for (o, f) in owners {
                let stages: Vec<String> = f
                    .records_by_stage
                    .iter()
                    .map(|(s, n)| format!("{s}: {n}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "{:<28} {:>8} {:>8} {:>9} {:>14}  {}",
                    name(o),
                    f.open_tasks,
                    f.overdue_tasks,
                    f.handoffs_received,
                    number(f.median_handoff_response_hours),
                    stages.join(", ")
                );
            }
            out
        }
    }
}

/// The sequences report.
pub fn render_sequences(sequences: &BTreeMap<String, SequenceFigures>, format: Format) -> String {
    match format {
        Format::Json => json(sequences),
        Format::Csv => {
            let mut out = String::from("sequence,step,status,count\n");
            for (name, f) in sequences {
                for (step, figures) in &f.steps {
                    for (status, n) in figures.counts() {
                        let _ = writeln!(out, "{name},{step},{status},{n}");
                    }
                }
                let _ = writeln!(out, "{name},,enrolled,{}", f.enrolled);
                let _ = writeln!(out, "{name},,completed,{}", f.completed);
                for (reason, n) in &f.exited {
                    let _ = writeln!(out, "{name},,exited:{reason},{n}");
                }
            }
            out
        }
        Format::Table => {
            let mut out = String::new();
            for (name, f) in sequences {
                let exits: Vec<String> =
                    f.exited.iter().map(|(r, n)| format!("{r}: {n}")).collect();
                let _ = writeln!(
                    out,
                    "Sequence {name}: enrolled {}, active {}, completed {}, reply rate {}\n  exited: {}",
                    f.enrolled,
                    f.active,
                    f.completed,
                    percent(f.reply_rate),
                    if exits.is_empty() {
                        "-".to_owned()
                    } else {
                        exits.join(", ")
                    }
                );
                for (step, figures) in &f.steps {
                    let counts: Vec<String> = figures
                        .counts()
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect();
                    let _ = writeln!(
                        out,
                        "  step {step:<16} {}; reply rate {}",
                        counts.join(", "),
                        percent(figures.reply_rate)
                    );
                }
                out.push('\n');
            }
            out
        }
    }
}
