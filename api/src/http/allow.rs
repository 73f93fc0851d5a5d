//! `Allow` on 405 answers (RFC 9110 15.5.6): poem's router answers 405 without it, so the
//! methods of each path are read once from the OpenAPI document and added here.

use std::sync::Arc;

use poem::{Endpoint, IntoResponse, Request, Response, http::StatusCode};
use serde_json::Value;

/// Path templates (`/api/drops/{dropId}`) and the methods each accepts.
#[derive(Debug, Default)]
pub struct AllowedMethods(Vec<(Vec<Segment>, String)>);

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Parameter,
}

impl AllowedMethods {
    /// Reads the paths of an OpenAPI document (as `OpenApiService::spec` renders it), plus
    /// `extra` paths served outside it.
    pub fn from_spec(spec: &str, extra: &[(&str, &[&str])]) -> Self {
        let document: Value = serde_json::from_str(spec).unwrap_or_default();
        let mut paths: Vec<(String, Vec<String>)> = document["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(path, item)| {
                        let methods = item
                            .as_object()
                            .map(|item| item.keys().map(|m| m.to_ascii_uppercase()).collect())
                            .unwrap_or_default();
                        (path.clone(), methods)
                    })
                    .collect()
            })
            .unwrap_or_default();
        paths.extend(extra.iter().map(|(path, methods)| {
            (
                (*path).to_owned(),
                methods.iter().map(|m| (*m).to_owned()).collect(),
            )
        }));
        Self(
            paths
                .into_iter()
                .map(|(path, mut methods)| {
                    // poem answers HEAD wherever it answers GET.
                    if methods.iter().any(|m| m == "GET") {
                        methods.push("HEAD".into());
                    }
                    (segments(&path), methods.join(", "))
                })
                .collect(),
        )
    }

    /// The `Allow` value for a request path, if it is one of ours.
    pub fn for_path(&self, path: &str) -> Option<&str> {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        self.0
            .iter()
            .find(|(template, _)| {
                template.len() == parts.len()
                    && template.iter().zip(&parts).all(|(t, p)| match t {
                        Segment::Literal(l) => l == p,
                        Segment::Parameter => !p.is_empty(),
                    })
            })
            .map(|(_, allow)| allow.as_str())
    }
}

fn segments(template: &str) -> Vec<Segment> {
    template
        .trim_end_matches('/')
        .split('/')
        .map(|s| {
            if s.starts_with('{') || s.starts_with(':') {
                Segment::Parameter
            } else {
                Segment::Literal(s.to_owned())
            }
        })
        .collect()
}

/// Middleware: adds `Allow` to a 405 answer.
pub async fn add_allow_header<E: Endpoint>(
    next: Arc<E>,
    req: Request,
    allowed: Arc<AllowedMethods>,
) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    let mut response = match next.call(req).await {
        Ok(output) => output.into_response(),
        Err(error) => error.into_response(),
    };
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(value) = allowed.for_path(&path).and_then(|a| a.parse().ok())
    {
        response
            .headers_mut()
            .insert(poem::http::header::ALLOW, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::AllowedMethods;

    #[test]
    fn templates_match_their_paths_only() {
        let spec =
            r#"{"paths": {"/api/drops/{dropId}": {"get": {}}, "/api/auth/login": {"post": {}}}}"#;
        let allowed = AllowedMethods::from_spec(spec, &[("/ws", &["GET"])]);
        assert_eq!(allowed.for_path("/api/drops/7"), Some("GET, HEAD"));
        assert_eq!(allowed.for_path("/api/auth/login"), Some("POST"));
        assert_eq!(allowed.for_path("/ws"), Some("GET, HEAD"));
        assert_eq!(allowed.for_path("/api/drops"), None);
        assert_eq!(allowed.for_path("/api/drops/7/reserve"), None);
    }
}
