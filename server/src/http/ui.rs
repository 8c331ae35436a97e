//! The web console: its files, embedded in the binary at build time from the
//! repository's `console/` folder, served at `/ui`; `/` redirects there.
//!
//! It owns how the console's files are served (paths, content types,
//! caching, the content security policy). It must never answer an API
//! request: the console is a client of the public HTTP API like any other,
//! and these routes need no token (the files hold no data).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// One embedded file: its name under `/ui/assets/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../../console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console but the page itself.
const ASSETS: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("pages.js", JS),
    asset!("node.js", JS),
    asset!("session.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The page every console path answers with (the console routes in the
/// browser, after `#`).
const INDEX: &[u8] = include_bytes!("../../../console/index.html");

/// Scripts and styles only from the console itself; data only from the API
/// on the same origin.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The console's routes: `/`, `/ui`, `/ui/` and everything under it.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { index() }))
        .route("/ui/{*path}", get(file))
}

fn index() -> Response {
    respond(StatusCode::OK, "text/html; charset=utf-8", INDEX)
}

/// A file under `/ui/assets/`, or the page for any other path under `/ui/`
/// (a link into the console opened directly).
async fn file(Path(path): Path<String>) -> Response {
    match path.strip_prefix("assets/") {
        Some(name) => match ASSETS.iter().find(|a| a.name == name) {
            Some(a) => respond(StatusCode::OK, a.content_type, a.body),
            None => respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                b"no such console file",
            ),
        },
        None => index(),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: &'static [u8]) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary: revalidate each time (cheap on loopback and tunnels alike).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_named_once_and_not_empty() {
        let mut seen = std::collections::HashSet::new();
        for a in ASSETS {
            assert!(seen.insert(a.name), "{} listed twice", a.name);
            assert!(!a.body.is_empty(), "{} is empty", a.name);
        }
        assert!(std::str::from_utf8(INDEX).is_ok_and(|s| s.contains("assets/app.js")));
    }
}
