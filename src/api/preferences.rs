//! The `Preferences` service: recipients' opt-outs, which intake applies to every notification.

use tonic::{Request, Response, Status};

use super::proto::preferences_server::Preferences;
use super::state::Read;
use super::{ApiState, Scope, answer, convert, proto};
use crate::error::Error;

pub(super) struct PreferenceService {
    state: ApiState,
}

impl PreferenceService {
    pub(super) fn new(state: ApiState) -> Self {
        Self { state }
    }
}

impl PreferenceService {
    async fn set(
        &self,
        request: Request<proto::SetPreferenceRequest>,
    ) -> Result<proto::Preference, Error> {
        let scope = Scope::of(&request)?;
        let (customer_id, recipient, choice) =
            convert::preference(request.into_inner().preference)?;
        scope.admit(&customer_id)?;
        self.state.customer(&customer_id, Read::Cached).await?;
        let set = self
            .state
            .preferences()
            .set(&customer_id, &recipient, &choice)
            .await?;
        tracing::info!(
            customer_id = %customer_id,
            channel = choice.channel.as_str(),
            lane = choice.lane.map_or("all", |lane| lane.as_str()),
            opted_out = choice.opted_out,
            "preference set"
        );
        let saved = set
            .preferences
            .iter()
            .find(|p| p.channel == choice.channel && p.lane == choice.lane)
            .ok_or(Error::Internal)?;
        Ok(convert::proto_preference(&customer_id, &recipient, saved))
    }

    async fn get(
        &self,
        request: Request<proto::GetPreferencesRequest>,
    ) -> Result<proto::GetPreferencesResponse, Error> {
        let scope = Scope::of(&request)?;
        let request = request.into_inner();
        convert::customer_id("customer_id", &request.customer_id)?;
        convert::key("recipient", &request.recipient)?;
        scope.admit(&request.customer_id)?;
        self.state
            .customer(&request.customer_id, Read::Cached)
            .await?;
        let set = self
            .state
            .preferences()
            .get(&request.customer_id, &request.recipient)
            .await?;
        let preferences = set
            .preferences
            .iter()
            .map(|p| convert::proto_preference(&request.customer_id, &request.recipient, p))
            .collect();
        Ok(proto::GetPreferencesResponse { preferences })
    }
}

#[tonic::async_trait]
impl Preferences for PreferenceService {
    #[tracing::instrument(skip_all)]
    async fn set_preference(
        &self,
        request: Request<proto::SetPreferenceRequest>,
    ) -> Result<Response<proto::Preference>, Status> {
        answer(self.set(request).await)
    }

    async fn get_preferences(
        &self,
        request: Request<proto::GetPreferencesRequest>,
    ) -> Result<Response<proto::GetPreferencesResponse>, Status> {
        answer(self.get(request).await)
    }
}
