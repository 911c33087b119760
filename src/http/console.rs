//! The Vigil console at `/console`: the React app built from `console/` (sources) into
//! `console/dist` (committed, and checked in CI to match a fresh build), embedded in the binary so
//! `vigil serve` shows it on a machine with no Node toolchain.
//!
//! Caching: Vite names every file under `assets/` after a hash of its content, so those are
//! `immutable` for a year; `index.html` (which names the current hashes) is `no-cache`, so a new
//! binary's console is picked up at the next load. Every console response carries a strict
//! Content-Security-Policy: scripts and styles only from this origin (the build has no inline
//! script), connections only to this origin (its `ws://`/`wss://` URLs named for the realtime
//! socket: see [`content_security_policy`]), no framing.
//! Unknown paths under `/console/` are the single-page app's routes and get `index.html`; an
//! unknown *file* (anything with an extension, or under `assets/`) is a 404, so a stale hashed
//! asset never silently becomes HTML.
//!
//! The console never sends its token in a URL: `--demo` prints `/console#token=…` (a fragment
//! is not sent to the server) and the page moves it to session storage at once.

use actix_web::http::header;
use actix_web::middleware::Compress;
use actix_web::{guard, web, HttpRequest, HttpResponse};
use include_dir::{include_dir, Dir};

/// The built console (`npm --prefix clients/js run build:console`).
static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/console/dist");

/// The console's Content-Security-Policy up to `connect-src 'self'`, to which
/// [`content_security_policy`] adds this origin's WebSocket URLs.
const CSP_HEAD: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'";

/// The rest of the policy, after `connect-src`.
const CSP_TAIL: &str = "; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The console's Content-Security-Policy for a page served to `host` (the request's host as
/// the browser sees it: `Forwarded`/`X-Forwarded-Host` behind a proxy, else `Host`).
///
/// `connect-src` names `ws://host` and `wss://host` because `'self'` does not match a
/// WebSocket URL in every browser (Safari before 15.4); naming the host rather than allowing
/// the `ws:`/`wss:` schemes keeps a page from opening a socket to any other server. A host that
/// is not a plain `name[:port]` (it would be pasted into a header) gets `'self'` only, which
/// current browsers apply to WebSockets too.
pub fn content_security_policy(host: Option<&str>) -> String {
    let plain = |h: &&str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    };
    let sockets = host
        .filter(plain)
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!("{CSP_HEAD}{sockets}{CSP_TAIL}")
}

/// Hashed assets never change under the same name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Registers `/console` and everything under it, compressed for clients that accept it: the
/// script is about 290 KB as built and a third of that gzipped, which matters on a field
/// worker's phone (the first load; the hashed files are cached for good after it).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/console")
            .wrap(Compress::default())
            .route("", get_or_head().to(index))
            .route("/", get_or_head().to(index))
            .route("/{tail:.+}", get_or_head().to(asset)),
    );
}

/// `GET`, and `HEAD` (actix sends no body for it), so `curl -I` shows the headers.
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// `index.html`, revalidated on every load.
async fn index(req: HttpRequest) -> HttpResponse {
    match DIST.get_file("index.html") {
        Some(file) => respond(
            &req,
            file.contents(),
            "text/html; charset=utf-8",
            "no-cache",
        ),
        None => not_found(&req),
    }
}

/// A file of the build, or `index.html` for a client-side route.
async fn asset(req: HttpRequest) -> HttpResponse {
    let tail = req.match_info().get("tail").unwrap_or_default();
    if let Some(file) = DIST.get_file(tail) {
        let cache = if tail.starts_with("assets/") {
            IMMUTABLE
        } else {
            "no-cache"
        };
        return respond(&req, file.contents(), content_type(tail), cache);
    }
    let last = tail.rsplit('/').next().unwrap_or_default();
    if tail.starts_with("assets/") || last.contains('.') {
        return not_found(&req);
    }
    index(req).await
}

/// The policy for `req`'s host.
fn policy_for(req: &HttpRequest) -> String {
    content_security_policy(Some(req.connection_info().host()))
}

fn respond(
    req: &HttpRequest,
    body: &'static [u8],
    content_type: &str,
    cache: &str,
) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::CONTENT_SECURITY_POLICY, policy_for(req)))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

fn not_found(req: &HttpRequest) -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, policy_for(req)))
        .body("not found")
}

/// The content types a Vite build produces.
fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The demo users `vigil serve --demo` prints a console link for: a nurse at the alert board,
/// a physician on the case threads, and the field worker whose cases are hers alone.
const DEMO_CONSOLE_USERS: [(&str, aggregates::types::Role); 3] = [
    ("nurse-amy", aggregates::types::Role::Nurse),
    ("dr-rao", aggregates::types::Role::Physician),
    ("chw-ravi", aggregates::types::Role::Chw),
];

