//! The browser console: a single page, embedded in the binary, served at `GET /` on the gRPC
//! listener, so its gRPC-Web calls are same-origin (no CORS set-up).
//!
//! The page's sources live in `console/` (TypeScript, bundled by esbuild); the built files are
//! committed under `src/console/assets/` and `scripts/test` checks they are what the sources
//! build. The page holds no data: it reads everything through the public API (Subscribe,
//! ListEvents, GetEvent, ListQuarantined) with the user's token, like any other client.
//!
//! [`Layer`] sits outermost on the tonic server: a `GET`/`HEAD` of a console file is answered
//! here (gRPC-Web would refuse a plain HTTP/1.1 `GET`), everything else goes on to gRPC.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

/// A console file: its path, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file of the page. `/` is the page itself.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("assets/index.html"),
    },
    Asset {
        path: "/console/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        path: "/console/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/app.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/favicon.svg"),
    },
];

/// The page may load its own files and call its own origin, nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The response for `GET path`, if `path` is a console file.
pub fn response(method: &Method, path: &str) -> Option<Response<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let path = if path == "/index.html" { "/" } else { path };
    let asset = ASSETS.iter().find(|a| a.path == path)?;
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(asset.body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
    // Files change with the binary; revalidating them is cheap on loopback and never stale.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
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
    Some(response)
}

/// Serves the console in front of the gRPC services when `enabled`; passes everything through
/// otherwise (`OKTA_STREAM_CONSOLE=false`).
#[derive(Debug, Clone, Copy)]
pub struct Layer {
    enabled: bool,
}

impl Layer {
    /// The console layer, serving the page when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }
}

impl<S> tower::Layer<S> for Layer {
    type Service = Console<S>;

    fn layer(&self, inner: S) -> Console<S> {
        Console {
            inner,
            enabled: self.enabled,
        }
    }
}

/// The service [`Layer`] makes: console files here, the rest to `inner`.
#[derive(Debug, Clone)]
pub struct Console<S> {
    inner: S,
    enabled: bool,
}

/// The response future of [`Console`].
type ResponseFuture<E> =
    Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, E>> + Send + 'static>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Console<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if self.enabled
            && let Some(response) = response(request.method(), request.uri().path())
        {
            let response =
                response.map(|body| tonic::body::Body::new(http_body_util::Full::new(body)));
            return Box::pin(std::future::ready(Ok(response)));
        }
        let future = self.inner.call(request);
        Box::pin(async move { Ok(future.await?.map(tonic::body::Body::new)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_served_with_a_strict_policy() {
        let page = response(&Method::GET, "/").expect("the page");
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let html = std::str::from_utf8(page.body()).unwrap();
        assert!(html.contains("/console/app.js"), "{html}");
        assert!(
            page.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("connect-src 'self'")
        );
        let script = response(&Method::GET, "/console/app.js").expect("the script");
        assert!(!script.body().is_empty());
        let head = response(&Method::HEAD, "/console/app.css").expect("HEAD works");
        assert!(head.body().is_empty());
        assert_ne!(head.headers()[header::CONTENT_LENGTH], "0");
    }

    #[test]
    fn other_paths_and_methods_are_left_to_grpc() {
        assert!(response(&Method::POST, "/").is_none());
        assert!(response(&Method::GET, "/okta.events.v1.EventStream/Subscribe").is_none());
        assert!(response(&Method::GET, "/console/../Cargo.toml").is_none());
    }
}
