//! The console (SPEC §8): server-rendered pages for managers, reps and
//! admins, served by the daemon itself on `/`. Templates and the one small
//! script are compiled into the binary; every page reads without
//! JavaScript, and with it the live pages refresh when the store commits
//! (server-sent events on `/live`).
//!
//! Owns: HTML pages, console sessions and CSRF, the cached figures pages
//! show. Never: changes state except the way the API does (events through
//! the appender, stage moves through the worker, one durable commit), nor
//! shows a secret.

mod figures;
mod live;
mod pages;
mod render;
mod session;

pub use figures::Figures;
pub use session::SessionKeys;

use crate::api::App;
use crate::store::Store;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use render::PageError;
use session::Session;
use std::sync::Arc;

/// What console pages reach.
pub struct Console<S: Store> {
    /// The daemon's shared handles.
    pub app: Arc<App<S>>,
    /// Signs sessions and CSRF tokens.
    pub sessions: SessionKeys,
    /// Report figures, rebuilt when the store has changed.
    pub figures: Figures,
    /// Ends live streams when the daemon stops (they would hold shutdown).
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl<S: Store> Console<S> {
    /// The console of a daemon.
    pub fn new(app: Arc<App<S>>, shutdown: tokio_util::sync::CancellationToken) -> Arc<Self> {
        let secure = app
            .workflows
            .load()
            .settings
            .public_base()
            .starts_with("https://");
        let sessions = SessionKeys::new(app.token.as_deref(), secure);
        let console = Arc::new(Console {
            app,
            sessions,
            figures: Figures::default(),
            shutdown,
        });
        console.warm_up();
        console
    }

    /// Builds the pipeline page's default figures at start, so the first
    /// manager to open it does not wait for a scan of the stage history
    /// (a second at a million visits).
    fn warm_up(&self) {
        let app = &self.app;
        if let Ok(since) = pages::period_start(pages::DEFAULT_PERIOD, app.clock.now()) {
            self.figures.warm_pipeline(
                app.store.clone(),
                app.workflows.load_full(),
                pages::DEFAULT_PERIOD,
                since,
            );
        }
    }
}

/// The console's routes, to merge beside the API's.
pub fn router<S: Store>(console: Arc<Console<S>>) -> Router {
    let pages = Router::new()
        .route("/", get(pages::pipeline::show::<S>))
        .route(
            "/stages/{pipeline}/{stage}",
            get(pages::pipeline::stage::<S>),
        )
        .route("/records/{kind}/{id}", get(pages::record::show::<S>))
        .route(
            "/records/{kind}/{id}/stage",
            post(pages::record::move_stage::<S>),
        )
        .route("/tasks", get(pages::tasks::show::<S>))
        .route("/tasks/{id}/complete", post(pages::tasks::complete::<S>))
        .route("/sequences", get(pages::sequences::show::<S>))
        .route("/outbox", get(pages::outbox::show::<S>))
        .route("/outbox/{id}/{action}", post(pages::outbox::act::<S>))
        .route("/sources", get(pages::sources::show::<S>))
        .route(
            "/sources/{name}/rejected/{id}/replay",
            post(pages::sources::replay::<S>),
        )
        .route("/workflows", get(pages::workflows::show::<S>))
        .route("/workflows/reload", post(pages::workflows::reload::<S>))
        .route("/live", get(live::stream::<S>))
        .route("/signout", post(pages::signin::sign_out::<S>))
        .layer(middleware::from_fn_with_state(
            console.clone(),
            require_session::<S>,
        ));
    Router::new()
        .merge(pages)
        .route(
            "/signin",
            get(pages::signin::form::<S>).post(pages::signin::sign_in::<S>),
        )
        .route("/assets/console.css", get(assets::css))
        .route("/assets/console.js", get(assets::js))
        .layer(middleware::from_fn_with_state(
            console.clone(),
            require_csrf::<S>,
        ))
        .with_state(console)
}

/// Largest form a console page posts.
const FORM_LIMIT: usize = 64 * 1024;

/// Every form posted to the console, sign-in included, must carry the CSRF
/// token of the session its cookie proves. Checked here once, before any
/// handler, so no handler can forget it; a refusal changes nothing.
async fn require_csrf<S: Store>(
    State(console): State<Arc<Console<S>>>,
    request: Request,
    next: Next,
) -> Response {
    use axum::http::Method;
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let Some(session) = console
        .sessions
        .check(request.headers(), console.app.clock.now())
    else {
        return PageError::new(
            StatusCode::FORBIDDEN,
            "sign in first (the console needs its cookie)",
        )
        .into_response();
    };
    let (parts, body) = request.into_parts();
    let Ok(form) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return PageError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the form is larger than the console takes",
        )
        .into_response();
    };
    let given = form_urlencoded::parse(&form)
        .find(|(name, _)| name == "csrf")
        .map(|(_, token)| token.into_owned())
        .unwrap_or_default();
    if !console.sessions.csrf_matches(&session, &given) {
        return PageError::new(
            StatusCode::FORBIDDEN,
            "this form was not sent from a console page of this session (its CSRF token is missing or old); reload the page and try again",
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(form)))
        .await
}

/// Lets a request through with its [`Session`] when it has a signed-in one
/// (or when no token is set: then a guest session is made on the spot);
/// otherwise sends pages to the sign-in form and refuses anything else.
async fn require_session<S: Store>(
    State(console): State<Arc<Console<S>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let now = console.app.clock.now();
    let session = console.sessions.check(request.headers(), now);
    if let Some(session) = session.filter(|s| s.signed_in) {
        request.extensions_mut().insert(session);
        return next.run(request).await;
    }
    if console.sessions.token_required {
        if request.method() != axum::http::Method::GET {
            return PageError::new(StatusCode::FORBIDDEN, "sign in first").into_response();
        }
        let here = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
        return Redirect::to(&format!("/signin?next={next}")).into_response();
    }
    let (cookie, session) = console.sessions.issue(false, now);
    request.extensions_mut().insert(session);
    let mut response = next.run(request).await;
    console.sessions.attach(&mut response, &cookie);
    response
}

/// What every page's layout shows: which tab is open, the form token, and
/// whether signing out makes sense.
fn layout<S: Store>(console: &Console<S>, session: &Session, tab: &str) -> minijinja::Value {
    minijinja::context! {
        tab => tab,
        csrf => console.sessions.csrf(session),
        can_sign_out => console.sessions.token_required,
    }
}

/// The stylesheet and the script, compiled in.
mod assets {
    use axum::http::header;
    use axum::response::IntoResponse;

    const CACHE: &str = "public, max-age=3600";

    pub async fn css() -> impl IntoResponse {
        (
            [
                (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                (header::CACHE_CONTROL, CACHE),
            ],
            include_str!("assets/console.css"),
        )
    }

    pub async fn js() -> impl IntoResponse {
        (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, CACHE),
            ],
            include_str!("assets/console.js"),
        )
    }
}
