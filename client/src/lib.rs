//! A typed Rust client for floodgate's gRPC API, for services that send notifications.
//!
//! ```no_run
//! use floodgate_client::{Client, proto};
//!
//! # async fn run() -> Result<(), floodgate_client::Error> {
//! let client = Client::builder("127.0.0.1:50051")
//!     .token("fgsub_…")
//!     .connect()
//!     .await?;
//! let accepted = client
//!     .submit(proto::SubmitRequest {
//!         customer_id: "acme".into(),
//!         idempotency_key: "order-1234-shipped".into(),
//!         recipient: "user-42".into(),
//!         payload: br#"{"order":1234}"#.to_vec(),
//!         ..Default::default()
//!     })
//!     .await?;
//! let notification = client.get_notification(&accepted.notification_id).await?;
//! # Ok(()) }
//! ```
//!
//! # What it adds to the generated stubs
//! - **Connecting**: `host:port` (as `floodgate serve` prints it) or an `http://` URL, and the
//!   bearer token on every call ([`BearerToken`]).
//! - **Retries**: a call answered UNAVAILABLE (no connection, a restart, an overloaded store) is
//!   made again after a jittered exponential pause, up to [`RetryPolicy::max_attempts`]. Submits
//!   are retried with the *same* idempotency key, so a retry of a submit whose answer was lost
//!   is accepted once: the server answers `duplicate` with the original id. A submit without a
//!   key gets a random one before the first attempt for the same reason.
//! - **Batches of any size**: [`Client::submit_batch`] splits into calls of at most
//!   [`MAX_BATCH`] items and returns one result per item in input order.
//!
//! - **Scoped tokens**: [`Client::create_token`], [`Client::list_tokens`] and
//!   [`Client::revoke_token`] (admin token), so the one place a token's value is ever shown is a
//!   typed field, and a listing is retried like any read.
//!
//! Every other call (customers, preferences, templates, the archive, cancel, list) is the
//! generated client on the same authenticated connection: [`Client::dispatcher`],
//! [`Client::customers`], [`Client::preferences`], [`Client::templates`], [`Client::archive`],
//! [`Client::tokens`]; wrap one in [`Client::with_retries`] when it should ride out a restart
//! too. Wrapping each in a hand-written method would only repeat the proto's request and response
//! types.
//!
//! # One set of generated types
//! [`proto`] holds the API's messages and clients, compiled from the repository's `proto/` by
//! this crate's build script (pure Rust: no `protoc`). The floodgate server compiles only its
//! service traits and takes the messages from here, so there is one `SubmitRequest` type in any
//! program: the server's own CLI and load-test harness use this crate and pass its messages to
//! the server's conversions without a copy or a clash.
//!
//! # TLS
//! `https://` addresses are accepted, but this crate does not enable tonic's TLS features yet:
//! connect to a plain-text port, or through a local TLS-terminating proxy.

mod address;
mod connect;
mod error;
mod retry;

use std::future::Future;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use connect::{AuthedChannel, BearerToken, ClientBuilder};
pub use error::Error;
pub use retry::RetryPolicy;

use proto::archive_client::ArchiveClient;
use proto::cluster_client::ClusterClient;
use proto::customers_client::CustomersClient;
use proto::dispatcher_client::DispatcherClient;
use proto::preferences_client::PreferencesClient;
use proto::templates_client::TemplatesClient;
use proto::tokens_client::TokensClient;

/// The generated messages and clients of `floodgate.v1` (proto/floodgate/v1/floodgate.proto).
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("floodgate.v1");
}

/// The most items one `SubmitBatch` call may carry; the server rejects larger batches.
pub const MAX_BATCH: usize = 1000;

/// A connection to a floodgate server. Cheap to clone: clones share one HTTP/2 connection, on
/// which calls run concurrently.
#[derive(Debug, Clone)]
pub struct Client {
    channel: AuthedChannel,
    retry: RetryPolicy,
}

impl Client {
    /// Starts describing a connection to `address`: `host:port` (plain text, as `floodgate
    /// serve` prints its gRPC address) or a URL (`http://host:port`).
    pub fn builder(address: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(address.into())
    }

    /// A client on `channel` that sends `token` and retries by `retry`.
    pub(crate) fn new(channel: Channel, token: BearerToken, retry: RetryPolicy) -> Self {
        Self {
            channel: InterceptedService::new(channel, token),
            retry,
        }
    }

    /// The authenticated connection, for generated clients this crate has no accessor for.
    pub fn channel(&self) -> AuthedChannel {
        self.channel.clone()
    }

    /// The retry policy this client was built with.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Submit, read, list and cancel notifications (admin or submit token).
    pub fn dispatcher(&self) -> DispatcherClient<AuthedChannel> {
        DispatcherClient::new(self.channel())
    }

    /// Register, read, pause and resume customer systems; their live figures (admin token).
    pub fn customers(&self) -> CustomersClient<AuthedChannel> {
        CustomersClient::new(self.channel())
    }

