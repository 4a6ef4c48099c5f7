//! Every HTTP error the server returns, in OpenAI's shape
//! `{"error": {"message", "type", "param", "code"}}`, and the one table that maps each kind to
//! its status code.
//!
//! Owns: `ApiError`, its `IntoResponse`, and the mapping of `EngineError` kinds into it.
//! Must not: decide when an error happens.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::EngineError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// A field is missing, has the wrong type or is out of range.
    Invalid {
        param: Option<String>,
    },
    MalformedJson,
    WrongContentType,
    ContextLength,
    Unauthorized,
    ModelNotFound,
    RouteNotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    BodyTooLarge,
    /// The body did not arrive within the body timeout.
    BodyTimeout,
    /// The waiting queue is full; retry after this many seconds.
    Overloaded {
        retry_after: u64,
    },
    NotReady,
    ShuttingDown,
    /// The engine thread died; nothing local can be served.
    EngineStopped,
    Internal,
    /// Every route failed: the remote answered badly or not at all.
    RemoteFailed,
    /// The remote's circuit breaker is open.
    RemoteUnavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ApiErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ApiErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    /// The request field a 400 names, if any.
    pub fn param(&self) -> Option<&str> {
        match &self.kind {
            ApiErrorKind::Invalid { param } => param.as_deref(),
            _ => None,
        }
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(
            ApiErrorKind::Invalid {
                param: Some(param.to_string()),
            },
            message,
        )
    }

    /// The mapping table: status, OpenAI `type`, `code`.
    pub fn parts(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        use ApiErrorKind::*;
        match &self.kind {
            Invalid { .. } | MalformedJson | WrongContentType => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", None)
            }
            ContextLength => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("context_length_exceeded"),
            ),
            Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                Some("invalid_api_key"),
            ),
            ModelNotFound => (StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found")),
            RouteNotFound => (StatusCode::NOT_FOUND, "invalid_request_error", Some("not_found")),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                Some("method_not_allowed"),
            ),
            BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some("request_too_large"),
            ),
            BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                Some("request_timeout"),
            ),
            Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("queue_full")),
            NotReady | ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", None),
            EngineStopped => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                Some("engine_stopped"),
            ),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
            RemoteFailed => (StatusCode::BAD_GATEWAY, "server_error", Some("upstream_error")),
            RemoteUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                Some("upstream_unavailable"),
            ),
        }
    }

    /// Short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        use ApiErrorKind::*;
        match &self.kind {
            Invalid { .. } | MalformedJson | WrongContentType | ContextLength => "validation",
            Unauthorized => "auth",
            ModelNotFound | RouteNotFound | MethodNotAllowed => "not_found",
            BodyTooLarge => "too_large",
            BodyTimeout => "timeout",
            Overloaded { .. } => "overloaded",
            NotReady | ShuttingDown | EngineStopped => "unavailable",
            Internal => "internal",
            RemoteFailed | RemoteUnavailable => "remote",
        }
    }

    /// The JSON body, also used for errors inside an SSE stream.
    pub fn body(&self) -> serde_json::Value {
        let (_, kind, code) = self.parts();
        let param = match &self.kind {
            ApiErrorKind::Invalid { param } => param.clone(),
            ApiErrorKind::ContextLength => Some("messages".to_string()),
            _ => None,
        };
        json!({"error": {"message": self.message, "type": kind, "param": param, "code": code}})
    }
}

/// Engine errors by kind, never by message: invalid for this model or too large for the KV
/// cache → 400; an executor failure or a request the engine lost → 500; a dead engine → 503.
impl From<&EngineError> for ApiError {
    fn from(e: &EngineError) -> ApiError {
        let kind = match e {
            EngineError::Invalid(_) | EngineError::Capacity { .. } => ApiErrorKind::Invalid { param: None },
            EngineError::Executor(_) | EngineError::Lost => ApiErrorKind::Internal,
            EngineError::Stopped(_) => ApiErrorKind::EngineStopped,
        };
        ApiError::new(kind, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.parts();
        let mut resp = (status, axum::Json(self.body())).into_response();
        if let ApiErrorKind::Overloaded { retry_after } = self.kind {
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
