//! Package names in URL paths. A name is `@namespace/name`, and clients send it either as two
//! path segments (`/v1/packages/@alice/app/1.0.0/x86_64`) or percent-encoded as one
//! (`/v1/packages/%40alice%2Fapp/1.0.0/x86_64`, what a generated OpenAPI client sends for the
//! `{name}` parameter). Before routing, the two-segment form is rewritten into the one-segment
//! form, so every package route is an ordinary axum route with a `{name}` parameter, declared
//! once, and the route templates (metrics, traces, the OpenAPI document) read `{name}`.

use axum::http::Uri;
use axum::http::uri::PathAndQuery;
use percent_encoding::percent_decode_str;

const PACKAGES: &str = "/v1/packages/";

/// Rewrites `uri` so the package name is one path segment, without a trailing slash (which
/// names the same resource); any other URI is left alone.
pub fn normalize(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let rest = path.strip_prefix(PACKAGES)?;
    let trimmed = rest.strip_suffix('/').unwrap_or(rest);
    let (first, after_first) = match trimmed.split_once('/') {
        Some(split) => split,
        None => (trimmed, ""),
    };
    // Not decodable: left for the extractor to report.
    let decoded = percent_decode_str(first).decode_utf8().ok()?;
    let mut normalized = String::with_capacity(path.len() + 2);
    normalized.push_str(PACKAGES);
    normalized.push_str(first);
    if !after_first.is_empty() {
        // Two segments (`@ns/pkg`) become one; one (`%40ns%2Fpkg`) stays.
        normalized.push_str(if decoded.contains('/') { "/" } else { "%2F" });
        normalized.push_str(after_first);
    }
    if normalized == path {
        return None;
    }
    if let Some(query) = uri.query() {
        normalized.push('?');
        normalized.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(normalized).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(uri: &str) -> String {
        let uri: Uri = uri.parse().unwrap();
        normalize(&uri).map_or_else(|| uri.to_string(), |uri| uri.to_string())
    }

    #[test]
    fn the_two_segment_form_becomes_one_segment() {
        assert_eq!(
            normalized("/v1/packages/@alice/app/1.0.0/x86_64-linux"),
            "/v1/packages/@alice%2Fapp/1.0.0/x86_64-linux"
        );
        assert_eq!(
            normalized("/v1/packages/@alice/app/versions?limit=5"),
            "/v1/packages/@alice%2Fapp/versions?limit=5"
        );
        assert_eq!(
            normalized("/v1/packages/%40alice/app/tags/"),
            "/v1/packages/%40alice%2Fapp/tags"
        );
        assert_eq!(
            normalized("/v1/packages/%40alice%2Fapp/versions/"),
            "/v1/packages/%40alice%2Fapp/versions"
        );
    }

    #[test]
    fn other_paths_are_left_alone() {
        for uri in [
            "/v1/packages",
            "/v1/packages/%40alice%2Fapp/versions",
            "/v1/packages/%40alice%2fapp/1.0.0/x86_64",
            "/v1/packages/@alice",
            "/v1/packages/%ff/app/versions",
            "/v1/namespaces/@alice/members",
            "/health",
        ] {
            assert_eq!(normalized(uri), uri);
        }
    }
}
