//! A fake of Google's OAuth token endpoint and FCM's HTTP v1 `messages:send`. The token endpoint
//! verifies the RS256 assertion with the service account's public key (issuer, audience, scope);
//! `messages:send` accepts only tokens it issued.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Recorded, Script, bind, fixture, serve};

pub const PROJECT: &str = "floodgate-test";
pub const CLIENT_EMAIL: &str = "sender@floodgate-test.iam.gserviceaccount.com";

/// An error FCM answers with.
#[derive(Debug, Clone)]
pub struct FcmError {
    pub status: u16,
    /// The FCM error code in `details` (UNREGISTERED, QUOTA_EXCEEDED, ...).
    pub code: &'static str,
    pub retry_after: Option<u64>,
}

/// One message FCM accepted.
#[derive(Debug, Clone)]
pub struct FcmMessage {
    pub project: String,
    pub message: Value,
}

struct FcmState {
    token_uri: String,
    public_key: DecodingKey,
    issued: Mutex<HashSet<String>>,
    token_requests: AtomicU64,
    script: Script<FcmError>,
    sent: Recorded<FcmMessage>,
}

pub struct FcmFake {
    pub url: String,
    state: Arc<FcmState>,
    task: tokio::task::JoinHandle<()>,
}

impl FcmFake {
    pub async fn start() -> Self {
        // The token URI names the fake itself: bind first, then build the state.
        let (listener, url) = bind().await;
        let state = Arc::new(FcmState {
            token_uri: format!("{url}/token"),
            public_key: DecodingKey::from_rsa_pem(fixture("fcm_rsa_public.pem").as_bytes())
                .unwrap(),
            issued: Mutex::new(HashSet::new()),
            token_requests: AtomicU64::new(0),
            script: Script::default(),
            sent: Recorded::default(),
        });
        let router = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/messages:send", post(send))
            .with_state(state.clone());
        let task = serve(listener, router);
        Self { url, state, task }
    }

    /// The service-account key JSON a customer registers, pointing at this fake.
    pub fn service_account_json(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "test-key-1",
            "private_key": fixture("fcm_rsa_private.pem"),
            "client_email": CLIENT_EMAIL,
            "token_uri": self.state.token_uri,
        })
        .to_string()
    }

    pub fn script(&self) -> &Script<FcmError> {
        &self.state.script
    }

    pub fn sent(&self) -> &Recorded<FcmMessage> {
        &self.state.sent
    }

    pub fn token_requests(&self) -> u64 {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Forgets every token issued so far: the next send with one gets 401.
    pub fn revoke_tokens(&self) {
        self.state.issued.lock().unwrap().clear();
    }
}

impl Drop for FcmFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Deserialize)]
struct Assertion {
    iss: String,
    scope: String,
    aud: String,
    iat: i64,
    exp: i64,
}

async fn token(
    State(state): State<Arc<FcmState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&state.token_uri]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    let assertion = form
        .get("assertion")
        .map(String::as_str)
        .unwrap_or_default();
    let claims = match jsonwebtoken::decode::<Assertion>(assertion, &state.public_key, &validation)
    {
        Ok(data) => data.claims,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_grant", "error_description": e.to_string()})),
            )
                .into_response();
        }
    };
    let valid = claims.scope == "https://www.googleapis.com/auth/firebase.messaging"
        && claims.exp - claims.iat <= 3600
        && claims.iss == CLIENT_EMAIL
        && claims.aud == state.token_uri;
    if !valid {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_scope"})),
        )
            .into_response();
    }
    let access_token = format!("ya29.test-{}", rand::random::<u64>());
    state.issued.lock().unwrap().insert(access_token.clone());
    Json(json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

async fn send(
    State(state): State<Arc<FcmState>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !state.issued.lock().unwrap().contains(bearer) {
        return error(
            401,
            "UNAUTHENTICATED",
            None,
            "Request had invalid authentication credentials.",
        );
    }
    let message = body["message"].clone();
    let token = message["token"].as_str().unwrap_or_default().to_owned();
    if let Some(e) = state.script.next(&token) {
        return error(e.status, e.code, e.retry_after, "scripted");
    }
    state.sent.push(FcmMessage {
        project: project.clone(),
        message,
    });
    Json(json!({"name": format!("projects/{project}/messages/{}", rand::random::<u32>())}))
        .into_response()
}

fn error(status: u16, code: &str, retry_after: Option<u64>, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "status": if status == StatusCode::UNAUTHORIZED { "UNAUTHENTICATED" } else { "X" },
        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}],
    }});
    let mut response = (status, Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}
