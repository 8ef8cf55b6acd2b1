//! The OpenAPI document served at `/openapi.json`, generated from the handlers' annotations.

use utoipa::OpenApi;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "signup-api", description = "User signup. Errors are RFC 9457 application/problem+json."),
    paths(
        crate::signups::create,
        crate::verifications::confirm_page,
        crate::verifications::confirm,
        crate::verifications::resend,
        crate::sessions::create,
        crate::sessions::delete_current,
        crate::me::get,
        crate::me::patch,
        crate::friends::suggestions,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "signups", description = "Creating accounts"),
        (name = "email verification", description = "Proving the account's mailbox"),
        (name = "sessions", description = "Signing in and out"),
        (name = "account", description = "The signed-in account"),
    )
)]
pub(crate) struct ApiDoc;

/// Declares the `bearer` security scheme (a session token from `POST /v1/sessions`).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = Http::builder()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("A session token from POST /v1/sessions"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
