//! The web console: a single page served at `/` from assets compiled into
//! the binary (no build step, no separate server). It reads and changes
//! the fleet only through the `/api` routes, with the operator's token in
//! an `Authorization: Bearer` header (kept in the tab's session storage,
//! never in a cookie, so a cross-site request carries no credential: CSRF
//! has nothing to ride on). The server enforces every role and scope
//! whatever the page shows; the page hides what the role may not do.
//!
//! The assets are answered with a strict Content-Security-Policy (scripts
//! and styles from this origin only, no inline code, no framing, fetches to
//! this origin only), `nosniff` and no referrer. The script renders every
//! value from the API as text nodes, never as HTML, so script output and
//! job descriptions cannot inject markup.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::auth::oidc::SignInOffer;

/// The Content-Security-Policy of every console asset.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; \
frame-ancestors 'none'; base-uri 'none'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const FLEET_JS: &str = include_str!("assets/fleet.js");
const OPERATIONS_JS: &str = include_str!("assets/operations.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The console's routes: `/` (the page), its scripts
/// (`/console/app.js`: helpers, sign-in and the router; `fleet.js`: fleet,
/// pc, jobs, run; `operations.js`: executions, schedules, approvals,
/// audit), `/console/app.css`, and `/console/sign-in.json` (how to sign
/// in: `{"oidc": null}` or the issuer's endpoints, see
/// [`SignInOffer`]). Open: they hold no fleet data. With an offer, the
/// policy also lets the page reach the token endpoint's origin.
pub fn routes<S: Clone + Send + Sync + 'static>(offer: Option<SignInOffer>) -> Router<S> {
    let policy = HeaderValue::from_str(&content_security_policy(offer.as_ref()))
        .unwrap_or_else(|_| HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    let answer = serde_json::json!({ "oidc": offer });
    let page = |content_type: &'static str, body: &'static str, policy: HeaderValue| {
        get(move || async move { asset(content_type, body, policy) })
    };
    Router::new()
        .route(
            "/",
            page("text/html; charset=utf-8", INDEX_HTML, policy.clone()),
        )
        .route("/console/app.js", page(JS, APP_JS, policy.clone()))
        .route("/console/fleet.js", page(JS, FLEET_JS, policy.clone()))
        .route(
            "/console/operations.js",
            page(JS, OPERATIONS_JS, policy.clone()),
        )
        .route(
            "/console/app.css",
            page("text/css; charset=utf-8", APP_CSS, policy.clone()),
        )
        .route(
            "/console/sign-in.json",
            get(move || async move {
                let mut response = axum::Json(answer).into_response();
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                response
            }),
        )
}

const JS: &str = "text/javascript; charset=utf-8";

/// [`CONTENT_SECURITY_POLICY`], with the token endpoint's origin added to
/// `connect-src` when the console signs in through an issuer.
pub fn content_security_policy(offer: Option<&SignInOffer>) -> String {
    match offer.and_then(SignInOffer::token_origin) {
        Some(origin) => CONTENT_SECURITY_POLICY.replace(
            "connect-src 'self'",
            &format!("connect-src 'self' {origin}"),
        ),
        None => CONTENT_SECURITY_POLICY.to_owned(),
    }
}

/// One asset with the console's security headers.
fn asset(content_type: &'static str, body: &'static str, policy: HeaderValue) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, policy),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (StatusCode::OK, headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_script_and_style() {
        assert!(INDEX_HTML.contains(r#"src="/console/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/console/app.css""#));
        // No inline script or style: the policy would block them.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains("style="));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }

    #[test]
    fn the_scripts_never_write_html() {
        for script in [APP_JS, FLEET_JS, OPERATIONS_JS] {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!script.contains(sink), "a console script uses {sink}");
            }
        }
        for script in ["app.js", "fleet.js", "operations.js"] {
            assert!(INDEX_HTML.contains(&format!(r#"src="/console/{script}""#)));
        }
    }
}
