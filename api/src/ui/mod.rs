//! The timeline page at `/ui/`: a plain HTML page, one script and one style sheet, all
//! embedded in the binary (no CDN, no external font: it works offline and air-gapped).
//!
//! The assets are public; every data request the page makes carries the bearer token the
//! user signed in with, to the same `/v1` routes as any client. The page is served with a
//! Content-Security-Policy that allows only this origin's script and style (no inline
//! script, no third-party origin, no framing), `nosniff` and `no-referrer`, so a value
//! from the ledger can never become code, and a token in the address bar (`#token=`, which
//! the page removes at once) never leaves in a `Referer`.
//!
//! The timeline the page draws is built by `formats::timeline` and served by
//! `GET /v1/timeline`.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The policy every page response carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const INDEX_HTML: &str = include_str!("../../assets/ui/index.html");
const APP_JS: &str = include_str!("../../assets/ui/app.js");
const APP_CSS: &str = include_str!("../../assets/ui/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    // A new binary may bring a new page: revalidate rather than run a stale script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /ui/`: the page.
pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/app.js`: the page's only script.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/app.css`: the page's only style sheet.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// `GET /ui`: to `/ui/`, so the page's relative asset paths resolve (the query is kept:
/// deep links still land where they point).
pub(crate) async fn redirect(uri: axum::http::Uri) -> Response {
    let target = match uri.query() {
        Some(query) => format!("/ui/?{query}"),
        None => "/ui/".to_string(),
    };
    let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
    if let Ok(location) = HeaderValue::from_str(&target) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
