//! The `Tokens` service: creating, listing and revoking scoped tokens (admin token only).

use tonic::{Request, Response, Status};

use super::proto::tokens_server::Tokens;
use super::{ApiState, convert, proto};
use crate::error::Error;
use crate::scoped_tokens::TokenRecord;

/// Most customer systems one token may be bound to: a token for more is better an admin's.
const MAX_CUSTOMERS: usize = 1000;

pub(super) struct TokenService {
    state: ApiState,
}

impl TokenService {
    pub(super) fn new(state: ApiState) -> Self {
        Self { state }
    }
}

/// The customers of a `CreateToken`: valid ids, at least one, at most [`MAX_CUSTOMERS`], sorted
/// and without repeats.
fn customer_ids(mut ids: Vec<String>) -> Result<Vec<String>, Error> {
    if ids.is_empty() {
        return Err(Error::invalid(
            "customer_ids",
            "a scoped token needs at least one customer",
        ));
    }
    if ids.len() > MAX_CUSTOMERS {
        return Err(Error::invalid(
            "customer_ids",
            format!(
                "{} customers is over the limit of {MAX_CUSTOMERS}",
                ids.len()
            ),
        ));
    }
    for id in &ids {
        convert::customer_id("customer_ids", id)?;
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn proto_token(record: TokenRecord) -> proto::ScopedToken {
    proto::ScopedToken {
        name: record.name,
        customer_ids: record.customer_ids,
        created_at: Some(convert::timestamp(record.created_at)),
        last_used_at: record.last_used_at.map(convert::timestamp),
    }
}

#[tonic::async_trait]
impl Tokens for TokenService {
    async fn create_token(
        &self,
        request: Request<proto::CreateTokenRequest>,
    ) -> Result<Response<proto::CreateTokenResponse>, Status> {
        let request = request.into_inner();
        convert::customer_id("name", &request.name)?;
        let customers = customer_ids(request.customer_ids)?;
        for customer in &customers {
            self.state.known_customer(customer).await?;
        }
        let created = self
            .state
            .scoped_tokens
            .create(&request.name, customers)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| {
                Error::AlreadyExists(format!("a token named {:?} already exists", request.name))
            })?;
        tracing::info!(
            token = %created.record.name,
            customers = created.record.customer_ids.len(),
            "scoped token created"
        );
        Ok(Response::new(proto::CreateTokenResponse {
            token: created.token.expose().to_owned(),
            scoped_token: Some(proto_token(created.record)),
        }))
    }

    async fn list_tokens(
        &self,
        _request: Request<proto::ListTokensRequest>,
    ) -> Result<Response<proto::ListTokensResponse>, Status> {
        let records = self.state.scoped_tokens.list().await.map_err(Error::from)?;
        Ok(Response::new(proto::ListTokensResponse {
            tokens: records.into_iter().map(proto_token).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<proto::RevokeTokenRequest>,
    ) -> Result<Response<proto::ScopedToken>, Status> {
        let name = request.into_inner().name;
        convert::customer_id("name", &name)?;
        let revoked = self
            .state
            .scoped_tokens
            .revoke(&name)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| Error::NotFound(format!("no token named {name:?}")))?;
        tracing::info!(token = %revoked.name, "scoped token revoked");
        Ok(Response::new(proto_token(revoked)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_lists_are_checked_sorted_and_deduplicated() {
        let ids = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            customer_ids(ids(&["b", "a", "b"])).unwrap(),
            ids(&["a", "b"])
        );
        assert!(customer_ids(Vec::new()).is_err());
        assert!(customer_ids(ids(&["ok", "not ok"])).is_err());
        assert!(customer_ids(vec!["a".into(); MAX_CUSTOMERS + 1]).is_err());
    }
}
