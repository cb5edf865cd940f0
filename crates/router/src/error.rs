//! OpenAI-style error responses: `{"error": {"message", "type", "code"}}`.
//!
//! Owns the mapping from the router's failure kinds to HTTP statuses: bad
//! client input → 400 `invalid_request_error`; a scheduler rejection (SLO or
//! admission) → 503 `overloaded_error`; no routable instance → 503
//! `service_unavailable_error`; a scheduling-policy bug → 500
//! `internal_error`; an unreachable or misbehaving backend → 502
//! `backend_error`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error the router answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI error `type`.
    pub kind: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// 400: the request cannot be parsed or lacks a prompt.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 503: rejected by the scheduler to protect the SLOs.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded_error", message)
    }

    /// 503: no healthy instance to route to.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable_error",
            message,
        )
    }

    /// 500: the router itself failed (a scheduling-policy bug).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// 502: a backend could not be reached or answered nonsense.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "backend_error", message)
    }

    /// 413: the body is over the size limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            message,
        )
    }

    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "code": self.status.as_u16()}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let e = ApiError::overloaded("rejected: ttft-slo");
        assert_eq!(e.status.as_u16(), 503);
        let b = e.body();
        assert_eq!(b["error"]["type"], "overloaded_error");
        assert_eq!(b["error"]["code"], 503);
        assert_eq!(b["error"]["message"], "rejected: ttft-slo");
    }
}
