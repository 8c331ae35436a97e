//! What a browser may ask of the API on behalf of another site: nothing that
//! changes the store, and, in open mode, nothing at all.
//!
//! A bearer token never rides along with a browser's request to another
//! site, but open mode (`no_auth`) takes every request as the admin's: a
//! page the operator visits could post to `127.0.0.1:2114` (cross-site
//! request forgery), or read through a DNS name it points at 127.0.0.1
//! (DNS rebinding). So a request that changes something and that a browser
//! marks as coming from another site (`Sec-Fetch-Site`, or an `Origin`
//! naming another host) is refused, whatever the mode; and in open mode a
//! request whose `Host` is a DNS name other than `localhost`, the
//! advertised address and `allowed_hosts` is refused, from any client (one
//! that reaches an open-mode server by a DNS name needs it listed). Clients
//! that are not browsers send neither `Sec-Fetch-Site` nor `Origin` and are
//! not refused as another site's. API answers are also marked never to be
//! cached (they may hold events) and never to be sniffed.
//!
//! It must never decide who may do what: that is [`crate::auth`]'s.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

/// Refuses what [the module](self) says, and marks the answer.
pub(crate) async fn same_site_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    // Also beyond loopback (`allow_remote_no_auth`): serving anyone who can
    // reach the port is not serving every web page their browsers open.
    if state.config.no_auth
        && let Some(host) = &host
        && !host_is_this_server(host, state.config.advertise.as_deref(), &state.config.allowed_hosts)
    {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            format!(
                "open mode answers requests for localhost, an IP address, the advertised address or \
                 server.allowed_hosts only, not for {host:?} (a DNS name pointed at this server by another site)"
            ),
        )
        .into_response();
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes && from_another_site(req.headers(), host.as_deref()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "a browser sent this request on behalf of another site; it changes the store, so it is refused",
        )
        .into_response();
    }
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    resp
}

/// Whether `host` (a `Host` header: a name or an address, maybe with a
/// port) names this server in a way no other site can steer: an IP address,
/// `localhost` (or a name under it), the advertised address, or one of the
/// names the operator allowed.
fn host_is_this_server(host: &str, advertise: Option<&str>, allowed: &[String]) -> bool {
    let name = host_name(host);
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || advertise.is_some_and(|a| host_name(a).eq_ignore_ascii_case(name))
        || allowed.iter().any(|a| host_name(a).eq_ignore_ascii_case(name))
}

/// The name or address of `host`, without its port, brackets and a
/// trailing dot (`localhost.` is `localhost`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// Whether a browser marked the request as made by another site than the
/// one it is sent to.
fn from_another_site(headers: &HeaderMap, host: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        // "same-site" is another origin of the same site (another port of
        // localhost, say): still another application.
        return !matches!(site, "same-origin" | "none");
    }
    match headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null")) {
        None => false,
        Some(origin) => {
            let origin_host = origin.split_once("://").map(|(_, rest)| rest);
            match (origin_host, host) {
                (Some(o), Some(h)) => !o.eq_ignore_ascii_case(h),
                _ => true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_other_sites_cannot_steer_are_this_servers() {
        for host in [
            "127.0.0.1:2114",
            "[::1]:2114",
            "localhost:2114",
            "LOCALHOST",
            "app.localhost",
            "10.0.0.7",
        ] {
            assert!(host_is_this_server(host, None, &[]), "{host}");
        }
        for host in ["evil.example:2114", "evil.example", "localhost.evil.example"] {
            assert!(!host_is_this_server(host, None, &[]), "{host}");
        }
        assert!(host_is_this_server(
            "node1.internal:2114",
            Some("node1.internal:2113"),
            &[]
        ));
        let allowed = vec!["annal.lan".to_string(), "edge-7.example:2114".to_string()];
        assert!(host_is_this_server("ANNAL.LAN:2114", None, &allowed));
        assert!(host_is_this_server("edge-7.example.", None, &allowed));
        assert!(!host_is_this_server("evil.example", None, &allowed));
    }

    #[test]
    fn requests_a_browser_marks_as_from_another_site_are_told() {
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let host = Some("127.0.0.1:2114");
        assert!(!from_another_site(&with(&[]), host));
        assert!(!from_another_site(&with(&[("sec-fetch-site", "same-origin")]), host));
        assert!(!from_another_site(&with(&[("origin", "http://127.0.0.1:2114")]), host));
        assert!(from_another_site(&with(&[("sec-fetch-site", "cross-site")]), host));
        assert!(from_another_site(&with(&[("sec-fetch-site", "same-site")]), host));
        assert!(from_another_site(&with(&[("origin", "https://evil.example")]), host));
        assert!(from_another_site(&with(&[("origin", "null")]), host));
        assert!(from_another_site(&with(&[("origin", "http://localhost:3000")]), host));
    }
}
