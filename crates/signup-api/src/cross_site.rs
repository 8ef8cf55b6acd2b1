//! Refuses a state-changing request that a browser sent on behalf of another site (cross-site request forgery).
//!
//! The API's own pages post HTML forms, and a form post is a request any web page can make a visitor's browser
//! send, from the visitor's address: without this, every site could have its visitors ask for password resets
//! (spending the mailbox's mail budget from thousands of addresses). Sessions travel as bearer tokens, never
//! cookies, so a forged request carries no one's authority; it carries their address and their budget.
//!
//! Browsers say where a request comes from: `Sec-Fetch-Site` (current browsers, to HTTPS and localhost), else
//! `Origin`, compared with the request's host (so a proxy in front must pass the `Host` on, as most do by default).
//! A request with neither is not a browser's cross-site request (curl, a server) and goes through. Reading methods
//! (`GET`, `HEAD`, `OPTIONS`) change nothing and always go through.

use axum::{
    extract::Request,
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::problem::{Problem, types};

/// Answers `403 /problems/cross-site-request` to a cross-site state-changing request; passes every other on.
pub(crate) async fn refuse(request: Request, next: Next) -> Response {
    let host = request.uri().authority().map(|a| a.as_str().to_owned());
    if is_cross_site(request.method(), request.headers(), host.as_deref()) {
        return Problem::of(&types::CROSS_SITE_REQUEST).into_response();
    }
    next.run(request).await
}

/// Whether a browser sent this state-changing request from another origin. `authority` is the request URI's (HTTP/2
/// carries the host there); otherwise the `Host` header is the request's own host.
fn is_cross_site(method: &Method, headers: &HeaderMap, authority: Option<&str>) -> bool {
    if method.is_safe() {
        return false;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        // `none`: the user's own action (typed, bookmarked); `same-origin`: the API's own pages.
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return false };
    let host = authority.or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()));
    // `scheme://host[:port]`, or `null` from an opaque origin, which is never this host.
    let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, host)| host);
    !matches!((origin_host, host), (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method};

    use super::is_cross_site;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (name.parse().unwrap(), HeaderValue::from_static(value))).collect()
    }

    #[test]
    fn a_browser_posting_from_another_site_is_refused_and_everything_else_goes_through() {
        let post = Method::POST;
        let host = [("host", "api.example.com")];
        let refused = [
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
            headers(&[("sec-fetch-site", "cross-site"), ("origin", "https://api.example.com"), host[0]]),
            headers(&[("origin", "https://evil.example"), host[0]]),
            headers(&[("origin", "null"), host[0]]),
            headers(&[("origin", "https://api.example.com")]),
        ];
        for case in &refused {
            assert!(is_cross_site(&post, case, None), "{case:?} went through");
        }
        let allowed = [
            headers(&[]),
            headers(&host),
            headers(&[("sec-fetch-site", "same-origin")]),
            headers(&[("sec-fetch-site", "none")]),
            headers(&[("origin", "https://API.example.com"), host[0]]),
        ];
        for case in &allowed {
            assert!(!is_cross_site(&post, case, None), "{case:?} was refused");
        }
        let h2 = headers(&[("origin", "https://api.example.com:8443")]);
        assert!(!is_cross_site(&post, &h2, Some("api.example.com:8443")));
        let reading = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(!is_cross_site(&Method::GET, &reading, None) && !is_cross_site(&Method::HEAD, &reading, None));
        assert!(is_cross_site(&Method::DELETE, &reading, None) && is_cross_site(&Method::PUT, &reading, None));
    }
}
