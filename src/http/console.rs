//! The Vigil console at `/console`: the React app built from `console/` (sources) into
//! `console/dist` (committed, and checked in CI to match a fresh build), embedded in the binary so
//! `vigil serve` shows it on a machine with no Node toolchain.
//!
//! Caching: Vite names every file under `assets/` after a hash of its content, so those are
//! `immutable` for a year; `index.html` (which names the current hashes) is `no-cache`, so a new
//! binary's console is picked up at the next load. Every console response carries a strict
//! Content-Security-Policy: scripts and styles only from this origin (the build has no inline
//! script), connections only to this origin (`ws:`/`wss:` for the realtime socket), no framing.
//! Unknown paths under `/console/` are the single-page app's routes and get `index.html`; an
//! unknown *file* (anything with an extension, or under `assets/`) is a 404, so a stale hashed
//! asset never silently becomes HTML.
//!
//! The console never sends its token in a URL: `--demo` prints `/console#token=…` (a fragment
//! is not sent to the server) and the page moves it to session storage at once.

use actix_web::http::header;
use actix_web::{guard, web, HttpRequest, HttpResponse};
use include_dir::{include_dir, Dir};

/// The built console (`npm --prefix clients/js run build:console`).
static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/console/dist");

/// The console's Content-Security-Policy. `connect-src` adds `ws:`/`wss:` because `'self'` does
/// not match a WebSocket URL in every browser; the socket still goes to this origin's `/api`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self' ws: wss:; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Hashed assets never change under the same name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Registers `/console` and everything under it.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", get_or_head().to(index))
        .route("/console/", get_or_head().to(index))
        .route("/console/{tail:.+}", get_or_head().to(asset));
}

/// `GET`, and `HEAD` (actix sends no body for it), so `curl -I` shows the headers.
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// `index.html`, revalidated on every load.
async fn index() -> HttpResponse {
    match DIST.get_file("index.html") {
        Some(file) => respond(file.contents(), "text/html; charset=utf-8", "no-cache"),
        None => not_found(),
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
        return respond(file.contents(), content_type(tail), cache);
    }
    let last = tail.rsplit('/').next().unwrap_or_default();
    if tail.starts_with("assets/") || last.contains('.') {
        return not_found();
    }
    index().await
}

fn respond(body: &'static [u8], content_type: &str, cache: &str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
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
        let app = test::init_service(App::new().configure(configure)).await;
        test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await
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
                CONTENT_SECURITY_POLICY
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
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-eval"));
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
    }
}
