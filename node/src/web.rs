//! The web app as the node serves it, and where its pages may talk to.
//!
//! A page sends passwords and tokens only to its own origin and to the nodes
//! that origin publishes (`[web] nodes`, at `GET /v1/cluster/nodes`): never
//! to an address a link or a page's storage names, since one crafted link
//! would otherwise hand an account to whoever wrote it. The same list bounds
//! the Content-Security-Policy's `connect-src`, so a page cannot be made to
//! connect anywhere else even by a script that got into it.
//!
//! Every answer carries that policy (no framing, scripts from the node only),
//! `nosniff`, `X-Frame-Options` for browsers without `frame-ancestors`, and
//! `Referrer-Policy: no-referrer`. Source maps are not served: they would
//! hand out the sources of a build that was meant to ship without them.

use std::path::{Component, Path};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::handler::HandlerWithoutStateExt;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use chat_protocol::ErrorCode;
use serde_json::json;
use tower_http::services::{ServeDir, ServeFile};

use crate::app::App;
use crate::config::WebSection;
use crate::error::HttpError;
use crate::origin::origin;

/// The origins of `[web] nodes` (checked by `Config::validate`), each once.
pub fn published(web: &WebSection) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for o in web.nodes.iter().filter_map(|n| origin(n).ok()) {
        if !out.contains(&o) {
            out.push(o);
        }
    }
    out
}

/// The Content-Security-Policy of every answer: the app's own scripts and
/// styles (the build inlines none), and connections to this origin and the
/// published nodes, over HTTP for sign-in and WebSocket for the socket.
pub fn content_security_policy(web: &WebSection) -> String {
    let mut connect = vec!["'self'".to_string()];
    // Images (attachments, avatars) load from whichever node the page is
    // on: after its own origin fails over, that is another one.
    let mut img = vec!["'self'".to_string(), "data:".to_string()];
    for o in published(web) {
        let ws = o.replacen("http", "ws", 1);
        img.push(o.clone());
        connect.push(o);
        connect.push(ws);
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src {}; \
         connect-src {}; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'",
        img.join(" "),
        connect.join(" ")
    )
}

/// The headers [`guard`] adds, made once.
#[derive(Clone)]
pub struct Guard {
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

impl Guard {
    /// The headers for `web`'s policy.
    pub fn new(web: &WebSection) -> Guard {
        // Validated origins only: nothing in the policy can fail here.
        let csp = HeaderValue::from_str(&content_security_policy(web))
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
        Guard {
            headers: Arc::new(vec![
                (header::CONTENT_SECURITY_POLICY, csp),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
            ]),
        }
    }
}

/// Adds the [`Guard`] headers to an answer (any answer: an API's JSON is no
/// more to be sniffed or framed than a page).
pub async fn guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    // A handler's own choice stands (a download's stricter policy).
    for (name, value) in guard.headers.iter() {
        res.headers_mut()
            .entry(name.clone())
            .or_insert_with(|| value.clone());
    }
    res
}

/// `GET /v1/cluster/nodes`: where else this cluster's pages may sign in and
/// connect. No token: a page asks before anyone signs in.
pub(crate) async fn cluster_nodes(State(app): State<Arc<App>>) -> Response {
    let mut res = Json(json!({ "nodes": published(&app.config.web) })).into_response();
    // A changed list takes effect at the next page load, not a cache's.
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The web app at `/`, `/admin` and `/assets/`, or at `/` a page saying how
/// to build it.
pub(crate) fn routes(web: &WebSection) -> axum::Router<Arc<App>> {
    let dir = &web.dir;
    let index = dir.join("index.html");
    if !index.is_file() {
        let note = format!(
            "<!doctype html><title>Chat</title><p>The web app is not built in <code>{}</code>: \
             run <code>scripts/run.sh</code>, or <code>npm ci &amp;&amp; npm run build</code> in \
             <code>web/</code>.</p>",
            dir.display()
        );
        return axum::Router::new()
            .route("/", get(move || async move { axum::response::Html(note) }));
    }
    let assets = ServeDir::new(dir.join("assets"))
        .append_index_html_on_directories(false)
        .not_found_service(missing_asset.into_service());
    // The console is a second page of the same build.
    let console = dir.join("admin.html");
    axum::Router::new()
        .route_service("/", ServeFile::new(index))
        .route_service("/admin", ServeFile::new(console))
        // The pages mailed links open are the app's.
        .route_service("/verify-email", ServeFile::new(dir.join("index.html")))
        .route_service("/reset-password", ServeFile::new(dir.join("index.html")))
        // The service worker, at the root so that its scope is the app.
        .route_service("/sw.js", ServeFile::new(dir.join("sw.js")))
        .merge(
            axum::Router::new()
                .nest_service("/assets", assets)
                .layer(axum::middleware::from_fn(no_source_maps)),
        )
}

async fn missing_asset() -> HttpError {
    HttpError::new(ErrorCode::NotFound, "no such asset")
}

async fn no_source_maps(req: Request, next: Next) -> Response {
    if is_source_map(req.uri().path()) {
        return missing_asset().await.into_response();
    }
    next.run(req).await
}

/// Whether the file `ServeDir` would answer `path` with is a source map: the
/// path percent-decoded and read by components as it reads it, so neither
/// `%2Emap` nor a trailing `/.` gets one out.
fn is_source_map(path: &str) -> bool {
    let decoded = percent_decoded(path);
    let last = Path::new(&decoded)
        .components()
        .rev()
        .find_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        });
    last.and_then(|name| Path::new(name).extension())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("map"))
}

/// `%XX` decoded as `ServeDir` decodes it (anything else kept as it is).
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_lists_each_published_node_for_http_websocket_and_images() {
        let mut web = WebSection::default();
        assert!(content_security_policy(&web).contains("connect-src 'self';"));
        assert!(content_security_policy(&web).contains("img-src 'self' data:;"));
        web.nodes = vec![
            "http://a:1".into(),
            "https://b".into(),
            "http://a:1/".into(),
        ];
        let csp = content_security_policy(&web);
        assert!(
            csp.contains("connect-src 'self' http://a:1 ws://a:1 https://b wss://b;"),
            "{csp}"
        );
        assert!(
            csp.contains("img-src 'self' data: http://a:1 https://b;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    }

    #[test]
    fn source_maps_are_recognised_however_spelled() {
        for p in [
            "/assets/a.js.map",
            "/a.js.MAP",
            "/a.js%2emap",
            "/a.js%2Emap",
            "/a.js.map/",
            "/a.js.map/.",
            "/./a.js.map",
            "//a.js.map",
        ] {
            assert!(is_source_map(p), "{p}");
        }
        for p in ["/assets/a.js", "/assets/map", "/assets/a.map.js", "/a.js%2"] {
            assert!(!is_source_map(p), "{p}");
        }
    }
}
