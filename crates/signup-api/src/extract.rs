//! The JSON body extractor of the API: the content type is checked, the size is bounded, the syntax is
//! checked, and each failure is a problem response rather than axum's plain-text default.

use axum::{
    body::Bytes,
    extract::{
        FromRequest, Request,
        rejection::{BytesRejection, FormRejection},
    },
    http::header,
};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A request body that is a JSON object.
#[derive(Debug, Clone)]
pub(crate) struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state).await.map_err(unread)?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(object)) => Ok(Self(object)),
            Ok(_) => Err(ApiError::Malformed("the body must be a JSON object".to_owned())),
            Err(error) => Err(ApiError::Malformed(format!("the body is not valid JSON: {error}"))),
        }
    }
}

/// Why a body could not be read: over `MAX_BODY_BYTES` (413), not here within `REQUEST_BODY_TIMEOUT_MS` (408), or
/// broken off.
fn unread(rejection: BytesRejection) -> ApiError {
    match rejection {
        BytesRejection::FailedToBufferBody(e) if e.body_text().contains("length limit") => ApiError::PayloadTooLarge,
        BytesRejection::FailedToBufferBody(e) if timed_out(&e) => ApiError::RequestTimeout,
        _ => ApiError::Malformed("the body could not be read".to_owned()),
    }
}

/// A form that could not be read as [`unread`] says, or `otherwise` when it was read and does not parse.
pub(crate) fn form_error(rejection: FormRejection, otherwise: ApiError) -> ApiError {
    match rejection {
        FormRejection::BytesRejection(rejection) => unread(rejection),
        _ => otherwise,
    }
}

/// Whether reading the body failed because it did not arrive in time (`REQUEST_BODY_TIMEOUT_MS`).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn is_json(value: Option<&header::HeaderValue>) -> bool {
    let Some(essence) = value.and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()) else {
        return false;
    };
    let essence = essence.trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether the body is an HTML form (`application/x-www-form-urlencoded`): what the confirm and reset pages post.
pub(crate) fn is_form(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
}

/// Whether the client is a browser that wants a page rather than JSON.
pub(crate) fn wants_html(headers: &axum::http::HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"))
}
