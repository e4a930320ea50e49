//! Talking to floodgate as any service does: gRPC connections carrying the bearer token, and the
//! customer registration every experiment starts with.

use std::time::Duration;

use anyhow::{Context as _, Result};
use floodgate::api::proto;
use floodgate::api::proto::customers_client::CustomersClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Longest a single call may take before it counts as a `DeadlineExceeded` error: long enough
/// never to cut off a merely slow server, short enough that a stalled one ends the run.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A channel that adds `authorization: Bearer <token>` to every call.
pub(crate) type AuthedChannel = InterceptedService<Channel, Bearer>;

/// Attaches the bearer token. A named type rather than a boxed closure (as `floodgate::client`
/// uses) so the channel type can be cloned into every caller without dynamic dispatch.
#[derive(Debug, Clone)]
pub(crate) struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Opens one HTTP/2 connection to `url`. Clones of the result share that connection.
pub(crate) async fn connect(url: &str, token: &str) -> Result<AuthedChannel> {
    let header: MetadataValue<Ascii> = format!("Bearer {token}")
        .parse()
        .context("the token is not valid in a header")?;
    let channel = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid server address {url:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    Ok(InterceptedService::new(channel, Bearer(header)))
}

/// Creates (or replaces) the customers `ids`, all pointing at `webhook_url`. Registering them
/// `paused` keeps the dispatcher idle, so a run measures intake alone.
pub(crate) async fn register_customers(
    channel: &AuthedChannel,
    ids: &[String],
    webhook_url: &str,
    paused: bool,
) -> Result<()> {
    let mut customers = CustomersClient::new(channel.clone());
    for id in ids {
        let customer = proto::Customer {
            id: id.clone(),
            webhook_url: webhook_url.to_owned(),
            paused,
            // No rate ceiling, a generated secret, the default start tier: the load test
            // measures floodgate's own defaults.
            ..proto::Customer::default()
        };
        customers
            .upsert_customer(proto::UpsertCustomerRequest {
                customer: Some(customer),
            })
            .await
            .with_context(|| {
                format!("UpsertCustomer {id} failed (is the token an admin token?)")
            })?;
    }
    Ok(())
}
