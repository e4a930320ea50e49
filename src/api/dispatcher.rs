//! The `Dispatcher` service: submit, batch submit, and reading notifications back.

use std::time::Instant;

use tonic::{Request, Response, Status};

use super::proto::dispatcher_server::Dispatcher;
use super::proto::{self, submit_result};
use super::state::Read;
use super::{ApiState, Scope, answer, channels, convert, quota};
use crate::error::Error;
use crate::intake::Pins;
use crate::model::{Inserted, NewNotification, Notification, NotificationId, State, now_millis};
use crate::public_id::PublicIds;
use crate::telemetry::metrics::{Metrics, SubmitRpc};

/// Most items in one `SubmitBatch`.
pub(super) const MAX_BATCH: usize = 1000;
/// Inbox page size when the caller gives none, and the most it may ask for.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

pub(super) struct DispatchService {
    state: ApiState,
}

impl DispatchService {
    pub(super) fn new(state: ApiState) -> Self {
        Self { state }
    }

    /// Validates one request, checks that its customer exists (and is in the caller's `scope`)
    /// and can take its channel, and has intake pin a templated one to the template's latest
    /// version (`pins` keeps the versions a batch already looked up).
    async fn admit(
        &self,
        request: proto::SubmitRequest,
        scope: &Scope,
        pins: &mut Pins<'_>,
    ) -> Result<NewNotification, Error> {
        let now = now_millis();
        let limits = self.state.limits();
        let mut notification = convert::new_notification(request, limits.max_payload_bytes, now)?;
        quota::within_horizon(&notification, limits.max_schedule_ahead, now)?;
        // Where an unknown customer is refused, and with the same answer.
        scope.admit(&notification.customer_id)?;
        let customer = self
            .state
            .customer(&notification.customer_id, Read::Cached)
            .await?;
        // A channel the customer cannot use is the first thing to fix, before its content.
        channels::check_configured(&customer, notification.channel)?;
        // A templated notification's content is what its template renders.
        let rendered = pins.pin(&mut notification).await?;
        channels::check_content(
            notification.channel,
            &notification.recipient,
            rendered.as_deref().unwrap_or(&notification.payload),
        )?;
        // Last: only a notification that would be stored counts against the quota.
        self.state.within_quota(&notification.customer_id).await?;
        Ok(notification)
    }

    /// One `Submit`, timed and counted. A call without its scope is refused before either.
    async fn submit_counted(
        &self,
        request: Request<proto::SubmitRequest>,
    ) -> Result<proto::SubmitResponse, Error> {
        let started = Instant::now();
        let scope = Scope::of(&request)?;
        let result = self.submit_one(request.into_inner(), &scope).await;
        let metrics = self.state.metrics();
        metrics.submit_latency(SubmitRpc::Submit, started.elapsed());
        match &result {
            Ok(answer) => {
                tracing::Span::current().record("notification_id", answer.notification_id.as_str());
                metrics.accepted(u64::from(!answer.duplicate), u64::from(answer.duplicate))
            }
            Err(err) => metrics.rejected(err.code(), 1),
        }
        result
    }

    /// One `Submit`: admitted, stored, answered.
    async fn submit_one(
        &self,
        request: proto::SubmitRequest,
        scope: &Scope,
    ) -> Result<proto::SubmitResponse, Error> {
        let intake = self.state.intake();
        let notification = self.admit(request, scope, &mut intake.pins()).await?;
        let results = intake.submit(vec![notification]).await?;
        let inserted = results.into_iter().next().ok_or(Error::Internal)?;
        response(self.state.ids(), inserted)
    }

    /// One `SubmitBatch`, timed and counted. A call without its scope is refused before either.
    async fn submit_batch_counted(
        &self,
        request: Request<proto::SubmitBatchRequest>,
    ) -> Result<proto::SubmitBatchResponse, Error> {
        let started = Instant::now();
        let scope = Scope::of(&request)?;
        let requests = request.into_inner().requests;
        let items = requests.len() as u64;
        let result = self.submit_many(requests, &scope).await;
        let metrics = self.state.metrics();
        metrics.submit_latency(SubmitRpc::SubmitBatch, started.elapsed());
        match &result {
            Ok(answer) => count_batch(metrics, answer),
            Err(err) => metrics.rejected(err.code(), items),
        }
        result
    }

