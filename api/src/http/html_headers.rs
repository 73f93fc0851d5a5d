//! Every HTML answer says what it may load and who may frame it: the storefront and `/ops`
//! set their own policy ([`crate::http::storefront`]); Swagger UI at `/docs` and the confirm and
//! unsubscribe pages get theirs here, with `X-Content-Type-Options: nosniff`, a
//! `Referrer-Policy` (their URLs carry tokens) and `X-Frame-Options` for browsers that
//! predate `frame-ancestors`.

use std::sync::Arc;

use poem::{
    Endpoint, IntoResponse, Request, Response,
    http::{HeaderValue, header},
};

/// Swagger UI is one page of inline script and style (poem-openapi's template): it needs
/// them, and talks to this origin only.
const DOCS_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The small pages of the API (confirm, unsubscribe): no script at all, one form to this
/// origin.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the headers to an HTML response that lacks them.
pub async fn protect<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let docs = req.uri().path().starts_with("/docs");
    let mut response = next.call(req).await?.into_response();
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"));
    if !is_html {
        return Ok(response);
    }
    let policy = if docs { DOCS_POLICY } else { PAGE_POLICY };
    let headers = response.headers_mut();
    let defaults = [
        (header::CONTENT_SECURITY_POLICY, policy),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    Ok(response)
}
