//! The `Dispatcher` service: submit, batch submit, and reading notifications back.

use std::collections::HashMap;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::proto::dispatcher_server::Dispatcher;
use super::proto::{self, submit_result};
use super::{ApiState, channels, convert};
use crate::error::Error;
use crate::model::{NewNotification, now_millis};
use crate::store::Inserted;
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

    /// Validates one request and checks that its customer exists and can take its channel.
    async fn admit(&self, request: proto::SubmitRequest) -> Result<NewNotification, Error> {
        let notification =
            convert::new_notification(request, self.state.max_payload_bytes, now_millis())?;
        let Some(customer) = self.state.directory.get(&notification.customer_id).await? else {
            return Err(Error::NotFound(format!(
                "customer {:?} not found",
                notification.customer_id
            )));
        };
        // A channel the customer cannot use is the first thing to fix, before its content.
        channels::check_configured(&customer, notification.channel)?;
        channels::check_content(
            notification.channel,
            &notification.recipient,
            &notification.payload,
        )?;
        Ok(notification)
    }

    /// Marks the notifications whose recipient opted out as suppressed (they are stored, with
    /// the reason, and never sent). One preference lookup per customer.
    async fn apply_preferences(&self, items: &mut [NewNotification]) -> Result<(), Error> {
        let mut by_customer: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            by_customer
                .entry(item.customer_id.clone())
                .or_default()
                .push(i);
        }
        for (customer_id, indices) in by_customer {
            let asked: Vec<_> = indices
                .iter()
                .map(|&i| (items[i].recipient.as_str(), items[i].channel, items[i].lane))
                .collect();
            let refusals = self
                .state
                .preferences
                .refusals(&customer_id, &asked)
                .await?;
            for (i, refusal) in indices.into_iter().zip(refusals) {
                items[i].suppressed = refusal;
            }
        }
        Ok(())
    }

    /// One `Submit`: admitted, stored, answered.
    async fn submit_one(
        &self,
        request: proto::SubmitRequest,
    ) -> Result<proto::SubmitResponse, Status> {
        let mut notification = vec![self.admit(request).await?];
        self.apply_preferences(&mut notification).await?;
        let results = self
            .state
            .intake
            .submit(notification)
            .await
            .map_err(Error::from)?;
        let inserted = results.into_iter().next().ok_or(Error::Internal)?;
        Ok(response(inserted)?)
    }

    /// One `SubmitBatch`: each item admitted on its own, the valid ones stored in one group
    /// commit, one result per item in order.
    async fn submit_many(
        &self,
        requests: Vec<proto::SubmitRequest>,
    ) -> Result<proto::SubmitBatchResponse, Status> {
        if requests.len() > MAX_BATCH {
            return Err(Error::invalid(
                "requests",
                format!("{} items is over the limit of {MAX_BATCH}", requests.len()),
            )
            .into());
        }
        // Admit each item on its own; only the valid ones go to intake, in one group commit.
        let mut results: Vec<Option<Result<proto::SubmitResponse, Error>>> =
            Vec::with_capacity(requests.len());
        let mut valid = Vec::with_capacity(requests.len());
        for request in requests {
            match self.admit(request).await {
                Ok(notification) => {
                    valid.push(notification);
                    results.push(None);
                }
                Err(err) => results.push(Some(Err(err))),
            }
        }
        self.apply_preferences(&mut valid).await?;
        let mut stored = if valid.is_empty() {
            Vec::new()
        } else {
            self.state.intake.submit(valid).await.map_err(Error::from)?
        }
        .into_iter();
        let results = results
            .into_iter()
            .map(|result| match result {
                Some(rejected) => item_result(rejected),
                None => item_result(stored.next().ok_or(Error::Internal).and_then(response)),
            })
            .collect();
        Ok(proto::SubmitBatchResponse { results })
    }
}

fn response(inserted: Inserted) -> Result<proto::SubmitResponse, Error> {
    match inserted {
        Inserted::New(id) => Ok(proto::SubmitResponse {
            notification_id: id.to_string(),
            duplicate: false,
        }),
        Inserted::Duplicate(id) => Ok(proto::SubmitResponse {
            notification_id: id.to_string(),
            duplicate: true,
        }),
        Inserted::Conflict(id) => Err(Error::AlreadyExists(format!(
            "idempotency_key was already used for notification {id} with a different recipient, lane or payload"
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
        Err(err) => {
            let status = Status::from(err);
            submit_result::Outcome::Error(proto::ItemError {
                code: status.code() as i32,
                message: status.message().to_owned(),
            })
        }
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
        let started = Instant::now();
        let result = self.submit_one(request.into_inner()).await;
        let metrics = &self.state.metrics;
        metrics.submit_latency(SubmitRpc::Submit, started.elapsed());
        match &result {
            Ok(answer) => {
                tracing::Span::current().record("notification_id", answer.notification_id.as_str());
                metrics.accepted(u64::from(!answer.duplicate), u64::from(answer.duplicate))
            }
            Err(status) => metrics.rejected(status.code(), 1),
        }
        Ok(Response::new(result?))
    }

    #[tracing::instrument(skip_all, fields(items = request.get_ref().requests.len()))]
    async fn submit_batch(
        &self,
        request: Request<proto::SubmitBatchRequest>,
    ) -> Result<Response<proto::SubmitBatchResponse>, Status> {
        let started = Instant::now();
        let requests = request.into_inner().requests;
        let items = requests.len() as u64;
        let result = self.submit_many(requests).await;
        let metrics = &self.state.metrics;
        metrics.submit_latency(SubmitRpc::SubmitBatch, started.elapsed());
        match &result {
            Ok(answer) => count_batch(metrics, answer),
            Err(status) => metrics.rejected(status.code(), items),
        }
        Ok(Response::new(result?))
    }

    async fn get_notification(
        &self,
        request: Request<proto::GetNotificationRequest>,
    ) -> Result<Response<proto::Notification>, Status> {
        let id = convert::notification_id("notification_id", &request.get_ref().notification_id)?;
        let notification = self
            .state
            .store
            .get_notification(id)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| Error::NotFound(format!("notification {id} not found")))?;
        Ok(Response::new(notification.into()))
    }

    async fn list_notifications(
        &self,
        request: Request<proto::ListNotificationsRequest>,
    ) -> Result<Response<proto::ListNotificationsResponse>, Status> {
        let request = request.into_inner();
        convert::customer_id("customer_id", &request.customer_id)?;
        if request.recipient.is_empty() {
            return Err(Error::invalid("recipient", "must not be empty").into());
        }
        let page_size = match usize::try_from(request.page_size).unwrap_or(MAX_PAGE) {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let before = match request.page_token.as_str() {
            "" => None,
            token => Some(convert::notification_id("page_token", token)?),
        };
        let notifications = self
            .state
            .store
            .list_inbox(&request.customer_id, &request.recipient, before, page_size)
            .await
            .map_err(Error::from)?;
        let next_page_token = match notifications.last() {
            Some(last) if notifications.len() == page_size => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListNotificationsResponse {
            notifications: notifications.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }
}
