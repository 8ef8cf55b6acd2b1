//! The HTTP contract of signup-api, in-process: every request goes through the real router (`oneshot`), with every
//! upstream unreachable, so each answer here is the API's own, decided before any service is asked; an answer that
//! needed one would be a 503. Milliseconds each, and neither Postgres nor RabbitMQ is needed.

use std::net::SocketAddr;

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Request, StatusCode, header},
};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::{settings::Settings, startup::AppState};

const PASSWORD: &str = "correct horse battery staple";

fn router() -> Router {
    let state = AppState::new(&Settings::for_tests()).unwrap_or_else(|e| panic!("state: {e:#}"));
    super::router(state)
}

/// Sends `request` from a client at 192.0.2.1 (the rate limiter keys on the peer) and returns the status, headers
/// and body.
async fn send(mut request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40000))));
    let response = router().oneshot(request).await.unwrap_or_else(|e| match e {});
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.map(|b| b.to_vec()).unwrap_or_default();
    (parts.status, parts.headers, body)
}

fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    let request = Request::post(path).header(header::CONTENT_TYPE, content_type).body(body.into());
    request.unwrap_or_else(|e| panic!("request: {e}"))
}

/// The text of a gzip-compressed body.
fn gunzip(body: &[u8]) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(body), &mut text)
        .unwrap_or_else(|e| panic!("not gzip: {e}"));
    text
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap_or_else(|e| panic!("request: {e}"))
}

/// Asserts a problem document of `status` and type `/problems/{slug}` at `instance`, and returns it.
async fn problem(request: Request<Body>, status: u16, slug: &str) -> Value {
    let path = request.uri().path().to_owned();
    let (actual, headers, body) = send(request).await;
    let document: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{slug}: {e}: {body:?}"));
    assert_eq!(actual.as_u16(), status, "{document}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json", "{slug}");
    assert_eq!(document["type"], format!("/problems/{slug}"), "{document}");
    assert_eq!(document["status"], status, "{document}");
    assert_eq!(document["instance"], path, "{document}");
    assert!(document["title"].is_string() && document["detail"].is_string(), "{document}");
    document
}

fn signup(email: &str, password: &str) -> Value {
    json!({ "email": email, "password": password, "display_name": "Ada" })
}

/// A body that never arrives: a JSON signup, the confirm form and the reset form are each a 408 problem at the body
/// deadline (200 ms in the tests), decided before any service is asked.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_a_408() {
    let never = || Body::from_stream(futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>());
    let form = "application/x-www-form-urlencoded";
    for (path, content_type) in [
        ("/v1/signups", "application/json"),
        ("/v1/email-verifications/confirm", form),
        ("/v1/password-resets/confirm", form),
    ] {
        let document = problem(post(path, content_type, never()), 408, "request-timeout").await;
        assert_eq!(document["instance"], path);
    }
}

#[tokio::test]
async fn every_malformed_signup_is_its_own_problem_decided_before_any_service_is_asked() {
    let json = |body: String| post("/v1/signups", "application/json", body);
    problem(json("{not json".into()), 400, "malformed-request").await;
    problem(json("[1, 2]".into()), 400, "malformed-request").await;
    problem(
        post("/v1/signups", "text/plain", signup("ada@example.com", PASSWORD).to_string()),
        415,
        "unsupported-media-type",
    )
    .await;
    problem(json(format!("{{\"padding\": \"{}\"}}", "x".repeat(4096))), 413, "payload-too-large").await;
    let mut keyed = json(signup("ada@example.com", PASSWORD).to_string());
    keyed.headers_mut().insert("idempotency-key", axum::http::HeaderValue::from_static("has space"));
    problem(keyed, 400, "bad-idempotency-key").await;
}

