//! The `Customers` service: registering customer systems and their delivery settings.

use tonic::{Request, Response, Status};

use super::proto;
use super::proto::customers_server::Customers;
use super::{ApiState, channels, convert, targets};
use crate::error::Error;
use std::collections::HashMap;

use crate::dispatch::CustomerStats;
use crate::model::{Customer, PreviousSecret, now_millis};
use crate::sink::signature;

pub(super) struct CustomerService {
    state: ApiState,
}

impl CustomerService {
    pub(super) fn new(state: ApiState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Customers for CustomerService {
    async fn upsert_customer(
        &self,
        request: Request<proto::UpsertCustomerRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        let mut customer = convert::customer(request.into_inner().customer)?;
        let existing = self
            .state
            .store
            .get_customer(&customer.id)
            .await
            .map_err(Error::from)?;
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
        channels::check_plaintext_auth(&customer.channels, self.state.allow_plaintext_smtp_auth)?;
        targets::check(&self.state.target_policy, &customer)?;
        Ok(Response::new(self.save(customer, new_secret).await?))
    }

    async fn get_customer(
        &self,
        request: Request<proto::GetCustomerRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        let id = request.into_inner().customer_id;
        convert::customer_id("customer_id", &id)?;
        let customer = self
            .state
            .store
            .get_customer(&id)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| Error::NotFound(format!("customer {id:?} not found")))?;
        Ok(Response::new(customer.into()))
    }

    async fn list_customers(
        &self,
        _request: Request<proto::ListCustomersRequest>,
    ) -> Result<Response<proto::ListCustomersResponse>, Status> {
        let customers = self
            .state
            .store
            .list_customers()
            .await
            .map_err(Error::from)?;
        Ok(Response::new(proto::ListCustomersResponse {
            customers: customers.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_customer_stats(
        &self,
        request: Request<proto::GetCustomerStatsRequest>,
    ) -> Result<Response<proto::CustomerStats>, Status> {
        let customer = self.existing(&request.into_inner().customer_id).await?;
        Ok(Response::new(self.stats_of(&customer).await?))
    }

    async fn list_customer_stats(
        &self,
        _request: Request<proto::ListCustomerStatsRequest>,
    ) -> Result<Response<proto::ListCustomerStatsResponse>, Status> {
        let customers = self
            .state
            .store
            .list_customers()
            .await
            .map_err(Error::from)?;
        let mut live: HashMap<String, CustomerStats> = self
            .state
            .dispatcher
            .all_stats()
            .await
            .into_iter()
            .map(|s| (s.customer_id.clone(), s))
            .collect();
        let owners = super::cluster::owners(&self.state).await?;
        let mut stats = Vec::with_capacity(customers.len());
        for customer in &customers {
            let backlog = self
                .state
                .store
                .backlog(&customer.id)
                .await
                .map_err(Error::from)?;
            let mut one = convert::customer_stats(customer, live.remove(&customer.id), backlog);
            one.owner_node = owner_of(&owners, &customer.id);
            stats.push(one);
        }
        Ok(Response::new(proto::ListCustomerStatsResponse { stats }))
    }

    async fn pause_customer(
        &self,
        request: Request<proto::PauseCustomerRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        let mut customer = self.existing(&request.into_inner().customer_id).await?;
        customer.paused = true;
        Ok(Response::new(self.save(customer, None).await?))
    }

    async fn resume_customer(
        &self,
        request: Request<proto::ResumeCustomerRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        let mut customer = self.existing(&request.into_inner().customer_id).await?;
        customer.paused = false;
        Ok(Response::new(self.save(customer, None).await?))
    }

    async fn rotate_signing_secret(
        &self,
        request: Request<proto::RotateSigningSecretRequest>,
    ) -> Result<Response<proto::Customer>, Status> {
        let request = request.into_inner();
        let overlap = overlap_millis(request.overlap_seconds)?;
        let mut customer = self.existing(&request.customer_id).await?;
        let new_secret = signature::generate_secret();
        let old = std::mem::replace(&mut customer.signing_secret, new_secret.clone());
        customer.previous_secret = Some(PreviousSecret {
            secret: old,
            until: now_millis().saturating_add(overlap),
        });
        tracing::info!(customer_id = %customer.id, overlap_seconds = overlap / 1000, "signing secret rotated");
        Ok(Response::new(self.save(customer, Some(new_secret)).await?))
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
    /// A registered customer, or `NOT_FOUND`.
    async fn existing(&self, id: &str) -> Result<Customer, Error> {
        convert::customer_id("customer_id", id)?;
        self.state
            .store
            .get_customer(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("customer {id:?} not found")))
    }

    /// Stores the settings, then tells this node's directory and the customer's actor at once.
    /// Answers the customer as reads do, plus `new_secret`: the signing secret this call made,
    /// shown this once.
    async fn save(
        &self,
        customer: Customer,
        new_secret: Option<String>,
    ) -> Result<proto::Customer, Error> {
        self.state
            .store
            .upsert_customer(&customer, now_millis())
            .await?;
        tracing::info!(
            customer_id = %customer.id,
            paused = customer.paused,
            max_rate_per_sec = customer.max_rate_per_sec,
            "customer saved"
        );
        let customer = self.state.directory.put(customer);
        self.state.dispatcher.customer_updated(customer.clone());
        let mut answer: proto::Customer = customer.as_ref().clone().into();
        answer.signing_secret = new_secret.unwrap_or_default();
        Ok(answer)
    }

    async fn stats_of(&self, customer: &Customer) -> Result<proto::CustomerStats, Error> {
        let live = self.state.dispatcher.stats(&customer.id).await;
        let backlog = self.state.store.backlog(&customer.id).await?;
        let mut stats = convert::customer_stats(customer, live, backlog);
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
