//! Every conversion between protobuf messages and domain types, with the input checks: what comes
//! out of here is valid, and what fails names the offending field.

use prost_types::Timestamp;

use super::proto;
use crate::dispatch::CustomerStats;
use crate::dispatch::controller::{Circuit, Tier};
use crate::error::Error;
use crate::model::StartTier;
use crate::model::{
    Channel, Customer, CustomerId, EpochMillis, Lane, NewNotification, Notification,
    NotificationId, Preference, State, TemplateRef, now_millis,
};
use crate::public_id::PublicIds;

/// Longest idempotency key or recipient, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// Checks an id (a customer's, a template's, a token's name) by the rule of [`CustomerId`]:
/// 1 to 128 of letters, digits, `-`, `_`, `.` (safe in URLs, metrics labels and log lines).
pub fn customer_id(field: &'static str, id: &str) -> Result<(), Error> {
    CustomerId::check(id).map_err(|problem| Error::invalid(field, problem.to_string()))
}

/// Checks a free-form key (idempotency key, recipient): 1 to 256 bytes, no control characters.
/// Every RPC that takes one checks it here, so none caches or looks up an unbounded string.
pub fn key(field: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_KEY_LEN {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_KEY_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Turns a `SubmitRequest` into a notification to store, checking every field.
pub fn new_notification(
    request: proto::SubmitRequest,
    max_payload_bytes: usize,
    now: EpochMillis,
) -> Result<NewNotification, Error> {
    let customer_id = CustomerId::parse(request.customer_id)
        .map_err(|problem| Error::invalid("customer_id", problem.to_string()))?;
    key("idempotency_key", &request.idempotency_key)?;
    key("recipient", &request.recipient)?;
    let lane = match proto::Lane::try_from(request.lane) {
        Ok(proto::Lane::Unspecified | proto::Lane::Transactional) => Lane::Transactional,
        Ok(proto::Lane::Bulk) => Lane::Bulk,
        Err(_) => {
            return Err(Error::invalid(
                "lane",
                format!("unknown lane {}", request.lane),
            ));
        }
    };
    let (payload, template) =
        payload_or_template(request.payload, request.template_id, request.variables)?;
    if payload.len() > max_payload_bytes {
        let field = if template.is_some() {
            "variables"
        } else {
            "payload"
        };
        return Err(Error::invalid(
            field,
            format!(
                "{} bytes is over the limit of {max_payload_bytes}",
                payload.len()
            ),
        ));
    }
    let send_at = request.send_at.map(|t| millis("send_at", t)).transpose()?;
    let expires_at = request
        .expires_at
        .map(|t| millis("expires_at", t))
        .transpose()?;
    if let Some(expires_at) = expires_at {
        if expires_at <= now {
            return Err(Error::invalid("expires_at", "is already in the past"));
        }
        if send_at.is_some_and(|send_at| send_at >= expires_at) {
            return Err(Error::invalid("expires_at", "must be later than send_at"));
        }
    }
    let channel = channel("channel", request.channel)?;
    Ok(NewNotification {
        customer_id,
        idempotency_key: request.idempotency_key,
        recipient: request.recipient,
        lane,
        payload,
        send_at,
        expires_at,
        channel,
        suppressed: None,
        template,
    })
}

/// What a submit sends: its payload, or a template and the variables to render it with (kept
/// as JSON in the payload column). A templated notification's version is 0 until intake pins
/// it to the latest.
fn payload_or_template(
    payload: Vec<u8>,
    template_id: String,
    variables: Option<prost_types::Struct>,
) -> Result<(Vec<u8>, Option<TemplateRef>), Error> {
    if template_id.is_empty() {
        if variables.is_some() {
            return Err(Error::invalid("variables", "is only used with template_id"));
        }
        return Ok((payload, None));
    }
    customer_id("template_id", &template_id)?;
    if !payload.is_empty() {
        return Err(Error::invalid(
            "payload",
            "must be empty when template_id is given (the template makes it)",
        ));
    }
    let variables = serde_json::Value::Object(struct_to_json(variables.unwrap_or_default()));
    let template = TemplateRef {
        id: template_id,
        version: 0,
    };
    Ok((variables.to_string().into_bytes(), Some(template)))
}

/// A protobuf `Struct` as a JSON object. Whole numbers become integers, so `{{ count }}`
/// renders `3`, not `3.0`.
fn struct_to_json(value: prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    value
        .fields
        .into_iter()
        .map(|(name, value)| (name, value_to_json(value)))
        .collect()
}

fn value_to_json(value: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => b.into(),
        Some(Kind::StringValue(s)) => s.into(),
        // 2^53: beyond it an f64 no longer holds every integer.
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
            (n as i64).into()
        }
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, Into::into)
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(list)) => list.values.into_iter().map(value_to_json).collect(),
    }
}