    /// Recipients' opt-outs (admin or submit token).
    pub fn preferences(&self) -> PreferencesClient<AuthedChannel> {
        PreferencesClient::new(self.channel())
    }

    /// Customers' versioned templates (admin token).
    pub fn templates(&self) -> TemplatesClient<AuthedChannel> {
        TemplatesClient::new(self.channel())
    }

    /// Notifications past the inbox retention (admin token).
    pub fn archive(&self) -> ArchiveClient<AuthedChannel> {
        ArchiveClient::new(self.channel())
    }

    /// Scoped tokens: create, list, revoke (admin token).
    pub fn tokens(&self) -> TokensClient<AuthedChannel> {
        TokensClient::new(self.channel())
    }

    /// Creates a scoped token `name` for `customer_ids` and returns it with its value
    /// (`token`), which is shown this once and never again. Not retried: a retry after a lost
    /// answer would find the name taken (ALREADY_EXISTS) and the value gone; revoke and create
    /// again instead.
    pub async fn create_token(
        &self,
        name: &str,
        customer_ids: Vec<String>,
    ) -> Result<proto::CreateTokenResponse, Error> {
        let request = proto::CreateTokenRequest {
            name: name.to_owned(),
            customer_ids,
        };
        once("CreateToken", self.tokens().create_token(request).await)
    }

    /// Every scoped token, ordered by name, without their values (retried on UNAVAILABLE).
    pub async fn list_tokens(&self) -> Result<Vec<proto::ScopedToken>, Error> {
        let answer = self
            .with_retries("ListTokens", || async {
                self.tokens().list_tokens(proto::ListTokensRequest {}).await
            })
            .await?;
        Ok(answer.tokens)
    }

    /// The cluster's nodes and bucket owners (admin token; retried on UNAVAILABLE).
    pub async fn cluster_status(&self) -> Result<proto::ClusterStatus, Error> {
        self.with_retries("GetClusterStatus", || async {
            ClusterClient::new(self.channel())
                .get_cluster_status(proto::GetClusterStatusRequest {})
                .await
        })
        .await
    }

    /// Revokes the scoped token `name` and returns it as it was. Not retried: a repeat after a
    /// lost answer would be NOT_FOUND although the revocation took place.
    pub async fn revoke_token(&self, name: &str) -> Result<proto::ScopedToken, Error> {
        let request = proto::RevokeTokenRequest {
            name: name.to_owned(),
        };
        once("RevokeToken", self.tokens().revoke_token(request).await)
    }

