//! The OpenAPI document served at `/openapi.json`, generated from the handlers' annotations.

use utoipa::OpenApi;

use crate::{
    domain::signup::FieldError,
    problem::Problem,
    signups::{SignupAccepted, SignupRequest},
};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "signup-api", description = "User signup. Errors are RFC 9457 application/problem+json."),
    paths(crate::signups::create),
    components(schemas(SignupRequest, SignupAccepted, Problem, FieldError)),
    tags((name = "signups", description = "Creating accounts"))
)]
pub(crate) struct ApiDoc;

/// `GET /openapi.json`.
pub(crate) async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
