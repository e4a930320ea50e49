//! The `Tokens` service: creating, listing and revoking scoped tokens (admin token only).

use tonic::{Request, Response, Status};

use super::proto::tokens_server::Tokens;
use super::state::Read;
use super::{ApiState, answer, convert, proto};
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

impl TokenService {
    async fn create(
        &self,
        request: proto::CreateTokenRequest,
    ) -> Result<proto::CreateTokenResponse, Error> {
        convert::customer_id("name", &request.name)?;
        let customers = customer_ids(request.customer_ids)?;
        for customer in &customers {
            self.state.customer(customer, Read::Cached).await?;
        }
        let created = self
            .state
            .scoped_tokens()
            .create(&request.name, customers)
            .await?
            .ok_or_else(|| {
                Error::AlreadyExists(format!("a token named {:?} already exists", request.name))
            })?;
        tracing::info!(
            token = %created.record.name,
            customers = created.record.customer_ids.len(),
            "scoped token created"
        );
        Ok(proto::CreateTokenResponse {
            token: created.token.expose().to_owned(),
            scoped_token: Some(proto_token(created.record)),
        })
    }

    async fn list(&self) -> Result<proto::ListTokensResponse, Error> {
        let records = self.state.scoped_tokens().list().await?;
        Ok(proto::ListTokensResponse {
            tokens: records.into_iter().map(proto_token).collect(),
        })
    }

    async fn revoke(&self, name: String) -> Result<proto::ScopedToken, Error> {
        convert::customer_id("name", &name)?;
        let revoked = self
            .state
            .scoped_tokens()
            .revoke(&name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no token named {name:?}")))?;
        tracing::info!(token = %revoked.name, "scoped token revoked");
        Ok(proto_token(revoked))
    }
}

#[tonic::async_trait]
impl Tokens for TokenService {
    async fn create_token(
        &self,
        request: Request<proto::CreateTokenRequest>,
    ) -> Result<Response<proto::CreateTokenResponse>, Status> {
        answer(self.create(request.into_inner()).await)
    }

    async fn list_tokens(
        &self,
        _request: Request<proto::ListTokensRequest>,
    ) -> Result<Response<proto::ListTokensResponse>, Status> {
        answer(self.list().await)
    }

    async fn revoke_token(
        &self,
        request: Request<proto::RevokeTokenRequest>,
    ) -> Result<Response<proto::ScopedToken>, Status> {
        answer(self.revoke(request.into_inner().name).await)
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
