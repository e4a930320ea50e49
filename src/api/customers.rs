//! The `Customers` service: registering customer systems and their delivery settings.

use tonic::{Request, Response, Status};

use super::proto;
use super::proto::customers_server::Customers;
use super::{ApiState, convert};
use crate::error::Error;
use crate::model::now_millis;
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
        if customer.signing_secret.is_empty() {
            // Keep the secret the customer already verifies with; generate one for a new customer.
            let existing = self
                .state
                .store
                .get_customer(&customer.id)
                .await
                .map_err(Error::from)?;
            customer.signing_secret =
                existing.map_or_else(signature::generate_secret, |c| c.signing_secret);
        }
        self.state
            .store
            .upsert_customer(&customer, now_millis())
            .await
            .map_err(Error::from)?;
        tracing::info!(customer_id = %customer.id, paused = customer.paused, max_rate_per_sec = customer.max_rate_per_sec, "customer saved");
        let customer = self.state.directory.put(customer);
        if !customer.paused {
            // It may have been resumed, or re-pointed at a working URL: let queued work move.
            self.state.dispatcher.wake(&customer.id);
        }
        Ok(Response::new(customer.as_ref().clone().into()))
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
}
