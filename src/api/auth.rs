//! Bearer-token authentication. The admin token may call everything; the submit token only the
//! `Dispatcher` and `Preferences` services; a scoped token (see [`crate::scoped_tokens`]) the
//! same services for its own customers only; the metrics token only reads `/metrics` and the
//! dashboard's data. Configured tokens are compared in constant time; scoped tokens are looked up
//! by hash.
//!
//! The interceptor of the `Dispatcher` and `Preferences` services puts the caller's [`Scope`] on
//! each request, and their handlers check every customer a call names or reaches against it.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::error::Error;
use crate::scoped_tokens::{Lookup, Scoped, ScopedTokens};

/// The configured tokens. `Debug` shows which are set, never their values.
#[derive(Clone)]
pub struct Tokens {
    admin: Arc<str>,
    submit: Option<Arc<str>>,
    metrics: Option<Arc<str>>,
    scoped: Option<Arc<ScopedTokens>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::Redacted;
        f.debug_struct("Tokens")
            .field("admin", &Redacted(&self.admin))
            .field("submit", &self.submit.as_deref().map(Redacted))
            .field("metrics", &self.metrics.as_deref().map(Redacted))
            .field("scoped", &self.scoped.is_some())
            .finish()
    }
}

#[derive(Debug, Clone)]
enum Role {
    Admin,
    Submit,
    Scoped(Arc<Scoped>),
}

/// Which customer systems the caller of a `Dispatcher` or `Preferences` call may see.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The admin and the (unscoped) submit token.
    Every,
    /// A scoped token: its own customers only.
    Only(Arc<Scoped>),
}

impl Scope {
    /// The scope the interceptor put on `request`. Its absence is a wiring bug, and refused.
    pub(crate) fn of<T>(request: &Request<T>) -> Result<Self, Error> {
        request.extensions().get::<Scope>().cloned().ok_or_else(|| {
            tracing::error!("a call reached a scoped service without its interceptor");
            Error::Internal
        })
    }

    /// Whether the caller may see `customer_id`.
    pub fn allows(&self, customer_id: &str) -> bool {
        match self {
            Scope::Every => true,
            Scope::Only(scoped) => scoped.allows(customer_id),
        }
    }

    /// `Ok` when the caller may see `customer_id`; otherwise the very answer an unknown customer
    /// gets (NOT_FOUND), so a scoped token cannot tell other customers that exist from ones that
    /// do not.
    pub(crate) fn admit(&self, customer_id: &str) -> Result<(), Error> {
        match self.allows(customer_id) {
            true => Ok(()),
            false => Err(super::state::unknown_customer(customer_id)),
        }
    }
}

impl Tokens {
    /// Tokens for a server: one admin token, optionally one submit-only token.
    pub fn new(admin: &str, submit: Option<&str>) -> Self {
        Self {
            admin: admin.into(),
            submit: submit.map(Into::into),
            metrics: None,
            scoped: None,
        }
    }

    /// Adds the scoped tokens, checked after the configured ones.
    pub fn with_scoped(mut self, scoped: Arc<ScopedTokens>) -> Self {
        self.scoped = Some(scoped);
        self
    }

    /// Adds the read-only metrics token: it opens `/metrics` and the dashboard's data and nothing
    /// else, so a Prometheus server's credential cannot submit or read notifications.
    pub fn with_metrics(mut self, metrics: &str) -> Self {
        self.metrics = Some(metrics.into());
        self
    }

    /// Interceptor for `Dispatcher` and `Preferences`: admin, submit or scoped token. Puts the
    /// caller's [`Scope`] on the request.
    pub fn dispatcher(
        &self,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let tokens = self.clone();
        move |mut request| {
            let scope = match tokens.role(&request)? {
                Role::Admin | Role::Submit => Scope::Every,
                Role::Scoped(scoped) => Scope::Only(scoped),
            };
            request.extensions_mut().insert(scope);
            Ok(request)
        }
    }

    /// Interceptor for admin-only services.
    pub fn admin_only(
        &self,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let tokens = self.clone();
        move |request| match tokens.role(&request)? {
            Role::Admin => Ok(request),
            Role::Submit | Role::Scoped(_) => Err(Status::permission_denied(
                "this token may only use the Dispatcher and Preferences services; this call needs the admin token",
            )),
        }
    }

    /// Whether `token` may read the HTTP side (metrics and the dashboard's data): the admin or
    /// the metrics token. The submit and scoped tokens may not: services that submit have no business
    /// seeing every customer's traffic.
    pub fn reads_metrics(&self, token: &str) -> bool {
        self.is_admin(token)
            || self
                .metrics
                .as_deref()
                .is_some_and(|metrics| constant_time_eq(token.as_bytes(), metrics.as_bytes()))
    }

    fn is_admin(&self, token: &str) -> bool {
        constant_time_eq(token.as_bytes(), self.admin.as_bytes())
    }

    fn role_of(&self, token: &str) -> Result<Role, Status> {
        if self.is_admin(token) {
            return Ok(Role::Admin);
        }
        if self
            .submit
            .as_deref()
            .is_some_and(|submit| constant_time_eq(token.as_bytes(), submit.as_bytes()))
        {
            return Ok(Role::Submit);
        }
        match self.scoped.as_ref().map(|scoped| scoped.find(token)) {
            Some(Lookup::Valid(scoped)) => Ok(Role::Scoped(scoped)),
            Some(Lookup::Unconfirmed) => Err(Status::unavailable(
                "scoped tokens cannot be checked: the database has not answered for a while; try again",
            )),
            Some(Lookup::Unknown) | None => Err(Status::unauthenticated("invalid token")),
        }
    }

    fn role(&self, request: &Request<()>) -> Result<Role, Status> {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <token>` metadata")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
        self.role_of(token)
    }
}

/// Compares without an early exit on the first differing byte, so timing does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    }

    #[test]
    fn roles_follow_tokens() {
        let tokens = Tokens::new("admin-secret", Some("submit-secret"));
        assert!(tokens.dispatcher()(request(Some("submit-secret"))).is_ok());
        assert!(tokens.admin_only()(request(Some("admin-secret"))).is_ok());
        let denied = tokens.admin_only()(request(Some("submit-secret"))).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let wrong = tokens.dispatcher()(request(Some("admin-secreT"))).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let missing = tokens.dispatcher()(request(None)).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        let tokens = tokens.with_metrics("metrics-secret");
        assert!(tokens.reads_metrics("metrics-secret") && tokens.reads_metrics("admin-secret"));
        assert!(!tokens.reads_metrics("submit-secret"));
        let denied = tokens.dispatcher()(request(Some("metrics-secret"))).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    }
}
