//! Google OAuth 2.0 for service accounts: an RS256-signed JWT assertion exchanged at the
//! account's `token_uri` for an access token, cached per credential and refreshed before expiry.
//!
//! One refresh at a time per credential (an async mutex per entry), so a burst of deliveries
//! after expiry costs one token request, not one each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::outbound::Outbound;
use super::{RetryCause, SinkError, answer};
use crate::model::{ServiceAccount, now_millis};

/// The scope FCM's HTTP v1 API needs.
const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// How long a signed assertion is valid (Google accepts at most one hour).
const ASSERTION_LIFETIME_SECS: i64 = 3600;
/// A token is refreshed this long before it expires, so none is used at the edge of expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How much of a token endpoint's error answer is kept.
const ERROR_BODY_LIMIT: usize = 300;

/// The service account's key could not sign an assertion.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign with the service account's private_key: {0}")]
pub struct SigningError(#[from] jsonwebtoken::errors::Error);

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

/// The signed JWT assertion for `account`, issued now.
pub fn assertion(account: &ServiceAccount) -> Result<String, SigningError> {
    let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())?;
    let mut header = Header::new(Algorithm::RS256);
    if !account.private_key_id.is_empty() {
        header.kid = Some(account.private_key_id.clone());
    }
    let iat = now_millis() / 1000;
    let claims = Claims {
        iss: &account.client_email,
        scope: FCM_SCOPE,
        aud: &account.token_uri,
        iat,
        exp: iat + ASSERTION_LIFETIME_SECS,
    };
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// An access token; `Debug` hides its value.
#[derive(Clone)]
struct Token {
    value: String,
    refresh_at: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &crate::redact::Redacted(&self.value))
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Access tokens per service account (keyed by token endpoint and account e-mail).
#[derive(Debug, Default)]
pub struct TokenCache {
    // std Mutex: held only to find or insert a slot, never across an `.await`.
    slots: Mutex<HashMap<(String, String), Slot>>,
}

impl TokenCache {
    /// A valid access token for `account`: the cached one, or a fresh one from its `token_uri`.
    pub async fn token(
        &self,
        client: &Outbound,
        account: &ServiceAccount,
    ) -> Result<String, SinkError> {
        let slot = self.slot(account);
        let mut token = slot.lock().await;
        if let Some(t) = token.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        let fresh = fetch(client, account).await?;
        let value = fresh.value.clone();
        *token = Some(fresh);
        Ok(value)
    }

    /// Forgets `account`'s token (the provider refused it), so the next call fetches a new one.
    pub async fn invalidate(&self, account: &ServiceAccount) {
        *self.slot(account).lock().await = None;
    }

    fn slot(&self, account: &ServiceAccount) -> Slot {
        let key = (account.token_uri.clone(), account.client_email.clone());
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key).or_default().clone()
    }
}

/// Exchanges a fresh assertion for an access token.
async fn fetch(client: &Outbound, account: &ServiceAccount) -> Result<Token, SinkError> {
    let assertion = assertion(account).map_err(|e| SinkError::Permanent {
        reason: e.to_string(),
    })?;
    let asked_at = Instant::now();
    let request = client.post(&account.token_uri).form(&[
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion.as_str()),
    ]);
    let response = client.send("the OAuth token endpoint", request).await?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = answer::retry_after(response.headers());
        let body = answer::read_bounded(response, ERROR_BODY_LIMIT).await;
        return Err(token_refused(status, retry_after, &body));
    }
    let answer: TokenAnswer = response.json().await.map_err(|e| SinkError::Retryable {
        reason: format!("unreadable OAuth token answer: {e}"),
        cause: RetryCause::ServerError,
        retry_after: None,
    })?;
    let lifetime = Duration::from_secs(answer.expires_in).saturating_sub(REFRESH_MARGIN);
    Ok(Token {
        value: answer.access_token,
        refresh_at: asked_at + lifetime,
    })
}

/// A refused token request: overload and server errors are retried; anything else (a revoked
/// key, `invalid_grant`) cannot succeed until the customer's settings change.
fn token_refused(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    body: &str,
) -> SinkError {
    let reason = format!(
        "OAuth token endpoint answered HTTP {status}: {}",
        answer::sanitize(body)
    );
    SinkError::refused(reason, answer::retry_cause(status), retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_tokens_are_classified() {
        assert!(matches!(
            token_refused(reqwest::StatusCode::BAD_REQUEST, None, "invalid_grant"),
            SinkError::Permanent { .. }
        ));
        assert!(matches!(
            token_refused(reqwest::StatusCode::SERVICE_UNAVAILABLE, None, ""),
            SinkError::Retryable {
                cause: RetryCause::Overload,
                ..
            }
        ));
    }

    #[test]
    fn a_bad_key_cannot_sign() {
        let account = ServiceAccount {
            project_id: "p".into(),
            client_email: "a@p.iam.gserviceaccount.com".into(),
            private_key: "not a key".into(),
            private_key_id: String::new(),
            token_uri: "https://oauth2.googleapis.com/token".into(),
        };
        assert!(assertion(&account).is_err());
    }
}
