//! A fake of Twilio's Messages API: checks basic auth (account SID and auth token) and the form
//! fields, answers 201 with a message resource, or a scripted error with Twilio's JSON shape.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::Engine as _;
use serde_json::json;

use super::{Recorded, Script, bind, serve};

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token";
pub const FROM: &str = "+15005550006";

/// An error the API answers with: status, Twilio error code, optional Retry-After.
#[derive(Debug, Clone)]
pub struct SmsError {
    pub status: u16,
    pub code: u64,
    pub retry_after: Option<u64>,
}

/// One message the API accepted.
#[derive(Debug, Clone)]
pub struct SmsMessage {
    pub to: String,
    pub from: String,
    pub body: String,
}

struct SmsState {
    script: Script<SmsError>,
    sent: Recorded<SmsMessage>,
}

pub struct SmsFake {
    pub url: String,
    state: Arc<SmsState>,
    task: tokio::task::JoinHandle<()>,
}

impl SmsFake {
    pub async fn start() -> Self {
        let state = Arc::new(SmsState {
            script: Script::default(),
            sent: Recorded::default(),
        });
        let router = Router::new()
            .route("/2010-04-01/Accounts/{sid}/Messages.json", post(create))
            .with_state(state.clone());
        let (listener, url) = bind().await;
        let task = serve(listener, router);
        Self { url, state, task }
    }

    pub fn script(&self) -> &Script<SmsError> {
        &self.state.script
    }

    pub fn sent(&self) -> &Recorded<SmsMessage> {
        &self.state.sent
    }
}

impl Drop for SmsFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn create(
    State(state): State<Arc<SmsState>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"))
    );
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if sid != ACCOUNT_SID || auth != Some(expected.as_str()) {
        return error(401, 20003, None, "Authenticate");
    }
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let (to, from, body) = (field("To"), field("From"), field("Body"));
    if to.is_empty() || body.is_empty() || from != FROM {
        return error(400, 21604, None, "A 'To', 'From' and 'Body' are required");
    }
    if let Some(e) = state.script.next(&to) {
        return error(e.status, e.code, e.retry_after, "scripted");
    }
    state.sent.push(SmsMessage {
        to: to.clone(),
        from,
        body: body.clone(),
    });
    let resource = json!({"sid": format!("SM{:032x}", rand::random::<u128>()), "to": to, "body": body, "status": "queued"});
    (StatusCode::CREATED, Json(resource)).into_response()
}

fn error(status: u16, code: u64, retry_after: Option<u64>, message: &str) -> Response {
    let body = json!({"code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status});
    let mut response = (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}
