//! A fake of APNs: an h2c (HTTP/2 without TLS) server that refuses HTTP/1.1 as APNs does,
//! verifies the ES256 provider token (kid, iss, signature) and the apns-* headers.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Recorded, Script, bind, fixture, serve};

pub const TEAM_ID: &str = "TEAM123456";
pub const KEY_ID: &str = "KEY1234567";
pub const TOPIC: &str = "com.example.floodgate";

/// An error APNs answers with: status and `reason`.
#[derive(Debug, Clone)]
pub struct ApnsError {
    pub status: u16,
    pub reason: &'static str,
}

/// One push APNs accepted.
#[derive(Debug, Clone)]
pub struct ApnsPush {
    pub device_token: String,
    pub priority: String,
    pub body: Value,
}

struct ApnsState {
    public_key: DecodingKey,
    script: Script<ApnsError>,
    sent: Recorded<ApnsPush>,
}

pub struct ApnsFake {
    pub url: String,
    state: Arc<ApnsState>,
    task: tokio::task::JoinHandle<()>,
}

impl ApnsFake {
    pub async fn start() -> Self {
        let state = Arc::new(ApnsState {
            public_key: DecodingKey::from_ec_pem(fixture("apns_p256_public.pem").as_bytes())
                .unwrap(),
            script: Script::default(),
            sent: Recorded::default(),
        });
        let router = Router::new()
            .route("/3/device/{token}", post(push))
            .with_state(state.clone());
        let (listener, url) = bind().await;
        let task = serve(listener, router);
        Self { url, state, task }
    }

    /// The `.p8` key a customer registers.
    pub fn private_key_pem() -> String {
        fixture("apns_p256_private.p8")
    }

    pub fn script(&self) -> &Script<ApnsError> {
        &self.state.script
    }

    pub fn sent(&self) -> &Recorded<ApnsPush> {
        &self.state.sent
    }
}

impl Drop for ApnsFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Deserialize)]
struct ProviderClaims {
    iss: String,
    iat: i64,
}

async fn push(
    State(state): State<Arc<ApnsState>>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    if request.version() != Version::HTTP_2 {
        return refuse(StatusCode::HTTP_VERSION_NOT_SUPPORTED, "HTTP/2 required");
    }
    if let Err(reason) = check_provider_token(&state, &request) {
        return refuse(StatusCode::FORBIDDEN, reason);
    }
    let headers = request.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if header("apns-topic") != TOPIC {
        return refuse(StatusCode::BAD_REQUEST, "BadTopic");
    }
    if header("apns-push-type") != "alert" {
        return refuse(StatusCode::BAD_REQUEST, "InvalidPushType");
    }
    let priority = header("apns-priority");
    if !matches!(priority.as_str(), "5" | "10") {
        return refuse(StatusCode::BAD_REQUEST, "BadPriority");
    }
    let Ok(bytes) = axum::body::to_bytes(request.into_body(), 4096).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge");
    };
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return refuse(StatusCode::BAD_REQUEST, "PayloadEmpty");
    };
    if let Some(e) = state.script.next(&token) {
        return refuse(StatusCode::from_u16(e.status).unwrap(), e.reason);
    }
    state.sent.push(ApnsPush {
        device_token: token,
        priority,
        body,
    });
    let mut ok = StatusCode::OK.into_response();
    ok.headers_mut().insert(
        "apns-id",
        "00000000-0000-0000-0000-000000000001".parse().unwrap(),
    );
    ok
}

/// Checks `authorization: bearer <ES256 JWT>` with kid and iss as APNs does.
fn check_provider_token(state: &ApnsState, request: &Request) -> Result<(), &'static str> {
    let jwt = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
        .ok_or("MissingProviderToken")?;
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| "InvalidProviderToken")?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(KEY_ID) {
        return Err("InvalidProviderToken");
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.set_issuer(&[TEAM_ID]);
    let claims = jsonwebtoken::decode::<ProviderClaims>(jwt, &state.public_key, &validation)
        .map_err(|_| "InvalidProviderToken")?
        .claims;
    let age = floodgate::model::now_millis() / 1000 - claims.iat;
    if claims.iss != TEAM_ID || !(-60..3600).contains(&age) {
        return Err("ExpiredProviderToken");
    }
    Ok(())
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, axum::Json(json!({"reason": reason}))).into_response()
}
