//! `floodgate receive`: a small webhook receiver for trying floodgate out. It prints every webhook
//! that arrives and, given the customer's signing secret, whether its signature verifies — the
//! same check a customer system should make (see docs/guide.md).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Args;

use floodgate::model::now_millis;
use floodgate::sink::signature;

/// How far a webhook's timestamp may be from now before it is refused (replay protection).
const TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Debug, Args)]
pub(crate) struct ReceiveArgs {
    /// Address to listen on; webhooks are accepted on any path.
    #[arg(long, env = "FLOODGATE_RECEIVE_ADDR", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The customer's signing secret (whsec_…); without it signatures are shown, not checked.
    #[arg(long, env = "FLOODGATE_SIGNING_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Answer every webhook with this HTTP status (e.g. 503 to watch retries).
    #[arg(long, default_value_t = 200)]
    status: u16,
}

struct Settings {
    secret: Option<String>,
    status: StatusCode,
}

/// Runs the receiver until Ctrl-C.
pub(crate) async fn run(args: ReceiveArgs) -> Result<()> {
    let status = StatusCode::from_u16(args.status).context("--status is not an HTTP status")?;
    if let Some(secret) = &args.secret {
        signature::decode_secret(secret).context("--secret")?;
    }
    let settings = Arc::new(Settings {
        secret: args.secret,
        status,
    });
    let app = Router::new().fallback(post(receive)).with_state(settings);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "receiving webhooks on http://{}/ (Ctrl-C to stop)",
        args.listen
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(floodgate::shutdown::signal())
        .await
        .context("receiver failed")
}

async fn receive(
    State(settings): State<Arc<Settings>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let id = header("webhook-id");
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or_default();
    let verdict = match &settings.secret {
        None => "signature not checked (no --secret)".to_owned(),
        Some(_) if (now_millis() / 1000 - timestamp).abs() > TOLERANCE_SECS => {
            println!("webhook {id}: REFUSED, timestamp {timestamp} is too far from now");
            return StatusCode::BAD_REQUEST;
        }
        Some(secret)
            if signature::verify(secret, id, timestamp, &body, header("webhook-signature")) =>
        {
            "signature verified".to_owned()
        }
        Some(_) => {
            println!("webhook {id}: REFUSED, signature does not verify");
            return StatusCode::UNAUTHORIZED;
        }
    };
    println!(
        "webhook {id} ({verdict}): {}",
        String::from_utf8_lossy(&body)
    );
    settings.status
}