    /// One `SubmitBatch`: each item admitted on its own, the valid ones stored in one group
    /// commit, one result per item in order. An item for a customer outside the caller's scope
    /// is refused on its own, NOT_FOUND, like an item for an unknown customer.
    async fn submit_many(
        &self,
        requests: Vec<proto::SubmitRequest>,
        scope: &Scope,
    ) -> Result<proto::SubmitBatchResponse, Error> {
        if requests.len() > MAX_BATCH {
            return Err(Error::invalid(
                "requests",
                format!("{} items is over the limit of {MAX_BATCH}", requests.len()),
            ));
        }
        // Admit each item on its own; only the valid ones go to intake, in one group commit.
        let intake = self.state.intake();
        let mut results: Vec<Option<Result<proto::SubmitResponse, Error>>> =
            Vec::with_capacity(requests.len());
        let mut valid = Vec::with_capacity(requests.len());
        let mut pins = intake.pins();
        for request in requests {
            match self.admit(request, scope, &mut pins).await {
                Ok(notification) => {
                    valid.push(notification);
                    results.push(None);
                }
                Err(err) => results.push(Some(Err(err))),
            }
        }
        let mut stored = intake.submit(valid).await?.into_iter();
        let ids = self.state.ids();
        let results = results
            .into_iter()
            .map(|result| match result {
                Some(rejected) => item_result(rejected),
                None => item_result(
                    stored
                        .next()
                        .ok_or(Error::Internal)
                        .and_then(|inserted| response(ids, inserted)),
                ),
            })
            .collect();
        Ok(proto::SubmitBatchResponse { results })
    }

    /// The notification as a caller should see it: one claimed by an actor of this node but
    /// still waiting in its window (paced, behind an open circuit or a pause) is PENDING, since
    /// no attempt is under way; IN_FLIGHT means an attempt really is.
    fn as_seen(&self, mut notification: Notification) -> Notification {
        if notification.state == State::InFlight
            && self.state.dispatcher().is_waiting(notification.id)
        {
            notification.state = State::Pending;
        }
        notification
    }

    /// Notification `id`, if it exists and its customer is in `scope`; NOT_FOUND alike otherwise,
    /// so a scoped token cannot tell another customer's notification from a missing one.
    async fn visible(
        &self,
        scope: &Scope,
        id: NotificationId,
        asked: &str,
    ) -> Result<Notification, Error> {
        self.state
            .store()
            .get_notification(id)
            .await?
            .filter(|notification| scope.allows(&notification.customer_id))
            .ok_or_else(|| convert::not_found(asked))
    }

    async fn get(
        &self,
        request: Request<proto::GetNotificationRequest>,
    ) -> Result<proto::Notification, Error> {
        let scope = Scope::of(&request)?;
        let asked = &request.get_ref().notification_id;
        let ids = self.state.ids();
        let id = convert::notification_id(ids, asked)?;
        let notification = self.as_seen(self.visible(&scope, id, asked).await?);
        Ok(convert::notification(ids, notification))
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelNotificationRequest>,
    ) -> Result<proto::Notification, Error> {
        let scope = Scope::of(&request)?;
        let asked = &request.get_ref().notification_id;
        let ids = self.state.ids();
        let id = convert::notification_id(ids, asked)?;
        // Checked before it is touched: another customer's notification is left alone.
        self.visible(&scope, id, asked).await?;
        let cancelled = self
            .state
            .store()
            .cancel_notification(id, now_millis())
            .await?;
        let notification = self.visible(&scope, id, asked).await?;
        if !cancelled {
            // A notification its worker holds reads PENDING, yet the worker has it: say so.
            let state = match notification.state {
                State::InFlight => "taken by its worker for sending",
                other => other.as_str(),
            };
            return Err(Error::FailedPrecondition(format!(
                "notification {asked} is {state} and can no longer be cancelled"
            )));
        }
        tracing::info!("notification cancelled");
        Ok(convert::notification(ids, notification))
    }

    async fn list(
        &self,
        request: Request<proto::ListNotificationsRequest>,
    ) -> Result<proto::ListNotificationsResponse, Error> {
        let scope = Scope::of(&request)?;
        let ids = self.state.ids();
        let page = InboxPage::parse(ids, request.into_inner())?;
        scope.admit(&page.customer_id)?;
        let retention =
            i64::try_from(self.state.limits().inbox_retention.as_millis()).unwrap_or(i64::MAX);
        let notifications = self
            .state
            .store()
            .list_inbox(
                &page.customer_id,
                &page.recipient,
                now_millis().saturating_sub(retention),
                page.before,
                page.size,
            )
            .await?
            .into_iter()
            .map(|n| self.as_seen(n))
            .collect();
        Ok(page.answer(ids, notifications))
    }
}

/// One page of a recipient's notifications, as `ListNotifications` and
/// `ListArchivedNotifications` ask for it.
pub(super) struct InboxPage {
    pub(super) customer_id: String,
    pub(super) recipient: String,
    /// Only ids below this one (the cursor).
    pub(super) before: Option<NotificationId>,
    pub(super) size: usize,
}

