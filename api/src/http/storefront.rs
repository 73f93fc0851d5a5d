//! The storefront at `/` and the operations console at `/ops`: hand-written pages
//! (`api/static/`) compiled into the binary, so `cargo run` shows the store with nothing else
//! to build or fetch. Each page is a client of the API like any other: REST under `/api`,
//! live stock over `/ws`.

use std::sync::OnceLock;

use poem::{
    Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response,
    endpoint::BoxEndpoint,
    handler,
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Compression,
    web::Path,
};
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// A file of `api/static/`, compiled in.
macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../static/", $name)),
        }
    };
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
/// The operations console at `/ops` (admin sign-in; a client of `/api/admin/ops`).
const OPS: Asset = asset!("ops.html", "text/html; charset=utf-8");

/// Everything under `/static/`.
const ASSETS: [Asset; 7] = [
    asset!("storefront.css", "text/css; charset=utf-8"),
    asset!("altcha.js", "text/javascript; charset=utf-8"),
    asset!("storefront.js", "text/javascript; charset=utf-8"),
    asset!("ops.css", "text/css; charset=utf-8"),
    asset!("ops.js", "text/javascript; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("comb.svg", "image/svg+xml"),
];

/// Only our own files run and load; product photos may come from any HTTPS host (the CMS's
/// asset CDN); the page talks to this origin only (REST and the WebSocket).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data: https:; \
     connect-src 'self'; script-src 'self'; style-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Puts the pages at `/` and `/ops` in front of `inner`, the endpoint nested at `/` (the API). poem gives a
/// nest's catch-all precedence over an exact `/` route, so the page cannot be a plain `.at("/")`.
pub fn with_index(inner: impl IntoEndpoint<Endpoint: 'static>) -> impl Endpoint<Output = Response> {
    WithIndex {
        pages: Pages.with(Compression::new()).map_to_response().boxed(),
        inner: inner.into_endpoint(),
    }
}

struct WithIndex<E> {
    /// The two pages, compressed for clients that accept it.
    pages: BoxEndpoint<'static, Response>,
    inner: E,
}

impl<E: Endpoint> Endpoint for WithIndex<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if matches!(*req.method(), Method::GET | Method::HEAD)
            && matches!(req.uri().path(), "/" | "/ops")
        {
            return self.pages.call(req).await;
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

/// `/` and `/ops`.
struct Pages;

impl Endpoint for Pages {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let asset = if req.uri().path() == "/ops" {
            &OPS
        } else {
            &INDEX
        };
        Ok(page(&req, asset))
    }
}

/// `GET /` (the storefront) or `GET /ops` (the operations console).
fn page(req: &Request, asset: &Asset) -> Response {
    let mut response = serve(req, asset);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /static/{name}`: the page's script, style sheet and pictures.
#[handler]
pub fn static_file(req: &Request, Path(name): Path<String>) -> poem::Result<Response> {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map(|a| serve(req, a))
        .ok_or_else(|| poem::Error::from_status(StatusCode::NOT_FOUND))
}

/// Answers with the file, or 304 when the browser's copy is current. Browsers revalidate on
/// every load (`no-cache`), so a new binary's page is seen at once.
fn serve(req: &Request, asset: &Asset) -> Response {
    let etag = etag(asset);
    let current = req
        .header(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    let builder = Response::builder()
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("X-Content-Type-Options", "nosniff");
    if current {
        builder.status(StatusCode::NOT_MODIFIED).finish()
    } else {
        builder.content_type(asset.content_type).body(asset.body)
    }
}

/// A strong validator from the file's bytes, computed once per file.
fn etag(asset: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        [&INDEX, &OPS]
            .into_iter()
            .chain(ASSETS.iter())
            .map(|a| {
                let digest = Sha256::digest(a.body);
                (a.name, format!("\"{}\"", hex::encode(&digest[..12])))
            })
            .collect()
    });
    tags.iter()
        .find(|(name, _)| *name == asset.name)
        .map_or("\"\"", |(_, tag)| tag.as_str())
}
