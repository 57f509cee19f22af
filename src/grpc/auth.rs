//! Bearer-token authentication of gRPC clients, by scope: `OKTA_STREAM_GRPC_TOKENS` may read
//! events (Subscribe, GetEvent, ListEvents, reflection), `OKTA_STREAM_GRPC_ADMIN_TOKENS` may
//! also read the quarantine, whose raw payloads are not filtered.
//!
//! [`TokenCheck`] is a tonic interceptor: it refuses a request without an accepted token
//! (`UNAUTHENTICATED`) and records the granted [`Scope`] in the request's extensions, where a
//! method that needs more than reading checks it with [`require`] (`PERMISSION_DENIED`).
//! `grpc.health.v1` is served without it, so probes need no token.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::error::{ApiError, Code};
use crate::secret::Secret;

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read events: Subscribe, GetEvent, ListEvents, reflection.
    Read,
    /// Read events and the quarantine (ListQuarantined).
    Admin,
}

/// Checks `authorization: Bearer <token>` against the configured tokens of both scopes, in
/// constant time (every token is compared). With no token configured at all every request
/// passes with [`Scope::Admin`]: the listener is then loopback-only, behind mTLS, or open on
/// purpose (see `Config::validate`).
#[derive(Debug, Clone)]
pub struct TokenCheck {
    read: Arc<[Secret]>,
    admin: Arc<[Secret]>,
}

impl TokenCheck {
    /// Accepts `read` tokens for reading and `admin` tokens for everything.
    pub fn new(read: Vec<Secret>, admin: Vec<Secret>) -> Self {
        Self {
            read: read.into(),
            admin: admin.into(),
        }
    }

    /// The scope of a client presenting `authorization` (the metadata value), or why none.
    pub fn scope(&self, authorization: Option<&[u8]>) -> Result<Scope, ApiError> {
        if self.read.is_empty() && self.admin.is_empty() {
            return Ok(Scope::Admin);
        }
        let refused = || {
            ApiError::new(
                Code::Unauthenticated,
                "missing or wrong bearer token in the `authorization` metadata",
            )
        };
        let value = authorization.ok_or_else(refused)?;
        let token = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
            _ => return Err(refused()),
        };
        let any = |tokens: &[Secret]| {
            tokens
                .iter()
                .fold(false, |found, t| found | t.matches_token(token))
        };
        let (admin, read) = (any(&self.admin), any(&self.read));
        match (admin, read) {
            (true, _) => Ok(Scope::Admin),
            (false, true) => Ok(Scope::Read),
            (false, false) => Err(refused()),
        }
    }
}

/// Refuses a request whose granted scope (recorded by [`TokenCheck`]) is below `needed`; a
/// request that did not pass the check has no scope and is refused too.
pub fn require<T>(request: &Request<T>, needed: Scope, what: &str) -> Result<(), ApiError> {
    match request.extensions().get::<Scope>() {
        Some(granted) if *granted >= needed => Ok(()),
        _ => Err(ApiError::new(
            Code::PermissionDenied,
            format!("{what} needs an admin token (OKTA_STREAM_GRPC_ADMIN_TOKENS)"),
        )),
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let scope = self.scope(authorization)?;
        request.extensions_mut().insert(scope);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_tokens_and_scoped_with_them() {
        assert_eq!(
            TokenCheck::new(vec![], vec![]).scope(None),
            Ok(Scope::Admin)
        );
        let check = TokenCheck::new(
            vec![Secret::new("read-1"), Secret::new("read-2")],
            vec![Secret::new("admin-1")],
        );
        assert_eq!(check.scope(Some(b"Bearer read-2")), Ok(Scope::Read));
        assert_eq!(check.scope(Some(b"bearer read-1")), Ok(Scope::Read));
        assert_eq!(check.scope(Some(b"Bearer admin-1")), Ok(Scope::Admin));
        for refused in [
            Some(&b"Bearer read-3"[..]),
            Some(b"read-1"),
            Some(b"Basic read-1"),
            None,
        ] {
            let err = check.scope(refused).unwrap_err();
            assert_eq!(err.code, Code::Unauthenticated);
        }
    }

    #[test]
    fn the_quarantine_needs_the_admin_scope() {
        let mut request = Request::new(());
        assert_eq!(
            require(&request, Scope::Read, "x").unwrap_err().code,
            Code::PermissionDenied
        );
        request.extensions_mut().insert(Scope::Read);
        let err = require(&request, Scope::Admin, "ListQuarantined").unwrap_err();
        assert_eq!(err.code, Code::PermissionDenied);
        assert!(err.message.contains("OKTA_STREAM_GRPC_ADMIN_TOKENS"));
        request.extensions_mut().insert(Scope::Admin);
        assert!(require(&request, Scope::Admin, "ListQuarantined").is_ok());
    }
}
