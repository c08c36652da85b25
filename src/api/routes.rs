//! The route table: which handler answers which path, behind which layers.
//! Handlers live with their resource (`events`, `records`, `tasks`, ...).

use super::App;
use crate::store::Store;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{delete, get, post};
use std::sync::Arc;

/// All routes of the API.
pub fn router<S: Store>(app: Arc<App<S>>) -> Router {
    // Under /v1 by their full paths, not a nested router: nesting routes
    // each request twice and rewrites its URI, on every event.
    let v1 = Router::new()
        .route("/v1/events", post(super::events::post_events::<S>))
        .route(
            "/v1/records/{kind}/{id}",
            get(super::records::get_record::<S>),
        )
        .route(
            "/v1/records/{kind}/{id}/stage",
            post(super::records::post_stage::<S>),
        )
        .route(
            "/v1/records/{kind}/{id}/ledger",
            get(super::records::get_ledger::<S>),
        )
        .route("/v1/tasks", get(super::tasks::get_tasks::<S>))
        .route(
            "/v1/tasks/{id}/complete",
            post(super::tasks::complete_task::<S>),
        )
        .route("/v1/runs", get(super::runs::get_runs::<S>))
        .route("/v1/status", get(super::status::get_status::<S>))
        .route("/v1/backup", get(super::backup::get_backup::<S>))
        .route("/v1/reload", post(super::status::post_reload::<S>))
        .route("/v1/plan", post(super::plan::post_plan::<S>))
        .route("/v1/reports/{name}", get(super::reports::get_report::<S>))
        .route("/v1/outbox", get(super::outbox::get_outbox::<S>))
        .route(
            "/v1/outbox/{id}/{action}",
            post(super::outbox::post_decision::<S>),
        )
        .route("/v1/inbound/email", post(super::mail::post_inbound::<S>))
        .route(
            "/v1/sources/{name}/rejected",
            get(super::sources::get_rejected::<S>),
        )
        .route(
            "/v1/sources/{name}/rejected/{id}/replay",
            post(super::sources::replay::<S>),
        )
        .route("/v1/suppressions", get(super::suppressions::list::<S>))
        .route(
            "/v1/suppressions/{address}",
            delete(super::suppressions::remove::<S>),
        )
        .layer(middleware::from_fn_with_state(
            app.clone(),
            super::auth::require_token::<S>,
        ));
    Router::new()
        .merge(v1)
        .route(
            "/u/{token}",
            get(super::mail::unsubscribe_page::<S>).post(super::mail::unsubscribe::<S>),
        )
        // Verified by each source's own scheme, not the bearer token.
        .route("/hooks/sms", post(super::sms::post_hook::<S>))
        .route("/hooks/{name}", post(super::sources::post_hook::<S>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(super::status::get_metrics::<S>))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(app.max_body))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            app.read_timeout,
        ))
        .layer(middleware::map_response(super::error::json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            super::error::panicked,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &Request| {
                tracing::debug_span!("request", method = %request.method(), uri = %loggable_uri(request.uri()))
            }),
        )
        .with_state(app)
}

/// A request's path and query as logs may show them: an unsubscribe token
/// (`/u/TOKEN`) and a `?token=` query value would let anyone reading the
/// logs unsubscribe people or call the API.
fn loggable_uri(uri: &axum::http::Uri) -> String {
    let path = match uri.path().strip_prefix("/u/") {
        Some(_) => "/u/(token)",
        None => uri.path(),
    };
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("token=") {
                "token=(hidden)"
            } else {
                pair
            }
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::loggable_uri;

    #[test]
    fn tokens_never_reach_the_log() {
        let shown = |u: &str| loggable_uri(&u.parse().unwrap());
        assert_eq!(shown("/u/abc.def"), "/u/(token)");
        assert_eq!(
            shown("/v1/inbound/email?token=s3cret&x=1"),
            "/v1/inbound/email?token=(hidden)&x=1"
        );
        assert_eq!(shown("/v1/runs?record=lead/L1"), "/v1/runs?record=lead/L1");
    }
}