#[tokio::test]
async fn every_invalid_field_is_reported_at_once_with_its_code() {
    let invalid = [
        (signup("not-an-email", PASSWORD), "email", "invalid_email"),
        (signup("ada@bücher.example", "short"), "password", "password_too_short"),
        (signup("ada@example.com", &"long passphrase ".repeat(9)), "password", "password_too_long"),
        (signup("ada@example.com", "YFDBUFNJH10305070"), "password", "password_common"),
        (signup("ada@example.com", "ada@example.com!"), "password", "password_too_close_to_email"),
        (
            json!({ "email": "ada@example.com", "password": PASSWORD, "display_name": " " }),
            "display_name",
            "display_name_empty",
        ),
        (
            json!({ "email": "ada@example.com", "password": PASSWORD, "display_name": "x".repeat(101) }),
            "display_name",
            "display_name_too_long",
        ),
        (
            json!({ "email": "ada@example.com", "password": PASSWORD, "display_name": "A", "contacts": ["a@x.io", "b@x.io", "c@x.io"] }),
            "contacts",
            "too_many_contacts",
        ),
        (json!({ "password": PASSWORD }), "email", "required"),
        (
            json!({ "email": "ada@example.com", "password": PASSWORD, "display_name": "A", "admin": true }),
            "admin",
            "unknown_field",
        ),
    ];
    for (body, field, code) in invalid {
        let document =
            problem(post("/v1/signups", "application/json", body.to_string()), 422, "validation-failed").await;
        let errors = document["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            errors.iter().any(|e| e["field"] == field && e["code"] == code),
            "{field}/{code} for {body}: {document}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_missing_sessions_are_problems() {
    problem(get("/v1/no-such-thing"), 404, "not-found").await;
    let (status, headers, _) = send(Request::put("/v1/signups").body(Body::empty()).unwrap_or_default()).await;
    assert_eq!(
        (status, headers.get(header::ALLOW).and_then(|v| v.to_str().ok())),
        (StatusCode::METHOD_NOT_ALLOWED, Some("POST"))
    );
    problem(
        Request::delete("/v1/me/friend-suggestions").body(Body::empty()).unwrap_or_default(),
        405,
        "method-not-allowed",
    )
    .await;
    let (_, headers, _) = send(get("/v1/me")).await;
    assert_eq!(headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()), Some(r#"Bearer realm="signup""#));
    // Every answer, JSON and pages alike, is taken as the type it is labelled.
    for path in ["/v1/me", "/openapi.json", "/v1/no-such-thing", "/problems/not-found", "/docs/"] {
        let (_, headers, _) = send(get(path)).await;
        assert_eq!(
            headers.get(header::X_CONTENT_TYPE_OPTIONS).and_then(|v| v.to_str().ok()),
            Some("nosniff"),
            "{path}"
        );
    }
    problem(get("/v1/me"), 401, "unauthorized").await;
    // A query never reaches the instance: it may hold a token.
    let document = problem(get("/v1/no-such-thing?token=secret"), 404, "not-found").await;
    assert!(!document.to_string().contains("secret"), "{document}");
}

#[tokio::test]
async fn a_request_that_needs_an_unreachable_service_is_a_503_with_retry_after() {
    let body = json!({ "email": "ada@example.com", "password": PASSWORD }).to_string();
    let request = post("/v1/sessions", "application/json", body);
    let (status, headers, _) = send(request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
    problem(
        post(
            "/v1/sessions",
            "application/json",
            json!({ "email": "ada@example.com", "password": PASSWORD }).to_string(),
        ),
        503,
        "service-unavailable",
    )
    .await;
}

#[tokio::test]
async fn the_openapi_document_states_the_constraints_and_the_errors() {
    let (status, _, body) = send(get("/openapi.json")).await;
    let document: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(status, StatusCode::OK);
    let responses = &document["paths"]["/v1/signups"]["post"]["responses"];
    for code in ["202", "400", "408", "413", "415", "422", "429", "503"] {
        assert!(responses.get(code).is_some(), "no {code} in {responses}");
    }
    for path in ["/v1/email-verifications", "/v1/email-verifications/confirm", "/v1/sessions", "/v1/me"] {
        assert!(document["paths"][path].is_object(), "{path} missing");
    }
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["SignupRequest"]["additionalProperties"], false);
    // The configured limits, not the defaults: Settings::for_tests allows 2 contacts.
    assert_eq!(schemas["SignupRequest"]["properties"]["contacts"]["maxItems"], 2);
    assert_eq!(schemas["SignupRequest"]["properties"]["password"]["minLength"], 15);
    assert!(schemas["Problem"]["properties"]["instance"].is_object());
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

#[tokio::test]
async fn every_problem_type_has_its_page_and_the_docs_come_from_the_binary() {
    for kind in crate::problem::types::ALL {
        let (status, headers, body) = send(get(&format!("/problems/{}", kind.slug))).await;
        let html = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::OK, "{}", kind.slug);
        assert!(headers[header::CONTENT_TYPE].to_str().unwrap_or_default().starts_with("text/html"));
        assert!(html.contains(kind.title), "{html}");
    }
    problem(get("/problems/no-such-type"), 404, "not-found").await;
    let (status, headers, body) = send(accepting_gzip("/docs/")).await;
    assert_eq!(status, StatusCode::OK);
    // The assets are stored and served gzip-compressed (a third of the binary otherwise).
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    let page = gunzip(&body);
    let references: Vec<&str> =
        page.split(['"', '\'']).filter(|part| part.ends_with(".js") || part.ends_with(".css")).collect();
    assert!(references.contains(&"./swagger-ui-bundle.js"), "{page}");
    for reference in references {
        assert!(!reference.contains("://"), "{reference} is loaded from elsewhere");
        let (status, headers, body) =
            send(accepting_gzip(&format!("/docs/{}", reference.trim_start_matches("./")))).await;
        assert_eq!(status, StatusCode::OK, "{reference}");
        if headers.get(header::CONTENT_ENCODING).is_some() {
            assert!(!gunzip(&body).is_empty(), "{reference}");
        }
    }
    let (_, _, initializer) = send(get("/docs/swagger-initializer.js")).await;
    let initializer = String::from_utf8_lossy(&initializer);
    assert!(
        initializer.contains("\"/openapi.json\"") && initializer.contains("\"validatorUrl\": \"none\""),
        "{initializer}"
    );
}

fn accepting_gzip(path: &str) -> Request<Body> {
    let request = Request::get(path).header(header::ACCEPT_ENCODING, "br, gzip;q=0.8");
    request.body(Body::empty()).unwrap_or_else(|e| panic!("request: {e}"))
}

#[tokio::test]
async fn a_client_that_does_not_accept_gzip_gets_the_docs_as_they_are() {
    // `curl localhost:8080/docs/` sends no Accept-Encoding: it must get the page, not gzip bytes it did not ask for.
    for accept in [None, Some("identity"), Some("gzip;q=0, *"), Some("br")] {
        let mut request = Request::get("/docs/");
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT_ENCODING, accept);
        }
        let (status, headers, body) = send(request.body(Body::empty()).unwrap_or_else(|e| panic!("{e}"))).await;
        assert_eq!(status, StatusCode::OK, "{accept:?}");
        assert!(headers.get(header::CONTENT_ENCODING).is_none(), "{accept:?}: {headers:?}");
        let page = String::from_utf8(body).unwrap_or_else(|e| panic!("{accept:?}: not text: {e}"));
        assert!(page.contains("swagger-ui-bundle.js"), "{accept:?}: {page}");
        assert_eq!(headers[header::VARY], "accept-encoding", "{accept:?}");
    }
    for accept in ["gzip", "GZIP", "deflate, gzip;q=0.5", "*"] {
        let request = Request::get("/docs/swagger-ui.css").header(header::ACCEPT_ENCODING, accept);
        let (status, headers, body) = send(request.body(Body::empty()).unwrap_or_else(|e| panic!("{e}"))).await;
        assert_eq!(status, StatusCode::OK, "{accept}");
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip", "{accept}");
        assert_eq!(headers[header::VARY], "accept-encoding", "{accept}");
        assert!(gunzip(&body).contains(".swagger-ui"), "{accept}");
    }
}
