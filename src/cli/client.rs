//! Commands that talk to a running daemon: `emit` and `tasks` (and the
//! client `plan` uses).

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use std::process::ExitCode;

/// Where the daemon is, and the token to show it.
pub struct Daemon {
    /// Base URL.
    pub url: String,
    /// Bearer token, from `$DEALFLOW_TOKEN`.
    pub token: Option<String>,
}

impl Daemon {
    /// `--url`, else `$DEALFLOW_URL`, else the default listen address.
    pub fn from_env(url: Option<String>) -> anyhow::Result<Self> {
        let url = url
            .or_else(|| std::env::var("DEALFLOW_URL").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
        check_url(&url)?;
        Ok(Daemon {
            url: url.trim_end_matches('/').to_owned(),
            token: std::env::var("DEALFLOW_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        })
    }

    /// Sends one request (shaped by `prepare`) and answers the JSON body.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        prepare: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> anyhow::Result<Value> {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async {
            let client = reqwest::Client::new();
            let response = prepare(self.request(&client, method, path))
                .send()
                .await
                .with_context(|| format!("cannot reach the daemon at {}", self.url))?;
            answer(response).await
        })
    }

    /// POSTs a JSON body and answers the JSON answer.
    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, |r| r.json(body))
    }

    pub(super) fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let builder = client
            .request(method, format!("{}{path}", self.url))
            .timeout(std::time::Duration::from_secs(30));
        match &self.token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        }
    }
}

/// A daemon URL must say how to reach it: `localhost:8080` alone reads as
/// a URL scheme named "localhost", and the error would not say so.
fn check_url(url: &str) -> anyhow::Result<()> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(());
    }
    bail!(
        "the daemon URL {url:?} needs its scheme: write http://{url} (from --url or $DEALFLOW_URL)"
    )
}

/// A request the daemon answered with an error status.
#[derive(Debug)]
pub struct Refused {
    /// The status.
    pub status: reqwest::StatusCode,
    /// The error's message, then its diagnostics, one per line.
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the daemon answered {}: {}", self.status, self.message)
    }
}

impl std::error::Error for Refused {}

/// Answers the daemon's JSON, or fails with its error ([`Refused`]).
async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let mut message = body["error"]["message"]
        .as_str()
        .unwrap_or("no message")
        .to_owned();
    for line in body["error"]["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        message.push('\n');
        message.push_str(line);
    }
    Err(Refused { status, message }.into())
}

/// `k=v` pairs of `--field` or `--data`: JSON values (numbers, true,
/// null) are kept as such, anything else is a string.
pub fn parse_fields(option: &str, pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut fields = Map::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--{option} {pair}: write NAME=VALUE"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        fields.insert(k.to_owned(), value);
    }
    Ok(fields)
}

/// What `dealflow emit` posts.
pub struct EmitRequest<'a> {
    /// Event type.
    pub event_type: &'a str,
    /// `KIND/ID`.
    pub record: &'a str,
    /// `--field NAME=VALUE`: merged into the record.
    pub fields: &'a [String],
    /// `--data NAME=VALUE`: the event's own data.
    pub data: &'a [String],
    /// Idempotency key.
    pub id: Option<String>,
}

/// `dealflow emit TYPE --record KIND/ID [--field k=v ...] [--data k=v ...]`.
pub fn emit(daemon: &Daemon, request: EmitRequest) -> anyhow::Result<ExitCode> {
    let event_type = request.event_type;
    let (kind, record_id) = request
        .record
        .split_once('/')
        .context("--record must be KIND/ID, e.g. lead/L1")?;
    let fields = parse_fields("field", request.fields)?;
    let data = parse_fields("data", request.data)?;
    let mut event = json!({ "type": event_type, "record": { "kind": kind, "id": record_id, "fields": fields }, "data": data });
    if let Some(id) = request.id {
        event["id"] = json!(id);
    }
    let body = daemon.call(reqwest::Method::POST, "/v1/events", |r| r.json(&event))?;
    let duplicate = body["duplicate"].as_bool().unwrap_or(false);
    println!(
        "{} {} {}",
        if duplicate { "duplicate" } else { "accepted" },
        body["id"].as_str().unwrap_or(""),
        event_type
    );
    Ok(ExitCode::SUCCESS)
}