/// A proto `Channel` number; unspecified means the webhook.
pub fn channel(field: &'static str, value: i32) -> Result<Channel, Error> {
    Ok(match proto::Channel::try_from(value) {
        Ok(proto::Channel::Unspecified | proto::Channel::Webhook) => Channel::Webhook,
        Ok(proto::Channel::Fcm) => Channel::Fcm,
        Ok(proto::Channel::Apns) => Channel::Apns,
        Ok(proto::Channel::Email) => Channel::Email,
        Ok(proto::Channel::Sms) => Channel::Sms,
        Err(_) => return Err(Error::invalid(field, format!("unknown channel {value}"))),
    })
}

/// The API's name for a channel; public for the CLI, which parses `--channel` as the domain type.
pub fn proto_channel(channel: Channel) -> proto::Channel {
    match channel {
        Channel::Webhook => proto::Channel::Webhook,
        Channel::Fcm => proto::Channel::Fcm,
        Channel::Apns => proto::Channel::Apns,
        Channel::Email => proto::Channel::Email,
        Channel::Sms => proto::Channel::Sms,
    }
}

fn proto_lane(lane: Lane) -> proto::Lane {
    match lane {
        Lane::Transactional => proto::Lane::Transactional,
        Lane::Bulk => proto::Lane::Bulk,
    }
}

/// A preference to set: customer, recipient and the choice. Unspecified lane means every lane.
pub fn preference(
    preference: Option<proto::Preference>,
) -> Result<(String, String, Preference), Error> {
    let p = preference.ok_or_else(|| Error::invalid("preference", "is required"))?;
    customer_id("preference.customer_id", &p.customer_id)?;
    key("preference.recipient", &p.recipient)?;
    let lane = match proto::Lane::try_from(p.lane) {
        Ok(proto::Lane::Unspecified) => None,
        Ok(proto::Lane::Transactional) => Some(Lane::Transactional),
        Ok(proto::Lane::Bulk) => Some(Lane::Bulk),
        Err(_) => {
            return Err(Error::invalid(
                "preference.lane",
                format!("unknown lane {}", p.lane),
            ));
        }
    };
    let choice = Preference {
        channel: channel("preference.channel", p.channel)?,
        lane,
        opted_out: p.opted_out,
        updated_at: 0,
    };
    Ok((p.customer_id, p.recipient, choice))
}

/// One stored preference of a recipient, for the API.
pub fn proto_preference(customer_id: &str, recipient: &str, p: &Preference) -> proto::Preference {
    proto::Preference {
        customer_id: customer_id.to_owned(),
        recipient: recipient.to_owned(),
        channel: proto_channel(p.channel) as i32,
        lane: p.lane.map_or(proto::Lane::Unspecified, proto_lane) as i32,
        opted_out: p.opted_out,
        updated_at: Some(timestamp(p.updated_at)),
    }
}

/// Checks a customer and fills in what the server decides: the id, URL and secret must be valid.
/// An empty `signing_secret` is left empty for the caller to fill.
pub fn customer(customer: Option<proto::Customer>) -> Result<Customer, Error> {
    let customer = customer.ok_or_else(|| Error::invalid("customer", "is required"))?;
    customer_id("customer.id", &customer.id)?;
    super::channels::http_url("customer.webhook_url", &customer.webhook_url)?;
    let channels = super::channels::settings(&customer)?;
    if !customer.signing_secret.is_empty() {
        crate::sink::signature::decode_secret(&customer.signing_secret)
            .map_err(|e| Error::invalid("customer.signing_secret", e.to_string()))?;
    }
    let start_tier = match proto::Tier::try_from(customer.start_tier) {
        Ok(proto::Tier::Unspecified) => None,
        Ok(proto::Tier::Fast) => Some(StartTier::Fast),
        Ok(proto::Tier::Medium) => Some(StartTier::Medium),
        Ok(proto::Tier::Slow) => Some(StartTier::Slow),
        _ => {
            return Err(Error::invalid(
                "customer.start_tier",
                "must be TIER_FAST, TIER_MEDIUM or TIER_SLOW",
            ));
        }
    };
    Ok(Customer {
        id: customer.id,
        webhook_url: customer.webhook_url,
        signing_secret: customer.signing_secret,
        previous_secret: None,
        max_rate_per_sec: customer.max_rate_per_sec,
        paused: customer.paused,
        start_tier,
        channels,
    })
}

