//! What the services share, behind methods: handlers reach the store, intake and the rest only
//! through [`ApiState`], and look customers up through one function.

use std::sync::Arc;
use std::time::Duration;

use super::auth::Tokens;
use super::convert;
use super::quota::BacklogQuota;
use crate::directory::CustomerDirectory;
use crate::dispatch::Dispatcher;
use crate::error::Error;
use crate::intake::Intake;
use crate::model::Customer;
use crate::preferences::Preferences;
use crate::public_id::PublicIds;
use crate::scoped_tokens::ScopedTokens;
use crate::sink::target_policy::TargetPolicy;
use crate::store::Store;
use crate::telemetry::metrics::Metrics;
use crate::templates::Templates;

/// What the API is built from (see [`ApiState::new`]).
#[derive(Debug)]
pub struct ApiParts {
    pub store: Store,
    /// Pins templates, applies the idempotency fast path and group-commits submits.
    pub intake: Intake,
    /// Cached customer settings, which submits check the customer against.
    pub directory: Arc<CustomerDirectory>,
    pub dispatcher: Dispatcher,
    pub tokens: Tokens,
    /// The scoped tokens (also inside `tokens`), which the `Tokens` service creates and revokes.
    pub scoped_tokens: Arc<ScopedTokens>,
    /// Intake counters and submit latency.
    pub metrics: Arc<Metrics>,
    /// Opt-out preferences, which the `Preferences` service sets.
    pub preferences: Arc<Preferences>,
    /// Versioned templates, which the `Templates` service saves.
    pub templates: Arc<Templates>,
    /// Which addresses deliveries may reach, checked again at upsert for IP-literal targets.
    pub target_policy: Arc<TargetPolicy>,
    /// The per-customer backlog quota.
    pub backlog_quota: Arc<BacklogQuota>,
    /// Turns row ids into the notification ids callers see, and back.
    pub ids: PublicIds,
    pub limits: ApiLimits,
}

/// The operator's limits and switches for the API (from `serve`'s flags).
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Whether SMTP may authenticate over plain text (`--allow-plaintext-smtp-auth`).
    pub allow_plaintext_smtp_auth: bool,
    /// Whether gRPC server reflection is served (`--grpc-reflection`).
    pub grpc_reflection: bool,
    /// How far back `ListNotifications` reaches.
    pub inbox_retention: Duration,
    /// Largest accepted payload, in bytes.
    pub max_payload_bytes: usize,
    /// Largest accepted gRPC message, in bytes (tonic answers OUT_OF_RANGE above it).
    pub max_message_bytes: usize,
    /// How far ahead `send_at` and `expires_at` may lie.
    pub max_schedule_ahead: Duration,
}

/// What the services share; cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiState {
    parts: Arc<ApiParts>,
}

/// Where a customer lookup reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// This node's directory: cheap, and what intake and the delivery path use. Settings
    /// changed through another node arrive within its refresh time.
    Cached,
    /// The store now: the admin's `Customers` service reads and writes settings, and must not
    /// act on a copy another node has since changed.
    Stored,
}

impl ApiState {
    /// The shared state of the services built from `parts`.
    pub fn new(parts: ApiParts) -> Self {
        Self {
            parts: Arc::new(parts),
        }
    }

    pub(super) fn store(&self) -> &Store {
        &self.parts.store
    }

    pub(super) fn intake(&self) -> &Intake {
        &self.parts.intake
    }

    pub(super) fn dispatcher(&self) -> &Dispatcher {
        &self.parts.dispatcher
    }

    pub(super) fn tokens(&self) -> &Tokens {
        &self.parts.tokens
    }

    pub(super) fn scoped_tokens(&self) -> &ScopedTokens {
        &self.parts.scoped_tokens
    }

    pub(super) fn metrics(&self) -> &Metrics {
        &self.parts.metrics
    }

    pub(super) fn preferences(&self) -> &Preferences {
        &self.parts.preferences
    }

    pub(super) fn templates(&self) -> &Templates {
        &self.parts.templates
    }

    pub(super) fn target_policy(&self) -> &TargetPolicy {
        &self.parts.target_policy
    }

    pub(super) fn ids(&self) -> &PublicIds {
        &self.parts.ids
    }

    pub(super) fn limits(&self) -> &ApiLimits {
        &self.parts.limits
    }

    /// The customer `customer_id` names, or NOT_FOUND (INVALID_ARGUMENT when it is not an id).
    /// Every lookup of a customer a call names goes through here, so each answers alike.
    pub(super) async fn customer(
        &self,
        customer_id: &str,
        read: Read,
    ) -> Result<Arc<Customer>, Error> {
        convert::customer_id("customer_id", customer_id)?;
        self.find_customer(customer_id, read)
            .await?
            .ok_or_else(|| unknown_customer(customer_id))
    }

    /// The customer, if registered (`customer_id` is already checked to be an id).
    pub(super) async fn find_customer(
        &self,
        customer_id: &str,
        read: Read,
    ) -> Result<Option<Arc<Customer>>, Error> {
        Ok(match read {
            Read::Cached => self.parts.directory.get(customer_id).await?,
            Read::Stored => self
                .parts
                .store
                .get_customer(customer_id)
                .await?
                .map(Arc::new),
        })
    }

    /// Records settings just stored: this node's directory and the customer's actor use them
    /// at once. A customer registered by this call (`new`) has nothing stored to send, so no
    /// actor is woken for it: its first notification starts one. (Waking it started an idle
    /// actor per registration, 10,000 of them for a bulk registration of 10,000 customers.)
    pub(super) fn customer_saved(&self, customer: Customer, new: bool) -> Arc<Customer> {
        let customer = self.parts.directory.put(customer);
        if !new {
            self.parts.dispatcher.customer_updated(customer.clone());
        }
        customer
    }

    /// Counts one more notification against the customer's backlog quota, or refuses it
    /// (RESOURCE_EXHAUSTED, counted in the metrics).
    pub(super) async fn within_quota(&self, customer_id: &str) -> Result<(), Error> {
        let admitted = self
            .parts
            .backlog_quota
            .admit(&self.parts.store, customer_id)
            .await;
        if let Err(Error::ResourceExhausted(_)) = &admitted {
            self.parts.metrics.over_quota(customer_id);
        }
        admitted
    }
}

/// The answer about a customer that does not exist, or that a scoped token may not see: the
/// same, so the two cannot be told apart.
pub(super) fn unknown_customer(customer_id: &str) -> Error {
    Error::NotFound(format!("customer {customer_id:?} not found"))
}
