//! Which other origins' browser pages may call Vigil: the REST API and SSE through CORS, and
//! the WebSocket endpoint through its `Origin` check. Plain data parsed from one flag, so the
//! HTTP layer and the realtime gateway read the same list.

use std::sync::Arc;

/// Origins allowed to call Vigil from a browser page served elsewhere (`https://ward.example`),
/// or every origin (`*`). Empty by default: only pages of Vigil's own origin (the console) and
/// clients that send no `Origin` (native apps, servers) get through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    /// Every origin (`*`): for development only, since any site could then call the API with
    /// a token it holds.
    any: bool,
    /// Exact origins, lowercased, without a trailing slash.
    origins: Arc<[String]>,
}

impl AllowedOrigins {
    /// Parses a comma-separated list of origins (`scheme://host[:port]`), or `*`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut origins = Vec::new();
        let mut any = false;
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                any = true;
                continue;
            }
            let origin = item.trim_end_matches('/').to_ascii_lowercase();
            let Some((scheme, authority)) = origin.split_once("://") else {
                return Err(format!("`{item}` is not an origin (scheme://host[:port])"));
            };
            if !matches!(scheme, "http" | "https")
                || authority.is_empty()
                || authority.contains('/')
            {
                return Err(format!(
                    "`{item}` is not an origin (http or https, a host, an optional port, no path)"
                ));
            }
            origins.push(origin);
        }
        Ok(Self {
            any,
            origins: origins.into(),
        })
    }

    /// Whether a page of `origin` (an `Origin` header's value) may call Vigil.
    pub fn allows(&self, origin: &str) -> bool {
        self.any
            || self
                .origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    }

    /// Whether no other origin is allowed (the default).
    pub fn is_empty(&self) -> bool {
        !self.any && self.origins.is_empty()
    }
}

/// `Origin` names the server itself: its host and port are the request's `Host` (a page
/// Vigil served, such as the console).
pub fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or(origin);
    host.is_some_and(|host| authority.trim_end_matches('/').eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_origin_is_allowed_and_others_are_not() {
        let allowed =
            AllowedOrigins::parse("https://ward.example, http://localhost:3000/").unwrap();
        assert!(allowed.allows("https://ward.example"));
        assert!(allowed.allows("HTTPS://WARD.example"));
        assert!(allowed.allows("http://localhost:3000"));
        assert!(!allowed.allows("https://evil.example"));
        assert!(!allowed.allows("https://ward.example.evil"));
        assert!(!allowed.allows("null"));
    }

    #[test]
    fn the_default_allows_no_other_origin_and_star_allows_every_one() {
        let none = AllowedOrigins::parse("").unwrap();
        assert!(none.is_empty());
        assert!(!none.allows("https://ward.example"));
        assert!(AllowedOrigins::parse("*")
            .unwrap()
            .allows("https://any.example"));
    }

    #[test]
    fn a_value_that_is_not_an_origin_is_refused() {
        for bad in [
            "ward.example",
            "ftp://ward.example",
            "https://ward.example/app",
            "https://",
        ] {
            assert!(AllowedOrigins::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_origin_naming_the_request_host_is_the_same_origin() {
        assert!(same_origin("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(!same_origin("https://ward.example", Some("127.0.0.1:8080")));
        assert!(!same_origin("https://ward.example", None));
    }
}
