//! Submits notifications to a floodgate server with floodgate-client, then waits until each one
//! has reached a final state (delivered, failed, suppressed, expired or cancelled).
//!
//! ```sh
//! FLOODGATE_TOKEN=$(cat floodgate-data/admin-token) \
//!     cargo run -p floodgate-client --example submit -- acme 10
//! ```
//!
//! Arguments: the customer system's id, then how many notifications to send in one batch after
//! the first (default 3). `FLOODGATE_SERVER` is the server's gRPC address (default
//! `127.0.0.1:50051`); `FLOODGATE_TOKEN` an admin or submit token. Prints one line per
//! notification: its id and final state.

use std::process::ExitCode;
use std::time::Duration;

use floodgate_client::proto::submit_result::Outcome;
use floodgate_client::{Client, Error, proto};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(customer), count) = (args.next(), args.next()) else {
        eprintln!("usage: submit CUSTOMER [COUNT]   (FLOODGATE_TOKEN must be set)");
        return ExitCode::from(2);
    };
    let Ok(count) = count.as_deref().unwrap_or("3").parse::<usize>() else {
        eprintln!("error: COUNT must be a whole number");
        return ExitCode::from(2);
    };
    let server = std::env::var("FLOODGATE_SERVER").unwrap_or_else(|_| "127.0.0.1:50051".into());
    let Ok(token) = std::env::var("FLOODGATE_TOKEN") else {
        eprintln!("error: set FLOODGATE_TOKEN to an admin or submit token");
        return ExitCode::from(2);
    };
    match run(&server, &token, &customer, count).await {
        Ok(outcomes) => {
            for (id, state) in outcomes {
                println!("{id} {}", state.as_str_name());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// How long to wait for every notification to reach a final state.
const PATIENCE: Duration = Duration::from_secs(30);

/// Submits one notification alone and `count` in a batch to `customer`, then waits for them:
/// returns each accepted notification's id and final state, in submission order.
pub(crate) async fn run(
    server: &str,
    token: &str,
    customer: &str,
    count: usize,
) -> Result<Vec<(String, proto::State)>, Error> {
    let client = Client::builder(server).token(token).connect().await?;
    // Keys that name the business event make a resubmission harmless; this run has no events,
    // so one random prefix per run keeps runs apart.
    let run = format!("example-{:08x}", rand::random::<u32>());
    let request = |i: usize| proto::SubmitRequest {
        customer_id: customer.to_owned(),
        idempotency_key: format!("{run}-{i}"),
        recipient: format!("user-{i}"),
        payload: format!(r#"{{"run":"{run}","n":{i}}}"#).into_bytes(),
        ..Default::default()
    };

    let first = client.submit(request(0)).await?;
    let mut ids = vec![first.notification_id];
    let batch = client
        .submit_batch((1..=count).map(request).collect())
        .await?;
    for (i, result) in batch.into_iter().enumerate() {
        match result.outcome {
            Some(Outcome::Accepted(accepted)) => ids.push(accepted.notification_id),
            Some(Outcome::Error(error)) => {
                eprintln!(
                    "item {} refused: {} (code {})",
                    i + 1,
                    error.message,
                    error.code
                );
            }
            None => eprintln!("item {} has no result", i + 1),
        }
    }

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut outcomes = Vec::with_capacity(ids.len());
    for id in ids {
        let state = loop {
            let state = client.get_notification(&id).await?.state();
            if is_final(state) || tokio::time::Instant::now() >= deadline {
                break state;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        outcomes.push((id, state));
    }
    Ok(outcomes)
}

/// Whether a notification's state can no longer change.
fn is_final(state: proto::State) -> bool {
    use proto::State::*;
    matches!(state, Delivered | Failed | Suppressed | Expired | Cancelled)
}
