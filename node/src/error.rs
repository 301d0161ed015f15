//! Errors as HTTP answers: JSON `{"code","message"}` with the status of
//! their protocol code, `Retry-After` when rate limited.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_actors::ChatError;
use chat_protocol::ErrorCode;
use serde_json::json;

use crate::auth::AuthError;

/// An error answered over HTTP.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after_ms: Option<u64>,
    /// Numbers a client acts on without parsing `message` (a limit, what is
    /// used of it), merged into the body.
    details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl HttpError {
    /// An error of `code`, with the status that code maps to.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HttpError {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            retry_after_ms: None,
            details: None,
        }
    }

    /// The same error with `key: value` in its body.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value.into());
        self
    }
}

impl From<ChatError> for HttpError {
    fn from(e: ChatError) -> Self {
        let mut h = HttpError::new(e.code(), e.to_string());
        if let ChatError::RateLimited { retry_after_ms } = e {
            h.retry_after_ms = Some(retry_after_ms);
        }
        h
    }
}

impl From<AuthError> for HttpError {
    fn from(e: AuthError) -> Self {
        HttpError {
            status: StatusCode::from_u16(e.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: e.code(),
            message: e.to_string(),
            retry_after_ms: e.retry_after_ms(),
            details: None,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        for (key, value) in self.details.into_iter().flatten() {
            body[key] = value;
        }
        let mut resp = match self.retry_after_ms {
            Some(ms) => {
                body["retry_after_ms"] = json!(ms);
                let secs = ms.div_ceil(1000).max(1);
                let mut r = (self.status, Json(body)).into_response();
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            None => (self.status, Json(body)).into_response(),
        };
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<chat_storage::StoreError> for HttpError {
    fn from(e: chat_storage::StoreError) -> Self {
        ChatError::from(e).into()
    }
}
