//! The kiosk web page at `/`: push-to-talk and typed questions, live status, the streamed
//! answer with clickable citations, and spoken answers, over `/v1/voice`.
//!
//! The files are compiled into the binary (no CDN, no files on disk), so the page works on an
//! appliance with no network. A strict Content-Security-Policy allows only this origin.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

const INDEX_HTML: &str = include_str!("../../assets/kiosk/index.html");
const APP_JS: &str = include_str!("../../assets/kiosk/app.js");
const APP_CSS: &str = include_str!("../../assets/kiosk/app.css");
const CAPTURE_JS: &str = include_str!("../../assets/kiosk/capture-worklet.js");

/// Scripts, styles, media and the WebSocket from this origin only; microphone allowed here.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self' blob:; connect-src 'self' ws: wss:; worker-src 'self'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/kiosk/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/kiosk/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/kiosk/capture-worklet.js", get(|| async { asset("text/javascript; charset=utf-8", CAPTURE_JS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The page changes only with the binary; a short cache keeps upgrades visible.
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
}