/// The notification a caller's `notification_id` names. Anything this server did not hand out
/// (a guess, a changed character, an old decimal id) is `NOT_FOUND`, exactly like an id whose
/// notification is gone, so probing learns nothing.
pub fn notification_id(ids: &PublicIds, id: &str) -> Result<NotificationId, Error> {
    if id.is_empty() {
        return Err(Error::invalid("notification_id", "must not be empty"));
    }
    ids.decode(id).ok_or_else(|| not_found(id))
}

/// The answer for a notification id that names nothing.
pub fn not_found(id: &str) -> Error {
    Error::NotFound(format!("notification {id:?} not found"))
}

/// The notification as the API returns it, under its public id.
pub fn notification(ids: &PublicIds, n: Notification) -> proto::Notification {
    let waiting = matches!(n.state, State::Pending | State::Retrying);
    proto::Notification {
        id: ids.encode(n.id),
        customer_id: n.customer_id,
        idempotency_key: n.idempotency_key,
        recipient: n.recipient,
        lane: proto_lane(n.lane) as i32,
        channel: proto_channel(n.channel) as i32,
        template_id: n
            .template
            .as_ref()
            .map(|t| t.id.clone())
            .unwrap_or_default(),
        template_version: n
            .template
            .as_ref()
            .map_or(0, |t| u32::try_from(t.version).unwrap_or(u32::MAX)),
        payload: n.payload,
        state: proto_state(n.state) as i32,
        attempts: n.attempts,
        last_error: n.last_error.unwrap_or_default(),
        created_at: Some(timestamp(n.created_at)),
        updated_at: Some(timestamp(n.updated_at)),
        send_at: n.send_at.map(timestamp),
        expires_at: n.expires_at.map(timestamp),
        next_attempt_at: waiting.then(|| timestamp(n.due_at)),
        delivered_at: n.delivered_at.map(timestamp),
    }
}

impl From<Customer> for proto::Customer {
    /// The customer as reads return it: the signing secret and provider secrets are left out.
    /// Only the answers that just made a signing secret carry it (see `Customers`' upsert and
    /// rotation), so a leaked admin session or log of reads cannot sign webhooks.
    fn from(c: Customer) -> Self {
        let blocks = super::channels::redacted(c.channels);
        Self {
            id: c.id,
            webhook_url: c.webhook_url,
            signing_secret: String::new(),
            max_rate_per_sec: c.max_rate_per_sec,
            paused: c.paused,
            start_tier: c.start_tier.map_or(proto::Tier::Unspecified, |t| match t {
                StartTier::Fast => proto::Tier::Fast,
                StartTier::Medium => proto::Tier::Medium,
                StartTier::Slow => proto::Tier::Slow,
            }) as i32,
            previous_secret_until: c
                .previous_secret
                .filter(|p| p.valid_at(now_millis()))
                .map(|p| timestamp(p.until)),
            fcm: blocks.fcm,
            apns: blocks.apns,
            email: blocks.email,
            sms: blocks.sms,
        }
    }
}

/// A customer's stats: live figures from its actor when one runs (else idle), plus its backlog.
pub fn customer_stats(
    customer: &Customer,
    live: Option<CustomerStats>,
    backlog: (u64, u64),
) -> proto::CustomerStats {
    let idle = proto::CustomerStats {
        customer_id: customer.id.clone(),
        tier: if customer.paused {
            proto::Tier::Paused
        } else {
            proto::Tier::Idle
        } as i32,
        circuit: proto::CircuitState::Closed as i32,
        backlog_transactional: backlog.0,
        backlog_bulk: backlog.1,
        ..Default::default()
    };
    let Some(live) = live else { return idle };
    let millis = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let change = live.last_tier_change.clone();
    proto::CustomerStats {
        tier: proto_tier(live.tier) as i32,
        concurrency_limit: u32::try_from(live.limit).unwrap_or(u32::MAX),
        pacing_rate: live.rate,
        delivered_per_sec: live.delivered_per_sec,
        rtt_p50_ms: millis(live.rtt_p50),
        rtt_p99_ms: millis(live.rtt_p99),
        error_rate: live.error_rate,
        in_flight: u32::try_from(live.in_flight).unwrap_or(u32::MAX),
        circuit: match live.circuit {
            Circuit::Closed => proto::CircuitState::Closed,
            Circuit::Open => proto::CircuitState::Open,
            Circuit::HalfOpen => proto::CircuitState::HalfOpen,
        } as i32,
        last_tier_change_at: change.as_ref().map(|c| timestamp(c.at)),
        last_tier_change_from: change.as_ref().map_or(0, |c| proto_tier(c.from) as i32),
        last_tier_change_to: change.as_ref().map_or(0, |c| proto_tier(c.to) as i32),
        last_tier_change_reason: change.map(|c| c.reason).unwrap_or_default(),
        delivered_total: live.delivered_total,
        failed_total: live.failed_total,
        tier_changes_total: live.tier_changes_total,
        ..idle
    }
}

