//! Swagger UI at `/docs`, served from the binary. `utoipa-swagger-ui` stores its assets gzip-compressed (a third
//! of the binary otherwise) and serves them compressed whatever the request accepts; here a client that does not
//! accept gzip (`curl` without `--compressed`, say) gets them decompressed, and every answer says it varies with
//! `Accept-Encoding`, so no cache hands gzip to a client that cannot read it. Each asset is decompressed once and
//! kept (a few MB in all): decompressing the 1.5 MB bundle per request let any client spend this process's CPU at
//! will.

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

/// The Swagger UI router for the OpenAPI document `openapi`, served at `/openapi.json`.
pub(crate) fn router(openapi: serde_json::Value) -> Router {
    // The page loads everything from this binary: no CDN, and no call to the public validator service.
    let ui = SwaggerUi::new("/docs")
        .external_url_unchecked("/openapi.json", openapi)
        .config(utoipa_swagger_ui::Config::from("/openapi.json").validator_url("none"));
    Router::from(ui).layer(middleware::from_fn_with_state(Decompressed::default(), as_accepted))
}

/// The assets decompressed so far, by path. Only answers that came gzip-compressed are kept, and only the assets
/// are: the map is bounded by what the binary holds.
type Decompressed = Arc<Mutex<HashMap<String, Bytes>>>;

/// Decompresses a gzip answer for a request that does not accept gzip.
async fn as_accepted(State(decompressed): State<Decompressed>, request: Request, next: Next) -> Response {
    let accepts_gzip = accepts_gzip(request.headers());
    let path = request.uri().path().to_owned();
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
                if let Ok(mut known) = decompressed.lock() {
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