/// One console link per demo user, `http://host:port/console#token=…` (12 h tokens), one line each.
pub fn demo_links(
    state: &super::AppState,
    hospital: &aggregates::types::HospitalId,
    host: &str,
    port: u16,
) -> anyhow::Result<String> {
    use anyhow::Context;
    let mut lines = Vec::new();
    for (user, role) in DEMO_CONSOLE_USERS {
        let user_id = aggregates::types::UserId::parse(user)
            .map_err(|e| anyhow::anyhow!("demo user `{user}`: {e}"))?;
        let token = state
            .keys
            .mint(
                &user_id,
                hospital,
                role,
                std::time::Duration::from_secs(12 * 3600),
            )
            .context("cannot mint a demo console token")?;
        lines.push(format!(
            "  {user:<10} http://{host}:{port}/console#token={token}"
        ));
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use actix_web::{http::StatusCode, test, App};

    use super::*;

    async fn get(path: &str) -> actix_web::dev::ServiceResponse {
        get_from(path, "127.0.0.1:8080").await
    }

    async fn get_from(path: &str, host: &str) -> actix_web::dev::ServiceResponse {
        let app = test::init_service(App::new().configure(configure)).await;
        let req = test::TestRequest::get()
            .uri(path)
            .insert_header((header::HOST, host))
            .to_request();
        test::call_service(&app, req).await
    }

    fn header(res: &actix_web::dev::ServiceResponse, name: header::HeaderName) -> &str {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The first hashed asset of the committed build.
    fn an_asset() -> String {
        let assets = DIST
            .get_dir("assets")
            .expect("console/dist/assets is committed");
        let file = assets.files().next().expect("the build has assets");
        file.path().to_string_lossy().into_owned()
    }

    #[actix_web::test]
    async fn index_html_is_revalidated_and_carries_the_content_security_policy() {
        for path in ["/console", "/console/"] {
            let res = get(path).await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&res, header::CACHE_CONTROL), "no-cache");
            assert_eq!(
                header(&res, header::CONTENT_SECURITY_POLICY),
                content_security_policy(Some("127.0.0.1:8080"))
            );
            assert!(header(&res, header::CONTENT_TYPE).starts_with("text/html"));
        }
    }

    #[actix_web::test]
    async fn hashed_assets_are_immutable_for_a_year() {
        let res = get(&format!("/console/{}", an_asset())).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, header::CACHE_CONTROL), IMMUTABLE);
        assert!(!header(&res, header::CONTENT_TYPE).starts_with("text/html"));
    }

    #[actix_web::test]
    async fn client_side_routes_get_index_html_but_unknown_files_are_not_found() {
        let route = get("/console/cases/3f1c").await;
        assert_eq!(route.status(), StatusCode::OK);
        assert!(header(&route, header::CONTENT_TYPE).starts_with("text/html"));
        for missing in ["/console/assets/index-00000000.js", "/console/favicon.ico"] {
            assert_eq!(
                get(missing).await.status(),
                StatusCode::NOT_FOUND,
                "{missing}"
            );
        }
    }

    #[actix_web::test]
    async fn the_policy_allows_no_inline_script_and_no_foreign_origin() {
        let policy = content_security_policy(Some("vigil.example:8443"));
        assert!(!policy.contains("unsafe-inline"));
        assert!(!policy.contains("unsafe-eval"));
        assert!(policy.contains("script-src 'self';"));
        assert!(policy.contains("frame-ancestors 'none'"));
    }

    #[actix_web::test]
    async fn assets_are_compressed_for_a_client_that_accepts_gzip() {
        let app = test::init_service(App::new().configure(configure)).await;
        let path = format!("/console/{}", an_asset());
        let req = test::TestRequest::get()
            .uri(&path)
            .insert_header((header::ACCEPT_ENCODING, "gzip"))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, header::CONTENT_ENCODING), "gzip");
        assert_eq!(header(&res, header::CACHE_CONTROL), IMMUTABLE);
        let plain = DIST.get_file(an_asset()).map(|f| f.contents().len());
        let sent = test::read_body(res).await.len();
        assert!(
            plain.is_some_and(|plain| sent < plain),
            "{sent} bytes sent for {plain:?}"
        );
    }

    #[actix_web::test]
    async fn sockets_may_go_to_the_pages_own_host_only() {
        let res = get_from("/console/alerts", "vigil.example:8443").await;
        let policy = header(&res, header::CONTENT_SECURITY_POLICY);
        assert!(
            policy
                .contains("; connect-src 'self' ws://vigil.example:8443 wss://vigil.example:8443;"),
            "{policy}"
        );
        // Not any WebSocket server: no bare scheme sources.
        assert!(
            !policy.contains(" ws: ") && !policy.contains(" wss:;"),
            "{policy}"
        );
        // A host that is not a plain name[:port] is not pasted into the header.
        let res = get_from("/console/", "evil.example; script-src *").await;
        let policy = header(&res, header::CONTENT_SECURITY_POLICY);
        assert!(
            policy.contains("; connect-src 'self'; object-src"),
            "{policy}"
        );
        assert!(!policy.contains("evil"), "{policy}");
    }
}
