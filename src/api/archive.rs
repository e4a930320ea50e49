//! The `Archive` service: notifications past the inbox retention, for support staff.

use tonic::{Request, Response, Status};

use super::dispatcher::InboxPage;
use super::proto::archive_server::Archive;
use super::{ApiState, answer, proto};
use crate::error::Error;

pub(super) struct ArchiveService {
    state: ApiState,
}

impl ArchiveService {
    pub(super) fn new(state: ApiState) -> Self {
        Self { state }
    }
}

impl ArchiveService {
    async fn list(
        &self,
        request: Request<proto::ListNotificationsRequest>,
    ) -> Result<proto::ListNotificationsResponse, Error> {
        let ids = self.state.ids();
        let page = InboxPage::parse(ids, request.into_inner())?;
        let notifications = self
            .state
            .store()
            .list_archived(&page.customer_id, &page.recipient, page.before, page.size)
            .await?;
        Ok(page.answer(ids, notifications))
    }
}

#[tonic::async_trait]
impl Archive for ArchiveService {
    async fn list_archived_notifications(
        &self,
        request: Request<proto::ListNotificationsRequest>,
    ) -> Result<Response<proto::ListNotificationsResponse>, Status> {
        answer(self.list(request).await)
    }
}
