//! The OpenAPI document served at `/openapi.json`, generated from the handlers' annotations.

use utoipa::OpenApi;

use crate::{
    domain::signup::FieldError,
    friends::{FriendSuggestion, SuggestionsPage},
    me::Profile,
    problem::Problem,
    signups::{SignupAccepted, SignupRequest},
    verifications::{ConfirmRequest, ResendAccepted, ResendRequest, Verified},
};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "signup-api", description = "User signup. Errors are RFC 9457 application/problem+json."),
    paths(
        crate::signups::create,
        crate::verifications::confirm_page,
        crate::verifications::confirm,
        crate::verifications::resend,
        crate::me::get,
        crate::friends::suggestions,
    ),
    components(schemas(
        SignupRequest,
        SignupAccepted,
        Problem,
        FieldError,
        ConfirmRequest,
        Verified,
        ResendRequest,
        ResendAccepted,
        Profile,
        SuggestionsPage,
        FriendSuggestion,
    )),
    modifiers(&BasicAuth),
    tags(
        (name = "signups", description = "Creating accounts"),
        (name = "email verification", description = "Proving the account's mailbox"),
        (name = "account", description = "The signed-in account"),
    )
)]
pub(crate) struct ApiDoc;

/// Declares the `basic` security scheme (email and password) that `/v1/me` uses.
struct BasicAuth;

impl utoipa::Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
