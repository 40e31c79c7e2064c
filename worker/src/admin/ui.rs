//! The dashboard (`/ui`): one HTML page, a script and a stylesheet,
//! embedded in the binary and served without the token. They hold no
//! saga data: the page reads everything from `/api`, sending the token
//! the operator gives it (kept in the tab's session storage only).
//!
//! The assets are plain, dependency-free files under `ui/`, edited by
//! hand: building sagaflow needs no Node tool chain.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// The page may load only its own script and style, and talk only to
/// this origin: a saga's text (an error, a reason) can never run as code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn answer(content_type: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// `GET /ui`: the page.
pub(super) async fn page() -> Response {
    answer("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js`, `/ui/app.css`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => answer("text/javascript; charset=utf-8", SCRIPT),
        "app.css" => answer("text/css; charset=utf-8", STYLE),
        _ => (
            StatusCode::NOT_FOUND,
            "no such asset; the dashboard is at /ui",
        )
            .into_response(),
    }
}
