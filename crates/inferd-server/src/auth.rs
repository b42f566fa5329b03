//! Optional bearer-token authentication of the data plane.
//!
//! Health and metrics stay open so probes and Prometheus need no secret.
//! Every other path, known or not, gets the same 401 without a valid token,
//! so a caller without one cannot learn which models exist.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::json_response;

/// Paths answered without a token.
const OPEN: [&str; 4] = ["/", "/v2/health/live", "/v2/health/ready", "/metrics"];

/// Accepted tokens. Secrets never appear in `Debug` output.
#[derive(Clone, Default)]
pub struct Tokens(Vec<Vec<u8>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

impl Tokens {
    /// Reads tokens from a file's text: one per line; blank lines and lines
    /// starting with `#` are skipped, surrounding whitespace is trimmed.
    /// Several tokens let a new one be rolled out before the old is removed.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let tokens: Vec<Vec<u8>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.as_bytes().to_vec())
            .collect();
        if tokens.is_empty() {
            return Err("the token file holds no token".into());
        }
        if let Some(short) = tokens.iter().find(|t| t.len() < 16) {
            return Err(format!(
                "a token of {} characters is too short to be a secret; use at least 16",
                short.len()
            ));
        }
        Ok(Tokens(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` equals one of the tokens, in time that depends only on
    /// the lengths involved, never on where the bytes first differ.
    pub fn accepts(&self, given: &[u8]) -> bool {
        // Check every token, so which one matched does not show in timing either.
        self.0
            .iter()
            .fold(false, |found, token| found | constant_time_eq(token, given))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: passes open paths and requests with a valid token.
pub(crate) async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.tokens.is_empty() || OPEN.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if given.is_some_and(|t| state.tokens.accepts(t)) {
        return next.run(request).await;
    }
    state.metrics.record_auth_failure();
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        inferd_protocol::error_body(
            "a valid bearer token is required (Authorization: Bearer <token>)",
        ),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files() {
        let t =
            Tokens::parse("# rotated 2026-11\n  aaaaaaaaaaaaaaaaaaaa  \n\nbbbbbbbbbbbbbbbbbbbb\n")
                .expect("two tokens");
        assert!(t.accepts(b"aaaaaaaaaaaaaaaaaaaa"));
        assert!(t.accepts(b"bbbbbbbbbbbbbbbbbbbb"));
        assert!(!t.accepts(b"aaaaaaaaaaaaaaaaaaab"));
        assert!(!t.accepts(b"aaaaaaaaaaaaaaaaaaa"));
        assert!(!t.accepts(b""));
        assert!(Tokens::parse("\n# only a comment\n").is_err());
        assert!(Tokens::parse("short").is_err());
        assert_eq!(format!("{t:?}"), "Tokens(2 redacted)");
    }

    #[test]
    fn equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
