//! RFC 9457 problem details: the one shape of every HTTP error signup-api returns. Building a response has no
//! side effects; logging happens where the error is turned into a response.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::domain::signup::FieldError;

/// `application/problem+json`, as RFC 9457 names it.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// One problem: a stable type URI, a short title, the status, and a human-readable detail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// Per-field problems of a 422 (an RFC 9457 extension member).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
    #[serde(skip)]
    retry_after_secs: Option<u64>,
}

impl Problem {
    /// A problem of the given status; `slug` becomes the type URI `/problems/{slug}`.
    pub fn new(status: StatusCode, slug: &str, title: &'static str) -> Self {
        Self {
            kind: format!("/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// Adds a detail for people. It must hold no secret and no internal detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds the per-field problems of a validation failure.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// Adds `Retry-After`, for 503s that will pass.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 404 for a route that does not exist.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not Found").with_detail("no such resource")
    }

    /// 500 for what we did not expect; the detail never says what happened inside.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal Server Error")
            .with_detail("an unexpected error occurred; it has been logged")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_secs;
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
