//! The browser side of `duplex serve`: the demo pages, their scripts and style, and the
//! JavaScript SDK, all from the repository's `web/` folder, compiled into the binary so the
//! hub reads no files at run time and always serves the pages of its own version.
//!
//! Every response carries an `ETag` (a hash of the file, computed once) and
//! `Cache-Control: no-cache`: browsers revalidate on each load and get `304 Not Modified`
//! while the binary is the same.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

/// One embedded file of `web/`.
#[derive(Debug)]
pub(crate) struct Asset {
    /// Its path under `web/`.
    pub file: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TS: &str = "application/typescript; charset=utf-8";

macro_rules! asset {
    ($file:literal, $content_type:expr) => {
        Asset {
            file: $file,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/", $file)),
        }
    };
}

/// Every file of `web/` a browser needs. The test `every_web_file_is_embedded` compares this
/// list with the folder, so a new file must be added here (and, for a page, to [`PAGES`]).
pub(crate) static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("chat.html", HTML),
    asset!("prices.html", HTML),
    asset!("status.html", HTML),
    asset!("plain.html", HTML),
    asset!("style.css", CSS),
    asset!("duplex.js", JS),
    asset!("duplex.d.ts", TS),
    asset!("js/common.js", JS),
    asset!("js/chat.js", JS),
    asset!("js/prices.js", JS),
    asset!("js/status.js", JS),
];

/// Routes of the files that have one of their own (those under `js/` are served at
/// `/js/{file}`).
pub(crate) const PAGES: &[(&str, &str)] = &[
    ("/", "index.html"),
    ("/chat", "chat.html"),
    ("/prices", "prices.html"),
    ("/status", "status.html"),
    ("/plain", "plain.html"),
    ("/style.css", "style.css"),
    ("/duplex.js", "duplex.js"),
    ("/duplex.d.ts", "duplex.d.ts"),
];

/// The folder of page scripts, served at `/js/{file}`.
const SCRIPTS: &str = "js/";

/// 64-bit FNV-1a: quick, and plenty to tell two versions of a file apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The `ETag` of `ASSETS[index]`; every tag is computed at the first request.
fn etag(index: usize) -> &'static HeaderValue {
    static TAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                HeaderValue::from_str(&format!("\"{:x}-{:016x}\"", a.body.len(), fnv1a(a.body)))
                    .expect("hex digits and quotes are a valid header value")
            })
            .collect()
    });
    &tags[index]
}

/// Whether `If-None-Match` names `tag` (weak comparison, RFC 9110 §13.1.2; `*` matches).
fn not_modified(headers: &HeaderMap, tag: &HeaderValue) -> bool {
    let tag = tag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| {
            candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate).as_bytes() == tag
        })
}

fn asset_response(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let tag = etag(index).clone();
    let no_cache = HeaderValue::from_static("no-cache");
    if not_modified(headers, &tag) {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, tag), (header::CACHE_CONTROL, no_cache)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::ETAG, tag),
            (header::CACHE_CONTROL, no_cache),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

fn index_of(file: &str) -> Option<usize> {
    ASSETS.iter().position(|a| a.file == file)
}

async fn script(Path(name): Path<String>, headers: HeaderMap) -> Response {
    // Only the names in the list are served, so `..` and the like find nothing.
    match index_of(&format!("{SCRIPTS}{name}")) {
        Some(index) => asset_response(index, &headers),
        None => (StatusCode::NOT_FOUND, format!("no script {name:?}\n")).into_response(),
    }
}

/// The routes of the embedded files.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for (path, file) in PAGES {
        let index = index_of(file).expect("every page is an embedded file");
        router = router.route(
            path,
            get(move |headers: HeaderMap| async move { asset_response(index, &headers) }),
        );
    }
    router.route("/js/{name}", get(script))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    fn web_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web")
    }

    /// The files under `dir` (paths relative to `root`, with `/`), but for the SDK's tests
    /// (`test/`), the browser tests (`e2e/`), `README.md` and hidden files.
    fn served_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("web/ is readable") {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || ["test", "e2e", "README.md"].contains(&relative.as_str()) {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                served_files(root, &path, out);
            } else {
                out.insert(relative);
            }
        }
    }

    #[test]
    fn every_web_file_is_embedded() {
        let root = web_dir();
        let mut on_disk = BTreeSet::new();
        served_files(&root, &root, &mut on_disk);
        let embedded: BTreeSet<String> = ASSETS.iter().map(|a| a.file.to_owned()).collect();
        assert_eq!(embedded.len(), ASSETS.len(), "a file is listed twice");
        let missing: Vec<_> = on_disk.difference(&embedded).collect();
        let gone: Vec<_> = embedded.difference(&on_disk).collect();
        assert!(
            missing.is_empty() && gone.is_empty(),
            "web/ files not in web::ASSETS: {missing:?}; listed but not in web/: {gone:?}"
        );
        for asset in ASSETS {
            let disk = std::fs::read(root.join(asset.file)).unwrap();
            assert!(disk == asset.body, "{} changed since the build", asset.file);
        }
    }

    #[test]
    fn every_file_has_a_route_and_its_type() {
        for asset in ASSETS {
            let routed = asset.file.starts_with(SCRIPTS)
                || PAGES.iter().any(|(_, file)| *file == asset.file);
            assert!(routed, "{} has no route", asset.file);
            let expected = match asset.file.rsplit_once('.').map(|(_, ext)| ext) {
                Some("html") => HTML,
                Some("css") => CSS,
                Some("js") => JS,
                Some("ts") => TS,
                other => panic!("{}: no content type for {other:?}", asset.file),
            };
            assert_eq!(asset.content_type, expected, "{}", asset.file);
            if asset.file.starts_with(SCRIPTS) {
                assert!(
                    asset.file.ends_with(".js") && !asset.file[SCRIPTS.len()..].contains('/'),
                    "{}: js/ holds page scripts only",
                    asset.file
                );
            }
        }
        for (path, file) in PAGES {
            assert!(
                index_of(file).is_some(),
                "{path} serves {file}, not embedded"
            );
        }
    }

    #[test]
    fn etags_differ_by_content_and_match_weakly() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        let tag = etag(0).clone();
        let mut headers = HeaderMap::new();
        assert!(!not_modified(&headers, &tag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!not_modified(&headers, &tag));
        let weak = format!("\"x\", W/{}", tag.to_str().unwrap());
        headers.insert(header::IF_NONE_MATCH, weak.parse().unwrap());
        assert!(not_modified(&headers, &tag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&headers, &tag));
    }
}
