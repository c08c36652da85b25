//! Error answers: a status, a stable code and a sentence that says what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Adds structured details (bad batch items, unmet requirements).
    pub fn with(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500: blocking work for the request panicked or was cancelled.
    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The sentence that says what went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn task_failed(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "Work for a request failed.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request's work failed; nothing was changed",
        )
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        if let crate::store::StoreError::Stopped(_) = e {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            );
        }
        tracing::error!(error = %e, "Store failed while answering a request.");
        if e.is_disk_full() {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "disk_full",
                "the disk of the data folder is full: nothing was changed. The daemon reopens its store by itself once it can write there again; try again then",
            );
        }
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store failed; nothing was changed, try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let (Some(Value::Object(details)), Some(map)) = (self.details, error.as_object_mut()) {
            map.extend(details);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

/// Gives every error answer the documented shape (docs/API.md): axum's own
/// rejections (an unknown route, a body over the limit, a query or path
/// that does not parse) are plain text or empty; they become
/// `{"error": {"code", "message"}}` with their text as the message.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|t| {
            // Console pages answer errors as pages.
            t.as_bytes().starts_with(b"application/json") || t.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, fallback) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route; see docs/API.md"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the body is larger than --max-body"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request was not received in time"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send application/json"),
        s if s.is_server_error() => (
            "internal_error",
            "the request failed inside dealflow; it is logged",
        ),
        _ => ("invalid_request", "the request is not valid"),
    };
    let message = if text.is_empty() {
        fallback.to_owned()
    } else {
        text
    };
    ApiError::new(status, code, message).into_response()
}

/// The answer when a handler panicked (a bug): the daemon stays up, the
/// request gets a 500 in the usual shape, and the log says what happened.
pub fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(
        panic = what,
        "A request handler panicked; this is a dealflow bug."
    );
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the request failed inside dealflow; nothing was changed, and the log has the details",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_a_500_in_the_usual_shape() {
        let response = panicked(Box::new("index out of bounds".to_owned()));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal_error");
    }

    #[tokio::test]
    async fn plain_text_refusals_get_the_json_shape() {
        let text = (
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string",
        )
            .into_response();
        let shaped = json_errors(text).await;
        let body = axum::body::to_bytes(shaped.into_body(), 4096)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_request");
        assert_eq!(
            body["error"]["message"],
            "Failed to deserialize query string"
        );
    }
}