impl InboxPage {
    pub(super) fn parse(
        ids: &PublicIds,
        request: proto::ListNotificationsRequest,
    ) -> Result<Self, Error> {
        convert::customer_id("customer_id", &request.customer_id)?;
        convert::key("recipient", &request.recipient)?;
        let size = match usize::try_from(request.page_size).unwrap_or(MAX_PAGE) {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let before = match request.page_token.as_str() {
            "" => None,
            // A page token is the last notification's id; one not handed out here is a
            // caller's mistake, not a missing notification.
            token => Some(
                ids.decode(token)
                    .ok_or_else(|| Error::invalid("page_token", "is not a page token"))?,
            ),
        };
        Ok(Self {
            customer_id: request.customer_id,
            recipient: request.recipient,
            before,
            size,
        })
    }

    /// The answer: a full page carries the cursor to the next one.
    pub(super) fn answer(
        &self,
        ids: &PublicIds,
        notifications: Vec<Notification>,
    ) -> proto::ListNotificationsResponse {
        let next_page_token = match notifications.last() {
            Some(last) if notifications.len() == self.size => ids.encode(last.id),
            _ => String::new(),
        };
        proto::ListNotificationsResponse {
            notifications: notifications
                .into_iter()
                .map(|n| convert::notification(ids, n))
                .collect(),
            next_page_token,
        }
    }
}

/// What a submit answers for one stored item, under the notification's public id.
fn response(ids: &PublicIds, inserted: Inserted) -> Result<proto::SubmitResponse, Error> {
    match inserted {
        Inserted::New(id) => Ok(proto::SubmitResponse {
            notification_id: ids.encode(id),
            duplicate: false,
        }),
        Inserted::Duplicate(id) => Ok(proto::SubmitResponse {
            notification_id: ids.encode(id),
            duplicate: true,
        }),
        Inserted::Conflict(id) => Err(Error::AlreadyExists(format!(
            "idempotency_key was already used for notification {} with a different recipient, lane or payload",
            ids.encode(id)
        ))),
    }
}

/// Counts a batch's items: stored, duplicates, and rejected by code.
fn count_batch(metrics: &Metrics, answer: &proto::SubmitBatchResponse) {
    let (mut new, mut duplicates) = (0, 0);
    for result in &answer.results {
        match &result.outcome {
            Some(submit_result::Outcome::Accepted(a)) if a.duplicate => duplicates += 1,
            Some(submit_result::Outcome::Accepted(_)) => new += 1,
            Some(submit_result::Outcome::Error(e)) => {
                metrics.rejected(tonic::Code::from(e.code), 1)
            }
            None => {}
        }
    }
    metrics.accepted(new, duplicates);
}

fn item_result(result: Result<proto::SubmitResponse, Error>) -> proto::SubmitResult {
    let outcome = match result {
        Ok(accepted) => submit_result::Outcome::Accepted(accepted),
        Err(err) => submit_result::Outcome::Error(proto::ItemError {
            code: err.code() as i32,
            message: err.to_string(),
        }),
    };
    proto::SubmitResult {
        outcome: Some(outcome),
    }
}

#[tonic::async_trait]
impl Dispatcher for DispatchService {
    #[tracing::instrument(
        skip_all,
        fields(customer_id = %request.get_ref().customer_id, notification_id = tracing::field::Empty)
    )]
    async fn submit(
        &self,
        request: Request<proto::SubmitRequest>,
    ) -> Result<Response<proto::SubmitResponse>, Status> {
        answer(self.submit_counted(request).await)
    }

    #[tracing::instrument(skip_all, fields(items = request.get_ref().requests.len()))]
    async fn submit_batch(
        &self,
        request: Request<proto::SubmitBatchRequest>,
    ) -> Result<Response<proto::SubmitBatchResponse>, Status> {
        answer(self.submit_batch_counted(request).await)
    }

    async fn get_notification(
        &self,
        request: Request<proto::GetNotificationRequest>,
    ) -> Result<Response<proto::Notification>, Status> {
        answer(self.get(request).await)
    }

    #[tracing::instrument(skip_all, fields(notification_id = %request.get_ref().notification_id))]
    async fn cancel_notification(
        &self,
        request: Request<proto::CancelNotificationRequest>,
    ) -> Result<Response<proto::Notification>, Status> {
        answer(self.cancel(request).await)
    }

    async fn list_notifications(
        &self,
        request: Request<proto::ListNotificationsRequest>,
    ) -> Result<Response<proto::ListNotificationsResponse>, Status> {
        answer(self.list(request).await)
    }
}
