//! `GET /components/snapgate.js`: snapgate's web components (`<snapgate-uploader>`,
//! `<snapgate-storyboard>`), one hand-written ES module embedded in the binary (no build step).
//! Public and the same for everyone: any origin may load it (`Access-Control-Allow-Origin: *`,
//! a module script from another origin needs it), cached and revalidated by its `ETag`.

use std::sync::LazyLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The module's source.
pub const SNAPGATE_JS: &str = include_str!("snapgate.js");

static TAG: LazyLock<HeaderValue> = LazyLock::new(|| super::etag::tag_of(SNAPGATE_JS.as_bytes()));

/// The module, or `304` when `If-None-Match` names its tag.
pub async fn snapgate_js(headers: HeaderMap) -> Response {
    let tag = TAG.clone();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|inm| super::etag::matches(inm, tag.to_str().unwrap_or_default()));
    let common = [
        (header::ETAG, tag),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        SNAPGATE_JS,
    )
        .into_response()
}
