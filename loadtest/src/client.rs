//! Talking to floodgate as any service does: gRPC connections carrying the bearer token, and the
//! customer registration every experiment starts with.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use floodgate::api::proto;
use floodgate::api::proto::customers_client::CustomersClient;
use tokio::task::JoinSet;

/// Longest a single call may take before it counts as a `DeadlineExceeded` error: long enough
/// never to cut off a merely slow server, short enough that a stalled one ends the run.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A channel that adds `authorization: Bearer <token>` to every call (floodgate-client's).
pub(crate) type AuthedChannel = floodgate_client::AuthedChannel;

/// Opens one HTTP/2 connection to `url`. Clones of the result share that connection. An
/// `https://` URL speaks TLS, trusting `tls_ca` (a PEM file) if given, else the public web roots.
/// The harness makes its calls on the generated clients directly: it counts every failure
/// itself, so nothing is retried behind its back.
pub(crate) async fn connect(
    url: &str,
    token: &str,
    tls_ca: Option<&std::path::Path>,
) -> Result<AuthedChannel> {
    let mut builder = floodgate_client::Client::builder(url)
        .token(token)
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .retry(floodgate_client::RetryPolicy::none());
    if let Some(path) = tls_ca {
        builder = builder.tls_ca_pem(
            std::fs::read(path)
                .with_context(|| format!("cannot read --tls-ca {}", path.display()))?,
        );
    }
    let client = builder.connect().await?;
    Ok(client.channel())
}

/// A fresh admin token for a server started for one run.
pub(crate) fn random_admin_token() -> String {
    format!("fgload_{:032x}", rand::random::<u128>())
}

/// Succeeds once the server answers a real call: its ports accept connections at once, but calls
/// are answered only once the store is open and migrated.
pub(crate) async fn answers_calls(url: &str, token: &str) -> Result<()> {
    let mut customers = CustomersClient::new(connect(url, token, None).await?);
    customers
        .list_customers(proto::ListCustomersRequest {})
        .await
        .context("ListCustomers failed")?;
    Ok(())
}

/// UpsertCustomer calls in flight at once while registering: thousands of customers register in
/// seconds instead of one commit's round trip each, in turn.
const REGISTER_CONCURRENCY: usize = 16;

/// Creates (or replaces) the customers `ids`, customer `i` pointing at `webhooks[i % len]` (so
/// several receivers share the customers evenly). Registering them `paused` keeps the dispatcher
/// idle, so a run measures intake alone.
pub(crate) async fn register_customers(
    channel: &AuthedChannel,
    ids: &[String],
    webhooks: &[&str],
    paused: bool,
) -> Result<()> {
    anyhow::ensure!(!webhooks.is_empty(), "no webhook URL to register");
    let customers: Vec<proto::Customer> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| proto::Customer {
            id: id.clone(),
            webhook_url: webhooks[i % webhooks.len()].to_owned(),
            paused,
            // No rate ceiling, a generated secret, the default start tier: the load test
            // measures floodgate's own defaults.
            ..proto::Customer::default()
        })
        .collect();
    upsert_customers(channel, customers).await
}

/// Creates (or replaces) `customers`, [`REGISTER_CONCURRENCY`] calls at a time.
pub(crate) async fn upsert_customers(
    channel: &AuthedChannel,
    customers: Vec<proto::Customer>,
) -> Result<()> {
    let customers = Arc::new(customers);
    let mut workers = JoinSet::new();
    for worker in 0..REGISTER_CONCURRENCY.min(customers.len()) {
        let mut client = CustomersClient::new(channel.clone());
        let customers = customers.clone();
        workers.spawn(async move {
            for customer in customers.iter().skip(worker).step_by(REGISTER_CONCURRENCY) {
                let id = customer.id.clone();
                client
                    .upsert_customer(proto::UpsertCustomerRequest {
                        customer: Some(customer.clone()),
                    })
                    .await
                    .with_context(|| {
                        format!("UpsertCustomer {id} failed (is the token an admin token?)")
                    })?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a registering task panicked")??;
    }
    Ok(())
}
