//! The one place every HTTP route of signup-api is listed, with the layers that wrap them.

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, post},
};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{problem::Problem, startup::AppState};

/// Every route: the versioned API under `/v1`, and `/livez`, `/readyz`, `/metrics` for the platform.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/signups", post(crate::signups::create))
        .route("/v1/email-verifications", post(crate::verifications::resend))
        .route(
            "/v1/email-verifications/confirm",
            get(crate::verifications::confirm_page).post(crate::verifications::confirm),
        )
        .route("/v1/me", get(crate::me::get))
        .route("/v1/me/friend-suggestions", get(crate::friends::suggestions))
        .route("/openapi.json", get(crate::openapi::serve))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state.clone())
        .layer(platform::http::trace_layer());
    Router::new()
        .merge(platform::http::operational_router(state.readiness.clone()))
        .merge(api)
        .layer(middleware::from_fn(platform::metrics::track_http))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            axum::response::IntoResponse::into_response(Problem::internal())
        }))
}

async fn not_found() -> Problem {
    Problem::not_found()
}