    /// Makes `call` (the gRPC method `name`, for errors) until it succeeds, fails with anything
    /// but UNAVAILABLE, or the policy's attempts are used up. Only for calls that are safe to
    /// repeat: reads, and writes that carry their own idempotency (a submit's key).
    ///
    /// ```no_run
    /// # async fn run(client: floodgate_client::Client) -> Result<(), floodgate_client::Error> {
    /// use floodgate_client::proto::ListCustomersRequest;
    /// let customers = client
    ///     .with_retries("ListCustomers", || async {
    ///         client.customers().list_customers(ListCustomersRequest {}).await
    ///     })
    ///     .await?
    ///     .customers;
    /// # Ok(()) }
    /// ```
    pub async fn with_retries<T, F, Fut>(&self, name: &'static str, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut attempts = 1;
        loop {
            match call().await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status)
                    if retry::is_retryable(&status) && attempts < self.retry.max_attempts =>
                {
                    tokio::time::sleep(self.retry.backoff(attempts)).await;
                    attempts += 1;
                }
                Err(status) => {
                    return Err(Error::Status {
                        call: name,
                        attempts,
                        status,
                    });
                }
            }
        }
    }

    /// Submits one notification, retrying UNAVAILABLE with the same idempotency key (an empty
    /// key is replaced by a random one first, so the retries stay safe). Answers once the
    /// notification is stored durably; `duplicate` says the key had already been accepted.
    pub async fn submit(
        &self,
        mut request: proto::SubmitRequest,
    ) -> Result<proto::SubmitResponse, Error> {
        ensure_key(&mut request);
        self.with_retries("Submit", || {
            let mut dispatcher = self.dispatcher();
            let request = request.clone();
            async move { dispatcher.submit(request).await }
        })
        .await
    }

    /// Submits any number of notifications in calls of at most [`MAX_BATCH`], one after the
    /// other, and returns one result per item in input order: `accepted` (with its id) or the
    /// item's own error. One bad item never rejects the others.
    ///
    /// A call answered UNAVAILABLE is retried, and so are single items answered UNAVAILABLE,
    /// always with the same idempotency keys (empty keys are filled with random ones first).
    /// Items still UNAVAILABLE when the attempts run out keep that error in their result. If a
    /// call fails outright, [`Error::Batch`] says how many items were submitted before it.
    pub async fn submit_batch(
        &self,
        mut requests: Vec<proto::SubmitRequest>,
    ) -> Result<Vec<proto::SubmitResult>, Error> {
        requests.iter_mut().for_each(ensure_key);
        let total = requests.len();
        let mut results = Vec::with_capacity(total);
        for chunk in requests.chunks(MAX_BATCH) {
            match self.submit_chunk(chunk).await {
                Ok(chunk_results) => results.extend(chunk_results),
                Err(source) => {
                    return Err(Error::Batch {
                        accepted: results.len(),
                        total,
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(results)
    }

    /// One chunk: whole-call UNAVAILABLE and per-item UNAVAILABLE both retried, only the items
    /// that need it resent.
    async fn submit_chunk(
        &self,
        chunk: &[proto::SubmitRequest],
    ) -> Result<Vec<proto::SubmitResult>, Error> {
        let mut results = vec![proto::SubmitResult::default(); chunk.len()];
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        let mut attempts = 1;
        loop {
            let requests = pending.iter().map(|&i| chunk[i].clone()).collect();
            match self
                .dispatcher()
                .submit_batch(proto::SubmitBatchRequest { requests })
                .await
            {
                Ok(answer) => {
                    let answer = answer.into_inner().results;
                    if answer.len() != pending.len() {
                        return Err(Error::Status {
                            call: "SubmitBatch",
                            attempts,
                            status: tonic::Status::internal(format!(
                                "{} results for {} items",
                                answer.len(),
                                pending.len()
                            )),
                        });
                    }
                    for (&slot, result) in pending.iter().zip(answer) {
                        results[slot] = result;
                    }
                    pending.retain(|&slot| item_unavailable(&results[slot]));
                    if pending.is_empty() || attempts >= self.retry.max_attempts {
                        return Ok(results);
                    }
                }
                Err(status)
                    if retry::is_retryable(&status) && attempts < self.retry.max_attempts => {}
                Err(status) => {
                    return Err(Error::Status {
                        call: "SubmitBatch",
                        attempts,
                        status,
                    });
                }
            }
            tokio::time::sleep(self.retry.backoff(attempts)).await;
            attempts += 1;
        }
    }

    /// One notification's current state (retried on UNAVAILABLE: a read is safe to repeat).
    pub async fn get_notification(&self, id: &str) -> Result<proto::Notification, Error> {
        let request = proto::GetNotificationRequest {
            notification_id: id.to_owned(),
        };
        self.with_retries("GetNotification", || {
            let mut dispatcher = self.dispatcher();
            let request = request.clone();
            async move { dispatcher.get_notification(request).await }
        })
        .await
    }
}

/// The answer of a call made once, its failure as an [`Error::Status`].
fn once<T>(
    name: &'static str,
    answer: Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, Error> {
    answer
        .map(tonic::Response::into_inner)
        .map_err(|status| Error::Status {
            call: name,
            attempts: 1,
            status,
        })
}

/// Gives a keyless request a random key, so that retrying it cannot store it twice.
fn ensure_key(request: &mut proto::SubmitRequest) {
    if request.idempotency_key.is_empty() {
        request.idempotency_key = format!("fgc-{:032x}", rand::random::<u128>());
    }
}

/// Whether a batch item was refused only for now (the server could not store it yet).
fn item_unavailable(result: &proto::SubmitResult) -> bool {
    matches!(
        &result.outcome,
        Some(proto::submit_result::Outcome::Error(error)) if error.code == tonic::Code::Unavailable as i32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyless_requests_get_a_key_and_keys_are_kept() {
        let mut keyless = proto::SubmitRequest::default();
        ensure_key(&mut keyless);
        assert!(keyless.idempotency_key.starts_with("fgc-"));
        let mut other = proto::SubmitRequest::default();
        ensure_key(&mut other);
        assert_ne!(keyless.idempotency_key, other.idempotency_key);
        let mut keyed = proto::SubmitRequest {
            idempotency_key: "mine".into(),
            ..Default::default()
        };
        ensure_key(&mut keyed);
        assert_eq!(keyed.idempotency_key, "mine");
    }

    #[test]
    fn a_builder_never_shows_its_secrets() {
        let builder = Client::builder("https://floodgate.internal:50051")
            .token("fgadm_secret-token")
            .tls_identity_pem("CERT", "PRIVATE-KEY-BYTES");
        let shown = format!("{builder:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(!shown.contains("PRIVATE-KEY-BYTES"), "{shown}");
        assert!(shown.contains("floodgate.internal"), "{shown}");
    }

    #[test]
    fn only_unavailable_items_are_resent() {
        let error = |code: tonic::Code| proto::SubmitResult {
            outcome: Some(proto::submit_result::Outcome::Error(proto::ItemError {
                code: code as i32,
                message: String::new(),
            })),
        };
        assert!(item_unavailable(&error(tonic::Code::Unavailable)));
        assert!(!item_unavailable(&error(tonic::Code::InvalidArgument)));
        let accepted = proto::SubmitResult {
            outcome: Some(proto::submit_result::Outcome::Accepted(
                proto::SubmitResponse::default(),
            )),
        };
        assert!(!item_unavailable(&accepted));
    }
}
