//! The `Customers` service: registering customer systems and their delivery settings.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto;
use super::proto::customers_server::Customers;
use super::state::Read;
use super::{ApiState, answer, channels, convert, targets};
use crate::dispatch::CustomerStats;
use crate::error::Error;
use crate::model::{Customer, PreviousSecret, now_millis};
use crate::sink::signature;

pub(super) struct CustomerService {
    state: ApiState,
}

impl CustomerService {
    pub(super) fn new(state: ApiState) -> Self {
        Self { state }
    }

    async fn upsert(&self, customer: Option<proto::Customer>) -> Result<proto::Customer, Error> {
        let mut customer = convert::customer(customer)?;
        let existing = self.state.find_customer(&customer.id, Read::Stored).await?;
        if customer.signing_secret.is_empty() {
            // Keep the secret the customer already verifies with; generate one for a new customer.
            customer.signing_secret = existing
                .as_ref()
                .map_or_else(signature::generate_secret, |c| c.signing_secret.clone());
        }
        // The answer shows the secret only when this call made it the customer's secret.
        let new_secret = existing
            .as_ref()
            .is_none_or(|c| c.signing_secret != customer.signing_secret)
            .then(|| customer.signing_secret.clone());
        // A rotation under way survives an upsert that keeps the secret; setting a secret by hand
        // ends it, since the caller has chosen exactly which secret receivers must know.
        customer.previous_secret = existing
            .as_ref()
            .filter(|c| c.signing_secret == customer.signing_secret)
            .and_then(|c| c.previous_secret.clone());
        // Reads never return provider secrets: an empty one keeps what is stored.
        if let Some(existing) = &existing {
            channels::keep_secrets(&mut customer.channels, &existing.channels)?;
        }
        channels::require_secrets(&customer.channels)?;
        channels::check_plaintext_auth(
            &customer.channels,
            self.state.limits().allow_plaintext_smtp_auth,
        )?;
        targets::check(self.state.target_policy(), &customer)?;
        self.save(customer, new_secret, existing.is_none()).await
    }

    /// Every customer's figures, with the node owning each.
    async fn all_stats(&self) -> Result<proto::ListCustomerStatsResponse, Error> {
        let store = self.state.store();
        let customers = store.list_customers().await?;
        let mut live: HashMap<String, CustomerStats> = self
            .state
            .dispatcher()
            .all_stats()
            .await
            .into_iter()
            .map(|s| (s.customer_id.clone(), s))
            .collect();
        let owners = super::cluster::owners(&self.state).await?;
        let mut stats = Vec::with_capacity(customers.len());
        for customer in &customers {
            let backlog = store.backlog(&customer.id).await?;
            let mut one = convert::customer_stats(customer, live.remove(&customer.id), backlog);
            one.owner_node = owner_of(&owners, &customer.id);
            stats.push(one);
        }
        Ok(proto::ListCustomerStatsResponse { stats })
    }

    /// Pauses or resumes the customer's deliveries.
    async fn set_paused(&self, customer_id: &str, paused: bool) -> Result<proto::Customer, Error> {
        let mut customer = self.existing(customer_id).await?;
        customer.paused = paused;
        self.save(customer, None, false).await
    }

    async fn rotate(
        &self,
        request: proto::RotateSigningSecretRequest,
    ) -> Result<proto::Customer, Error> {
        let overlap = overlap_millis(request.overlap_seconds)?;
        let mut customer = self.existing(&request.customer_id).await?;
        let new_secret = signature::generate_secret();
        let old = std::mem::replace(&mut customer.signing_secret, new_secret.clone());
        customer.previous_secret = Some(PreviousSecret {
            secret: old,
            until: now_millis().saturating_add(overlap),
        });
        tracing::info!(customer_id = %customer.id, overlap_seconds = overlap / 1000, "signing secret rotated");
        self.save(customer, Some(new_secret), false).await
    }
}

#[tonic::async_trait]
impl Customers for CustomerService {
    async fn upsert_customer(
        &self,
        request: Request<proto::UpsertCustomerRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        answer(self.upsert(request.into_inner().customer).await)
    }

    async fn get_customer(
        &self,
        request: Request<proto::GetCustomerRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        let customer = self.existing(&request.into_inner().customer_id).await;
        answer(customer.map(Into::into))
    }

