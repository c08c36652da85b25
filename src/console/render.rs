//! Pages from templates compiled into the binary (minijinja, auto-escaped:
//! every `.html` template escapes what it prints, so a lead named
//! `<script>` is text), and the error page every failure answers with.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, Value};
use std::sync::LazyLock;

/// The templates, parsed once.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(templates);

fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    let sources: [(&str, &str); 11] = [
        ("base.html", include_str!("templates/base.html")),
        ("error.html", include_str!("templates/error.html")),
        ("signin.html", include_str!("templates/signin.html")),
        ("pipeline.html", include_str!("templates/pipeline.html")),
        ("stage.html", include_str!("templates/stage.html")),
        ("record.html", include_str!("templates/record.html")),
        ("tasks.html", include_str!("templates/tasks.html")),
        ("sequences.html", include_str!("templates/sequences.html")),
        ("outbox.html", include_str!("templates/outbox.html")),
        ("sources.html", include_str!("templates/sources.html")),
        ("workflows.html", include_str!("templates/workflows.html")),
    ];
    for (name, source) in sources {
        if let Err(e) = env.add_template(name, source) {
            // A template that does not parse is a dealflow bug caught by
            // the tests; the page naming it answers 500 rather than panic.
            tracing::error!(template = name, error = %e, "A console template does not parse.");
        }
    }
    env.add_filter("hours", hours);
    env.add_filter("when", when);
    env.add_filter("percent", percent);
    env.add_filter("amount", amount);
    env
}

/// Hours in the unit people think in: `72.0` → "3.0 d", `5.0` → "5.0 h",
/// `0.25` → "15 min".
fn hours(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(h) if h >= 48.0 => format!("{:.1} d", h / 24.0),
        Some(h) if h >= 1.0 => format!("{h:.1} h"),
        Some(h) if h * 60.0 >= 1.0 => format!("{:.0} min", h * 60.0),
        Some(_) => "< 1 min".to_owned(),
    }
}

/// An RFC 3339 time as "2026-12-05 15:21 UTC".
fn when(value: Option<String>) -> String {
    value
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(&v).ok())
        .map_or_else(
            || "–".to_owned(),
            |t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%d %H:%M UTC")
                    .to_string()
            },
        )
}

/// `1234567.8` → "1,234,568": money without a currency (the workflows
/// do not say which).
fn amount(value: Option<f64>) -> String {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return "–".to_owned();
    };
    let digits = format!("{:.0}", v.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if v < -0.5 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// `0.423` → "42%".
fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

/// Renders template `name` as a 200 page, with what the layout shows
/// (`layout`) and what the page shows (`context`).
pub fn page(name: &str, layout: Value, context: Value) -> Response {
    match render(name, minijinja::context! { ..context, ..layout }) {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "A console page failed to render.");
            PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this page failed to render; the log has the details",
            )
            .into_response()
        }
    }
}

fn render(name: &str, context: Value) -> Result<String, minijinja::Error> {
    TEMPLATES.get_template(name)?.render(context)
}

/// A failed page: its status and a sentence for the reader.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    /// A page answering `status` with `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError {
            status,
            message: message.into(),
        }
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "Store failed while rendering a console page.");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store failed; nothing was changed, try again",
        )
    }
}

impl From<crate::api::ApiError> for PageError {
    fn from(e: crate::api::ApiError) -> Self {
        Self::new(e.status(), e.message())
    }
}

impl From<tokio::task::JoinError> for PageError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "Work for a console page failed.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this page's work failed; nothing was changed",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let context = minijinja::context! {
            status => self.status.as_u16(),
            reason => self.status.canonical_reason().unwrap_or("Error"),
            message => self.message,
        };
        let html = render("error.html", context).unwrap_or_else(|_| {
            // Never echo the message unescaped: the template is the escaper.
            format!(
                "<!doctype html><title>{}</title><p>{}</p>",
                self.status.as_u16(),
                self.status
            )
        });
        (self.status, Html(html)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for name in TEMPLATES
            .templates()
            .map(|(name, _)| name.to_owned())
            .collect::<Vec<_>>()
        {
            assert!(TEMPLATES.get_template(&name).is_ok(), "{name}");
        }
        assert_eq!(TEMPLATES.templates().count(), 11);
    }

    #[test]
    fn text_users_control_is_escaped() {
        let error = PageError::not_found("no record lead/<script>alert(1)</script>");
        let html = render(
            "error.html",
            minijinja::context! { status => 404, reason => "Not Found", message => error.message },
        )
        .unwrap();
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>alert"));
    }

    #[test]
    fn figures_read_as_people_say_them() {
        assert_eq!(hours(Some(36.0)), "36.0 h");
        assert_eq!(hours(Some(72.0)), "3.0 d");
        assert_eq!(hours(Some(0.25)), "15 min");
        assert_eq!(hours(Some(0.001)), "< 1 min");
        assert_eq!(hours(None), "–");
        assert_eq!(percent(Some(0.423)), "42%");
        assert_eq!(amount(Some(1_234_567.8)), "1,234,568");
        assert_eq!(amount(Some(950.0)), "950");
        assert_eq!(amount(Some(-12_000.0)), "-12,000");
        assert_eq!(amount(None), "–");
        assert_eq!(
            when(Some("2026-12-05T15:21:09.5Z".into())),
            "2026-12-05 15:21 UTC"
        );
        assert_eq!(when(Some("nonsense".into())), "–");
    }
}
