//! The OpenAPI document served at `/openapi.json`: generated from the handlers' annotations, then given every
//! constraint the server enforces on input ([`constrained`]), the configured limits included, so a client generated
//! from it is right the first time. A property-based checker (schemathesis, `e2e::contracts`) holds the server to it.

use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::domain::{password::PRESENTED_MAX_CHARS, signup::SignupLimits};

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
        crate::leave::delete,
        crate::export::get,
        crate::change_password::put,
        crate::resets::request_page,
        crate::resets::request,
        crate::resets::confirm_page,
        crate::resets::confirm,
        crate::friends::suggestions,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "signups", description = "Creating accounts"),
        (name = "email verification", description = "Proving the account's mailbox"),
        (name = "sessions", description = "Signing in and out"),
        (name = "password reset", description = "Choosing a new password through a mailed link"),
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

/// The longest email address (RFC 5321's path limit, less the angle brackets).
pub(crate) const EMAIL_MAX_LENGTH: u64 = 254;
/// A verification token: 32 random bytes, base64url without padding.
const TOKEN_PATTERN: &str = "^[A-Za-z0-9_-]{43}$";
/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// The document with every input constraint of the server: no unknown members in any request body, and each
/// field's length, pattern or count as the handlers check it (`limits` as configured).
pub(crate) fn constrained(limits: &SignupLimits) -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    constrain_bodies(&mut document["components"]["schemas"], limits);
    constrain_parameters(&mut document["paths"]);
    document
}

/// Every request body: no unknown members, and each field as its handler checks it.
fn constrain_bodies(schemas: &mut Value, limits: &SignupLimits) {
    let email = json!({ "type": "string", "format": "email", "minLength": 3, "maxLength": EMAIL_MAX_LENGTH });
    let token = json!({ "type": "string", "pattern": TOKEN_PATTERN });
    let presented = json!({ "minLength": 1, "maxLength": PRESENTED_MAX_CHARS });
    let new_password = json!({ "minLength": limits.password.min_chars, "maxLength": limits.password.max_chars });
    let locale = json!({ "minLength": 1, "maxLength": 35, "pattern": "^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$" });
    let fields = [
        ("SignupRequest", "email", email.clone()),
        ("SignupRequest", "password", new_password.clone()),
        ("SignupRequest", "display_name", json!({ "minLength": 1, "maxLength": limits.display_name_max_chars })),
        ("SignupRequest", "contacts", json!({ "maxItems": limits.max_contacts, "items": email.clone() })),
        ("SignupRequest", "locale", locale),
        ("SignInRequest", "email", email.clone()),
        ("SignInRequest", "password", presented.clone()),
        ("ResendRequest", "email", email.clone()),
        ("ConfirmRequest", "token", token.clone()),
        ("ConfirmRequest", "password", presented.clone()),
        ("ProfileChange", "discoverable", json!({})),
        ("LeaveRequest", "password", presented.clone()),
        ("PasswordChange", "current_password", presented),
        ("PasswordChange", "new_password", new_password.clone()),
        ("ResetRequest", "email", email),
        ("ResetConfirm", "token", token),
        ("ResetConfirm", "new_password", new_password),
    ];
    for (schema, field, constraint) in fields {
        schemas[schema]["additionalProperties"] = false.into();
        merge(&mut schemas[schema]["properties"][field], constraint);
    }
}

/// Every parameter: the links' tokens required and shaped, the `Idempotency-Key`, the page size.
fn constrain_parameters(paths: &mut Value) {
    let token = json!({ "type": "string", "pattern": TOKEN_PATTERN });
    for link in ["/v1/email-verifications/confirm", "/v1/password-resets/confirm"] {
        for parameter in parameters(&mut paths[link]["get"]) {
            parameter["required"] = true.into();
            merge(&mut parameter["schema"], token.clone());
        }
    }
    for parameter in parameters(&mut paths["/v1/signups"]["post"]) {
        merge(&mut parameter["schema"], json!({ "pattern": IDEMPOTENCY_KEY_PATTERN }));
    }
    for parameter in parameters(&mut paths["/v1/me/friend-suggestions"]["get"]) {
        if parameter["name"] == "limit" {
            merge(&mut parameter["schema"], json!({ "minimum": 1, "maximum": crate::friends::MAX_LIMIT }));
        }
    }
}

/// The parameters of one operation.
fn parameters(operation: &mut Value) -> impl Iterator<Item = &mut Value> {
    operation["parameters"].as_array_mut().into_iter().flatten()
}

/// Adds `extra`'s members to the object `into`.
fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}
