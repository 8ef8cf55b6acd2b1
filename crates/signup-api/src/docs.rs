//! Swagger UI at `/docs`, served from the binary. `utoipa-swagger-ui` stores its assets gzip-compressed (a third
//! of the binary otherwise) and serves them compressed whatever the request accepts; here a client that does not
//! accept gzip (`curl` without `--compressed`, say) gets them decompressed, and every answer says it varies with
//! `Accept-Encoding`, so no cache hands gzip to a client that cannot read it. Each asset is decompressed once and
//! kept (a few MB in all): decompressing the 1.5 MB bundle per request let any client spend this process's CPU at
//! will. Kept by its decoded path (`/docs/%73wagger-ui-bundle.js` is the same asset), and no more than
//! [`MAX_KEPT`] of them: spellings beyond are decompressed and not kept.

use std::{
    collections::HashMap,
    io::Read as _,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse as _, Response},
};
use utoipa_swagger_ui::SwaggerUi;

use crate::problem::Problem;

/// The largest asset (the Swagger UI bundle, about 1.5 MB decompressed) with room to spare.
const MAX_ASSET_BYTES: usize = 8 << 20;

/// How many decompressed assets are kept: Swagger UI has about ten.
const MAX_KEPT: usize = 32;

/// The Swagger UI router for the OpenAPI document `openapi`, served at `/openapi.json`.
pub(crate) fn router(openapi: serde_json::Value) -> Router {
    router_keeping(openapi, Decompressed::default())
}

/// [`router`], keeping decompressed assets in `kept`.
fn router_keeping(openapi: serde_json::Value, kept: Decompressed) -> Router {
    // The page loads everything from this binary: no CDN, and no call to the public validator service.
    let ui = SwaggerUi::new("/docs")
        .external_url_unchecked("/openapi.json", openapi)
        .config(utoipa_swagger_ui::Config::from("/openapi.json").validator_url("none"));
    Router::from(ui).layer(middleware::from_fn_with_state(kept, as_accepted))
}

/// The assets decompressed so far, by decoded path: at most [`MAX_KEPT`].
type Decompressed = Arc<Mutex<HashMap<String, Bytes>>>;

/// Decompresses a gzip answer for a request that does not accept gzip.
async fn as_accepted(State(decompressed): State<Decompressed>, request: Request, next: Next) -> Response {
    let accepts_gzip = accepts_gzip(request.headers());
    let path = percent_encoding::percent_decode_str(request.uri().path()).decode_utf8_lossy().into_owned();
    let mut response = next.run(request).await;
    if response.headers().get(header::CONTENT_ENCODING).is_none_or(|coding| coding != "gzip") {
        return response;
    }
    response.headers_mut().append(header::VARY, HeaderValue::from_static("accept-encoding"));
    if accepts_gzip {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let known = decompressed.lock().ok().and_then(|known| known.get(&path).cloned());
    let plain = match known {
        Some(plain) => plain,
        None => match decompress(body).await {
            Ok(plain) => {
                if let Ok(mut known) = decompressed.lock()
                    && known.len() < MAX_KEPT
                {
                    known.insert(path, plain.clone());
                }
                plain
            }
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "a Swagger UI asset does not decompress");
                return Problem::internal().into_response();
            }
        },
    };
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(plain))
}

async fn decompress(body: Body) -> anyhow::Result<Bytes> {
    let gzip = axum::body::to_bytes(body, MAX_ASSET_BYTES).await?;
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&gzip[..]).read_to_end(&mut plain)?;
    Ok(Bytes::from(plain))
}

/// Whether `Accept-Encoding` accepts gzip (RFC 9110 §12.5.3): named with a weight above zero, or not named and
/// `*` is. No header at all means no preference, but a client that sends none may decode nothing (curl does
/// not): it gets the asset decompressed.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    let codings = headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|value| value.to_str().ok());
    for coding in codings.flat_map(|value| value.split(',')) {
        let mut parameters = coding.split(';');
        let name = parameters.next().unwrap_or_default().trim();
        let weight = match parameters.find_map(|parameter| parameter.trim().strip_prefix("q=")) {
            Some(weight) => weight.trim().parse::<f32>().unwrap_or(0.0),
            None => 1.0,
        };
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(weight);
        } else if name == "*" {
            any = Some(weight);
        }
    }
    gzip.or(any).is_some_and(|weight| weight > 0.0)
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt as _;

    use super::*;

    /// Attack: memory. Decompressed assets were kept by the path as sent, and the asset route decodes `%XX`, so
    /// every spelling of the bundle's path (2^n of them) would have kept its own 1.5 MB copy.
    #[tokio::test]
    async fn every_spelling_of_an_assets_path_is_one_kept_copy() {
        let kept = Decompressed::default();
        let docs = router_keeping(serde_json::json!({}), kept.clone());
        let mut bodies = std::collections::HashSet::new();
        for spelling in 0..64_u32 {
            let name: String = "swagger-ui-bundle.js"
                .chars()
                .enumerate()
                .map(|(i, c)| if spelling & (1 << i) != 0 { format!("%{:02X}", u32::from(c)) } else { c.to_string() })
                .collect();
            let request = Request::get(format!("/docs/{name}")).body(Body::empty()).unwrap();
            let response = docs.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200, "{name}");
            bodies.insert(axum::body::to_bytes(response.into_body(), MAX_ASSET_BYTES).await.unwrap());
        }
        assert_eq!(bodies.len(), 1, "the spellings are not one asset");
        assert_eq!(kept.lock().unwrap().len(), 1, "each spelling kept a copy of its own");
    }
}