/// `dealflow tasks [--owner EMAIL | --unassigned]`: open tasks as a table.
pub fn tasks(daemon: &Daemon, owner: Option<String>, unassigned: bool) -> anyhow::Result<ExitCode> {
    let mut query = vec![("status", "open".to_owned()), ("limit", "500".to_owned())];
    if let Some(o) = owner {
        query.push(("owner", o));
    }
    if unassigned {
        query.push(("unassigned", "true".to_owned()));
    }
    let body = daemon.call(reqwest::Method::GET, "/v1/tasks", |r| r.query(&query))?;
    let tasks = body["tasks"].as_array().cloned().unwrap_or_default();
    if tasks.is_empty() {
        println!("No open tasks.");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20}  {:<24}  {:<24}  {:<16}  TITLE",
        "DUE", "OWNER", "ID", "RECORD"
    );
    for t in tasks {
        let record = format!(
            "{}/{}",
            t["record"]["kind"].as_str().unwrap_or(""),
            t["record"]["id"].as_str().unwrap_or("")
        );
        println!(
            "{:<20}  {:<24}  {:<24}  {:<16}  {}",
            short_time(t["due_at"].as_str()),
            t["owner"].as_str().unwrap_or("(unassigned)"),
            t["id"].as_str().unwrap_or(""),
            record,
            t["title"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `dealflow tasks complete ID`.
pub fn complete_task(daemon: &Daemon, id: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/tasks/{}/complete", path_segment(id));
    daemon.call(reqwest::Method::POST, &path, |r| r)?;
    println!("completed {id}");
    Ok(ExitCode::SUCCESS)
}

/// `dealflow suppressions`: every suppressed address with why and when.
pub fn suppressions(daemon: &Daemon) -> anyhow::Result<ExitCode> {
    let mut after: Option<String> = None;
    let mut lines = Vec::new();
    loop {
        let query: Vec<(&str, String)> = std::iter::once(("limit", "500".to_owned()))
            .chain(after.clone().map(|a| ("after", a)))
            .collect();
        let body = daemon.call(reqwest::Method::GET, "/v1/suppressions", |r| {
            r.query(&query)
        })?;
        for s in body["suppressions"].as_array().into_iter().flatten() {
            lines.push(format!(
                "{:<20}  {:<40}  {}",
                short_time(s["at"].as_str()),
                s["address"].as_str().unwrap_or(""),
                s["reason"].as_str().unwrap_or("")
            ));
        }
        after = body["next"].as_str().map(String::from);
        if after.is_none() {
            break;
        }
    }
    if lines.is_empty() {
        println!("No suppressed addresses.");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<20}  {:<40}  REASON", "SINCE", "ADDRESS");
    super::print_lines(lines.into_iter())?;
    Ok(ExitCode::SUCCESS)
}

/// `dealflow suppressions remove ADDRESS`.
pub fn remove_suppression(daemon: &Daemon, address: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/suppressions/{}", path_segment(address));
    let body = daemon.call(reqwest::Method::DELETE, &path, |r| r)?;
    println!(
        "removed {} (was: {})",
        body["removed"]["address"].as_str().unwrap_or(address),
        body["removed"]["reason"].as_str().unwrap_or("")
    );
    Ok(ExitCode::SUCCESS)
}

/// Every payload a source keeps, a page at a time.
fn each_rejected(
    daemon: &Daemon,
    name: &str,
    mut each: impl FnMut(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let path = format!("/v1/sources/{}/rejected", path_segment(name));
    let mut after: Option<String> = None;
    loop {
        let query: Vec<(&str, String)> = std::iter::once(("limit", "100".to_owned()))
            .chain(after.clone().map(|a| ("after", a)))
            .collect();
        let body = daemon.call(reqwest::Method::GET, &path, |r| r.query(&query))?;
        for payload in body["rejected"].as_array().into_iter().flatten() {
            each(payload)?;
        }
        after = body["next"].as_str().map(String::from);
        if after.is_none() {
            return Ok(());
        }
    }
}

/// `dealflow sources rejected NAME`: what a source kept, and why.
pub fn rejected(daemon: &Daemon, name: &str) -> anyhow::Result<ExitCode> {
    let mut lines = Vec::new();
    each_rejected(daemon, name, |p| {
        lines.push(format!(
            "{:<24}  {:<20}  {}",
            p["id"].as_str().unwrap_or(""),
            short_time(p["received_at"].as_str()),
            p["reason"].as_str().unwrap_or("")
        ));
        Ok(())
    })?;
    if lines.is_empty() {
        println!("Source {name} keeps no payloads.");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24}  {:<20}  REASON", "ID", "RECEIVED");
    super::print_lines(lines.into_iter())?;
    Ok(ExitCode::SUCCESS)
}

/// `dealflow sources replay NAME`: maps every kept payload again, one by
/// one, printing each as it goes.
pub fn replay(daemon: &Daemon, name: &str) -> anyhow::Result<ExitCode> {
    let (mut replayed, mut events, mut still) = (0, 0, 0);
    each_rejected(daemon, name, |p| {
        let id = p["id"].as_str().unwrap_or_default();
        let path = format!(
            "/v1/sources/{}/rejected/{}/replay",
            path_segment(name),
            path_segment(id)
        );
        match daemon.post(&path, &json!({})) {
            Ok(answer) => {
                let n = answer["events"].as_u64().unwrap_or(0);
                println!("{id}: replayed, {n} event(s)");
                replayed += 1;
                events += n;
                Ok(())
            }
            Err(e) => match e.downcast_ref::<Refused>() {
                Some(refused) if refused.status == reqwest::StatusCode::UNPROCESSABLE_ENTITY => {
                    println!("{id}: {}", refused.message);
                    still += 1;
                    Ok(())
                }
                _ => Err(e),
            },
        }
    })?;
    println!(
        "{replayed} payload(s) replayed into {events} event(s); {still} still cannot be mapped."
    );
    Ok(if still == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `id` percent-encoded for one path segment.
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `2026-03-02 15:00Z` from an RFC 3339 time; `-` when there is none.
fn short_time(time: Option<&str>) -> String {
    match time.map(chrono::DateTime::parse_from_rfc3339) {
        Some(Ok(t)) => t.to_utc().format("%Y-%m-%d %H:%MZ").to_string(),
        Some(Err(_)) => time.unwrap_or("-").to_owned(),
        None => "-".to_owned(),
    }
}

/// `dealflow report [pipeline|sequences|owners]`: a report of the running
/// daemon's history.
/// What a report covers.
pub struct ReportQuery<'a> {
    /// The period, back from now (`30d`).
    pub since: &'a str,
    /// Only this pipeline.
    pub pipeline: Option<&'a str>,
}

pub fn report(
    daemon: &Daemon,
    name: &str,
    query: ReportQuery,
    format: crate::report::Format,
) -> anyhow::Result<ExitCode> {
    use crate::report::{self, Format};
    let body = daemon.call(reqwest::Method::GET, &format!("/v1/reports/{name}"), |r| {
        let r = r.query(&[("since", query.since)]);
        match query.pipeline {
            Some(p) => r.query(&[("pipeline", p)]),
            None => r,
        }
    })?;
    let text = match (name, format) {
        (_, Format::Json) => serde_json::to_string_pretty(&body)?,
        ("pipeline", f) => {
            let reports: Vec<report::PipelineReport> = serde_json::from_value(body)?;
            report::render_pipeline(&reports, f)
        }
        ("sequences", f) => report::render_sequences(&serde_json::from_value(body)?, f),
        ("owners", f) => report::render_owners(&serde_json::from_value(body)?, f),
        ("forecast", f) => {
            let reports: Vec<report::forecast::ForecastAccuracy> = serde_json::from_value(body)?;
            report::render_forecast(&reports, f)
        }
        (other, _) => {
            bail!("no report {other}; there are pipeline, sequences, owners and forecast")
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_shown_to_the_minute() {
        assert_eq!(
            short_time(Some("2026-11-23T00:59:57.953217516Z")),
            "2026-11-23 00:59Z"
        );
        assert_eq!(short_time(None), "-");
        assert_eq!(short_time(Some("soon")), "soon");
    }

    #[test]
    fn fields_keep_json_values_and_default_to_strings() {
        let f = parse_fields(
            "field",
            &["n=5".into(), "vip=true".into(), "name=Pat Lee".into()],
        )
        .unwrap();
        assert_eq!(
            (f["n"].clone(), f["vip"].clone(), f["name"].clone()),
            (json!(5), json!(true), json!("Pat Lee"))
        );
        let err = parse_fields("data", &["novalue".into()]).unwrap_err();
        assert!(err.to_string().contains("--data novalue"), "{err}");
    }

    #[test]
    fn a_url_without_scheme_is_explained() {
        let err = check_url("localhost:8080").unwrap_err().to_string();
        assert!(err.contains("write http://localhost:8080"), "{err}");
        assert!(check_url("https://flows.acme.example").is_ok());
    }
}
