//! Bearer-token authentication. The admin token may call everything; the submit token only the
//! `Dispatcher` service; the metrics token only reads `/metrics` and the dashboard's data.
//! Tokens are compared in constant time.

use std::sync::Arc;

use tonic::{Request, Status};

/// The configured tokens. `Debug` shows which are set, never their values.
#[derive(Clone)]
pub struct Tokens {
    admin: Arc<str>,
    submit: Option<Arc<str>>,
    metrics: Option<Arc<str>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::Redacted;
        f.debug_struct("Tokens")
            .field("admin", &Redacted(&self.admin))
            .field("submit", &self.submit.as_deref().map(Redacted))
            .field("metrics", &self.metrics.as_deref().map(Redacted))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Submit,
}

impl Tokens {
    /// Tokens for a server: one admin token, optionally one submit-only token.
    pub fn new(admin: &str, submit: Option<&str>) -> Self {
        Self {
            admin: admin.into(),
            submit: submit.map(Into::into),
            metrics: None,
        }
    }

    /// Adds the read-only metrics token: it opens `/metrics` and the dashboard's data and nothing
    /// else, so a Prometheus server's credential cannot submit or read notifications.
    pub fn with_metrics(mut self, metrics: &str) -> Self {
        self.metrics = Some(metrics.into());
        self
    }

    /// Interceptor for `Dispatcher` and `Preferences`: admin or submit token.
    pub fn dispatcher(
        &self,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let tokens = self.clone();
        move |request| tokens.role(&request).map(|_| request)
    }

    /// Interceptor for admin-only services.
    pub fn admin_only(
        &self,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let tokens = self.clone();
        move |request| match tokens.role(&request)? {
            Role::Admin => Ok(request),
            Role::Submit => Err(Status::permission_denied(
                "this token may only use the Dispatcher and Preferences services; this call needs the admin token",
            )),
        }
    }

    /// Whether `token` may read the HTTP side (metrics and the dashboard's data): the admin or
    /// the metrics token. The submit token may not: services that submit have no business
    /// seeing every customer's traffic.
    pub fn reads_metrics(&self, token: &str) -> bool {
        self.role_of(token) == Some(Role::Admin)
            || self
                .metrics
                .as_deref()
                .is_some_and(|metrics| constant_time_eq(token.as_bytes(), metrics.as_bytes()))
    }

    fn role_of(&self, token: &str) -> Option<Role> {
        if constant_time_eq(token.as_bytes(), self.admin.as_bytes()) {
            Some(Role::Admin)
        } else if self
            .submit
            .as_deref()
            .is_some_and(|submit| constant_time_eq(token.as_bytes(), submit.as_bytes()))
        {
            Some(Role::Submit)
        } else {
            None
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
            .ok_or_else(|| Status::unauthenticated("invalid token"))
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