    async fn list_customers(
        &self,
        _request: Request<proto::ListCustomersRequest>,
    ) -> Result<Response<proto::ListCustomersResponse>, Status> {
        let customers = self
            .state
            .store()
            .list_customers()
            .await
            .map_err(Error::from);
        answer(customers.map(|customers| proto::ListCustomersResponse {
            customers: customers.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_customer_stats(
        &self,
        request: Request<proto::GetCustomerStatsRequest>,
    ) -> Result<Response<proto::CustomerStats>, Status> {
        answer(self.stats_of(&request.into_inner().customer_id).await)
    }

    async fn list_customer_stats(
        &self,
        _request: Request<proto::ListCustomerStatsRequest>,
    ) -> Result<Response<proto::ListCustomerStatsResponse>, Status> {
        answer(self.all_stats().await)
    }

    async fn pause_customer(
        &self,
        request: Request<proto::PauseCustomerRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        answer(
            self.set_paused(&request.into_inner().customer_id, true)
                .await,
        )
    }

    async fn resume_customer(
        &self,
        request: Request<proto::ResumeCustomerRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        answer(
            self.set_paused(&request.into_inner().customer_id, false)
                .await,
        )
    }

    async fn rotate_signing_secret(
        &self,
        request: Request<proto::RotateSigningSecretRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        answer(self.rotate(request.into_inner()).await)
    }
}

/// How long a replaced signing secret keeps signing when the request does not say: a day lets
/// receivers deployed once a day pick up the new secret.
const DEFAULT_OVERLAP_SECONDS: u32 = 24 * 60 * 60;
/// The longest overlap: a leaked secret being rotated out should not stay valid for months.
const MAX_OVERLAP_SECONDS: u32 = 30 * 24 * 60 * 60;

/// The overlap of a rotation in milliseconds (0 means the default), or `INVALID_ARGUMENT`.
fn overlap_millis(overlap_seconds: u32) -> Result<i64, Error> {
    let seconds = match overlap_seconds {
        0 => DEFAULT_OVERLAP_SECONDS,
        s if s > MAX_OVERLAP_SECONDS => {
            return Err(Error::invalid(
                "overlap_seconds",
                format!("must be at most {MAX_OVERLAP_SECONDS} (30 days)"),
            ));
        }
        s => s,
    };
    Ok(i64::from(seconds) * 1000)
}

impl CustomerService {
    /// A registered customer, read from the store, or `NOT_FOUND`.
    async fn existing(&self, id: &str) -> Result<Customer, Error> {
        let customer = self.state.customer(id, Read::Stored).await?;
        Ok(Arc::unwrap_or_clone(customer))
    }

    /// Stores the settings, then tells this node's directory and, unless the customer is `new`
    /// (registered by this call), its actor at once. Answers the customer as reads do, plus
    /// `new_secret`: the signing secret this call made, shown this once.
    async fn save(
        &self,
        customer: Customer,
        new_secret: Option<String>,
        new: bool,
    ) -> Result<proto::Customer, Error> {
        self.state
            .store()
            .upsert_customer(&customer, now_millis())
            .await?;
        tracing::info!(
            customer_id = %customer.id,
            paused = customer.paused,
            max_rate_per_sec = customer.max_rate_per_sec,
            "customer saved"
        );
        let customer = self.state.customer_saved(customer, new);
        let mut answer: proto::Customer = customer.as_ref().clone().into();
        answer.signing_secret = new_secret.unwrap_or_default();
        Ok(answer)
    }

    /// One customer's figures, with the node owning it.
    async fn stats_of(&self, customer_id: &str) -> Result<proto::CustomerStats, Error> {
        let customer = self.existing(customer_id).await?;
        let live = self.state.dispatcher().stats(&customer.id).await;
        let backlog = self.state.store().backlog(&customer.id).await?;
        let mut stats = convert::customer_stats(&customer, live, backlog);
        stats.owner_node = super::cluster::owner_of(&self.state, &customer.id).await?;
        Ok(stats)
    }
}

/// The node owning the customer's bucket, or empty (a single node, or no owner right now).
fn owner_of(owners: &HashMap<u16, String>, customer_id: &str) -> String {
    owners
        .get(&crate::cluster::buckets::bucket_of(customer_id))
        .cloned()
        .unwrap_or_default()
}
