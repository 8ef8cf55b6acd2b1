//! The one place every HTTP route of signup-api is listed, with the layers that wrap them. The API and the
//! operational endpoints are separate routers, served on separate ports (`PORT`, `METRICS_PORT`), so probes and
//! scrapes never reach the public port and the public never reaches them.

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderValue, header},
    middleware,
    routing::{MethodRouter, delete, get, post, put},
};
use tower_http::{catch_panic::CatchPanicLayer, set_header::SetResponseHeaderLayer, timeout::RequestBodyDeadlineLayer};

use crate::{
    problem::Problem,
    ratelimit::{self, Class},
    startup::AppState,
};

/// The versioned API under `/v1`, `/openapi.json` and its browsable form at `/docs` (Swagger UI, served from the
/// binary), and the pages of the problem types at `/problems/{slug}`. Every `/v1` route counts against its
/// client's budget for its kind of request; a body must arrive within `REQUEST_BODY_TIMEOUT_MS` of the request's head
/// (a trickled one holds a connection and a task until then). Every error is a problem document carrying its `instance`, 404 and
/// 405 included; a panic is a 500 problem, logged in the request's span. Every answer says `nosniff`: a browser
/// takes it as the type it is labelled (JSON is never run as a script or shown as a page). A trace is continued
/// only from a proxy of ours (a client's own trace context is a link).
pub fn router(state: AppState) -> Router {
    let limits = state.rate_limits.clone();
    let docs = crate::docs::router(crate::openapi::constrained(&state.limits));
    let api = v1(&state)
        .route("/problems/{slug}", get(crate::problem::page))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(RequestBodyDeadlineLayer::new(state.request_body_timeout))
        .with_state(state)
        .merge(docs);
    api.layer(middleware::from_fn(crate::cross_site::refuse))
        .layer(middleware::from_fn(crate::error::log_errors))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            axum::response::IntoResponse::into_response(Problem::internal())
        }))
        .layer(middleware::from_fn(crate::problem::with_instance))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(platform::http::trace_layer())
        .layer(middleware::from_fn_with_state(limits, ratelimit::trace_context))
        .layer(middleware::from_fn(platform::metrics::track_http))
}

/// The versioned API: every route counts against its client's budget for its kind of request; a signup refused
/// for capacity (password is full) is refused before it counts.
fn v1(state: &AppState) -> Router<AppState> {
    let limits = &state.rate_limits;
    let limited = |class: Class, route: MethodRouter<AppState>| {
        route.route_layer(middleware::from_fn_with_state((limits.clone(), class), ratelimit::limit))
    };
    let signups = limited(Class::Signups, post(crate::signups::create))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::signups::room));
    Router::new()
        .route("/v1/signups", signups)
        .route("/v1/email-verifications", limited(Class::Resends, post(crate::verifications::resend)))
        .route(
            "/v1/email-verifications/confirm",
            limited(Class::Confirms, get(crate::verifications::confirm_page).post(crate::verifications::confirm)),
        )
        .route(
            "/v1/password-resets",
            limited(Class::Resends, get(crate::resets::request_page).post(crate::resets::request)),
        )
        .route(
            "/v1/password-resets/confirm",
            limited(Class::Confirms, get(crate::resets::confirm_page).post(crate::resets::confirm)),
        )
        .route("/v1/sessions", limited(Class::Sessions, post(crate::sessions::create)))
        // Signing out costs a lookup, no hash, and must work when the client's sign-in budget is spent.
        .route("/v1/sessions/current", limited(Class::Reads, delete(crate::sessions::delete_current)))
        .route("/v1/me", limited(Class::Reads, get(crate::me::get).patch(crate::me::patch)))
        .route("/v1/me", limited(Class::Sessions, delete(crate::leave::delete)))
        .route("/v1/me/friend-suggestions", limited(Class::Reads, get(crate::friends::suggestions)))
        .route("/v1/me/export", limited(Class::Reads, get(crate::export::get)))
        .route("/v1/me/password", limited(Class::Sessions, put(crate::change_password::put)))
}

async fn not_found() -> Problem {
    Problem::not_found()
}

async fn method_not_allowed() -> Problem {
    Problem::method_not_allowed()
}

#[cfg(test)]
mod tests;
