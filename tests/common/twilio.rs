//! A server on loopback that speaks the part of Twilio's API dealflow uses:
//! `POST /2010-04-01/Accounts/{sid}/Messages.json` (form-encoded, basic
//! auth) answered `201` with a `sid`, Twilio's `400` error shapes, and
//! signed status callbacks and inbound texts posted back to the daemon.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "twilio-auth-token-for-tests";

/// One text as the provider accepted it.
#[derive(Debug, Clone)]
pub struct Text {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub status_callback: Option<String>,
}

#[derive(Default)]
struct Inner {
    texts: Vec<Text>,
    requests: usize,
    fail_first: usize,
    unsubscribed: BTreeSet<String>,
    delay: Option<Duration>,
}

/// The provider; `url` goes into `settings.sms.url`.
#[derive(Clone)]
pub struct Twilio {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Twilio {
    /// Starts it; the first `fail_first` sends are answered 500.
    pub async fn start(fail_first: usize) -> Twilio {
        let inner = Arc::new(Mutex::new(Inner {
            fail_first,
            ..Inner::default()
        }));
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                axum::routing::post(create_message),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Twilio { url, inner }
    }

    /// Texts accepted so far.
    pub fn texts(&self) -> Vec<Text> {
        self.inner.lock().unwrap().texts.clone()
    }

    /// Send requests received, accepted or not.
    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    /// Answers sends to `number` with Twilio's 21610 (the number texted STOP).
    pub fn unsubscribe(&self, number: &str) {
        self.inner
            .lock()
            .unwrap()
            .unsubscribed
            .insert(number.into());
    }

    /// Holds every answer this long (texts in flight).
    pub fn delay(&self, by: Duration) {
        self.inner.lock().unwrap().delay = Some(by);
    }

    /// Posts a signed status callback for `text`, as Twilio does.
    pub async fn callback(
        &self,
        text: &Text,
        status: &str,
        error_code: Option<&str>,
    ) -> StatusCode {
        let url = text
            .status_callback
            .clone()
            .expect("the text asked for receipts");
        let mut params = vec![
            ("MessageSid", text.sid.clone()),
            ("MessageStatus", status.to_owned()),
            ("SmsStatus", status.to_owned()),
            ("To", text.to.clone()),
            ("From", text.from.clone()),
            ("AccountSid", ACCOUNT.to_owned()),
        ];
        if let Some(code) = error_code {
            params.push(("ErrorCode", code.to_owned()));
        }
        post_signed(&url, &params, TOKEN).await
    }
}

/// Posts a text from `from` to the daemon's `/hooks/sms`, signed with
/// `token` (a wrong token forges it).
pub async fn text_in(daemon: &str, sid: &str, from: &str, body: &str, token: &str) -> StatusCode {
    let params = vec![
        ("MessageSid", sid.to_owned()),
        ("SmsSid", sid.to_owned()),
        ("AccountSid", ACCOUNT.to_owned()),
        ("From", from.to_owned()),
        ("To", "+15550001111".to_owned()),
        ("Body", body.to_owned()),
        ("NumMedia", "0".to_owned()),
        ("SmsStatus", "received".to_owned()),
    ];
    post_signed(&format!("{daemon}/hooks/sms"), &params, token).await
}

async fn post_signed(url: &str, params: &[(&str, String)], token: &str) -> StatusCode {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let signature = dealflow::signature::twilio_sign(token, url, &owned);
    reqwest::Client::new()
        .post(url)
        .header("x-twilio-signature", signature)
        .form(&owned)
        .send()
        .await
        .expect("post to the daemon")
        .status()
}

async fn create_message(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{TOKEN}"))
    );
    let authorized = account == ACCOUNT
        && headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let delay = {
        let mut inner = inner.lock().unwrap();
        inner.requests += 1;
        if inner.requests <= inner.fail_first {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                20500,
                "Internal Server Error",
            );
        }
        inner.delay
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let (Some(to), Some(from), Some(text)) = (get("To"), get("From"), get("Body")) else {
        return error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    };
    let mut inner = inner.lock().unwrap();
    if inner.unsubscribed.contains(&to) {
        return error(
            StatusCode::BAD_REQUEST,
            21610,
            "Attempt to send to unsubscribed recipient",
        );
    }
    let sid = format!("SM{:032x}", inner.texts.len() + 1);
    inner.texts.push(Text {
        sid: sid.clone(),
        to: to.clone(),
        from,
        body: text,
        status_callback: get("StatusCallback"),
    });
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "sid": sid, "status": "queued", "to": to })),
    )
        .into_response()
}

fn error(status: StatusCode, code: u32, message: &str) -> axum::response::Response {
    (
        status,
        axum::Json(
            serde_json::json!({ "code": code, "message": message, "status": status.as_u16() }),
        ),
    )
        .into_response()
}