fn proto_tier(tier: Tier) -> proto::Tier {
    match tier {
        Tier::Fast => proto::Tier::Fast,
        Tier::Medium => proto::Tier::Medium,
        Tier::Slow => proto::Tier::Slow,
        Tier::Paused => proto::Tier::Paused,
        Tier::CircuitOpen => proto::Tier::CircuitOpen,
    }
}

fn proto_state(state: State) -> proto::State {
    match state {
        State::Pending => proto::State::Pending,
        State::InFlight => proto::State::InFlight,
        State::Delivered => proto::State::Delivered,
        State::Retrying => proto::State::Retrying,
        State::Failed => proto::State::Failed,
        State::Suppressed => proto::State::Suppressed,
        State::Expired => proto::State::Expired,
        State::Cancelled => proto::State::Cancelled,
    }
}

fn millis(field: &'static str, t: Timestamp) -> Result<EpochMillis, Error> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(field, "nanos must be within 0..1e9"));
    }
    t.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(t.nanos / 1_000_000)))
        .ok_or_else(|| Error::invalid(field, "out of range"))
}

/// An epoch-milliseconds time as a protobuf timestamp.
pub fn timestamp(ms: EpochMillis) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> proto::SubmitRequest {
        proto::SubmitRequest {
            customer_id: "acme".into(),
            idempotency_key: "k1".into(),
            recipient: "user-1".into(),
            payload: b"{}".to_vec(),
            ..Default::default()
        }
    }

    fn field_of(result: Result<NewNotification, Error>) -> &'static str {
        match result {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn bad_submit_fields_are_named() {
        let check = |r: proto::SubmitRequest| field_of(new_notification(r, 16, 1_000));
        assert_eq!(
            check(proto::SubmitRequest {
                customer_id: String::new(),
                ..request()
            }),
            "customer_id"
        );
        assert_eq!(
            check(proto::SubmitRequest {
                customer_id: "a".repeat(129),
                ..request()
            }),
            "customer_id"
        );
        assert_eq!(
            check(proto::SubmitRequest {
                idempotency_key: String::new(),
                ..request()
            }),
            "idempotency_key"
        );
        assert_eq!(
            check(proto::SubmitRequest {
                recipient: "x".repeat(257),
                ..request()
            }),
            "recipient"
        );
        assert_eq!(
            check(proto::SubmitRequest {
                payload: vec![0; 17],
                ..request()
            }),
            "payload"
        );
        assert_eq!(
            check(proto::SubmitRequest {
                lane: 9,
                ..request()
            }),
            "lane"
        );
        let past = Some(Timestamp {
            seconds: 0,
            nanos: 0,
        });
        assert_eq!(
            check(proto::SubmitRequest {
                expires_at: past,
                ..request()
            }),
            "expires_at"
        );
    }

    #[test]
    fn valid_submit_maps_lane_and_times() {
        let request = proto::SubmitRequest {
            lane: proto::Lane::Bulk as i32,
            send_at: Some(Timestamp {
                seconds: 5,
                nanos: 7_000_000,
            }),
            ..request()
        };
        let n = new_notification(request, 16, 1_000).unwrap();
        assert_eq!(n.lane, Lane::Bulk);
        assert_eq!(n.send_at, Some(5_007));
        assert_eq!(
            timestamp(5_007),
            Timestamp {
                seconds: 5,
                nanos: 7_000_000
            }
        );
    }

    #[test]
    fn webhook_urls_must_be_http() {
        let make = |url: &str| {
            customer(Some(proto::Customer {
                id: "acme".into(),
                webhook_url: url.into(),
                ..Default::default()
            }))
        };
        assert!(make("https://example.com/hook").is_ok());
        assert!(matches!(
            make("ftp://example.com"),
            Err(Error::InvalidArgument {
                field: "customer.webhook_url",
                ..
            })
        ));
        assert!(matches!(
            make("not a url"),
            Err(Error::InvalidArgument {
                field: "customer.webhook_url",
                ..
            })
        ));
    }
}
