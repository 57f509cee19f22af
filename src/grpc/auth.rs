//! Optional bearer-token authentication of gRPC clients (`OKTA_STREAM_GRPC_TOKENS`).

use tonic::{Request, Status};

use crate::secret::Secret;

/// Checks `authorization: Bearer <token>` against the configured tokens in constant time.
/// With no tokens configured every request passes.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    tokens: std::sync::Arc<[Secret]>,
}

impl TokenCheck {
    /// Requires one of `tokens`; none means the service is open.
    pub fn new(tokens: Vec<Secret>) -> Self {
        Self {
            tokens: tokens.into(),
        }
    }

    /// Whether a client presenting `authorization` may call.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        let Some(value) = authorization else {
            return false;
        };
        let token = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
            _ => return false,
        };
        Secret::matches_any(&self.tokens, token)
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if self.allows(authorization) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong bearer token in the `authorization` metadata",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_tokens_and_strict_with_them() {
        assert!(TokenCheck::new(vec![]).allows(None));
        let check = TokenCheck::new(vec![Secret::new("t1"), Secret::new("t2")]);
        assert!(check.allows(Some(b"Bearer t2")));
        assert!(check.allows(Some(b"bearer t1")));
        assert!(!check.allows(Some(b"Bearer t3")));
        assert!(!check.allows(Some(b"t1")));
        assert!(!check.allows(Some(b"Basic t1")));
        assert!(!check.allows(None));
    }
}
