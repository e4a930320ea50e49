//! The `hostile` scenario: does floodgate's memory stay flat while it refuses requests that must
//! be refused? Each kind of hostile request — a multi-megabyte recipient for GetPreferences and
//! ListNotifications, an oversized idempotency key, recipient or payload for Submit, a `send_at`
//! in year 9999 — is sent `--requests` times; each must be answered INVALID_ARGUMENT or
//! RESOURCE_EXHAUSTED, and any other answer is counted as an error. RSS is read before, after
//! each kind, and at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result};
use floodgate::api::proto;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use floodgate::api::proto::preferences_client::PreferencesClient;
use prost_types::Timestamp;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Code;

use super::{MemoryArgs, SETTLE};
use crate::client::{self, AuthedChannel};
use crate::process::{Floodgate, Memory};
use crate::receiver::Receiver;

/// The customer every hostile request names (registered, paused: nothing is ever delivered).
const CUSTOMER: &str = "hostile";
/// 9999-12-31T23:59:59Z, the last second a protobuf `Timestamp` may hold.
const YEAR_9999: i64 = 253_402_300_799;

/// One kind of request that must be refused.
#[derive(Debug, Clone, Copy)]
enum Kind {
    PreferencesRecipient,
    ListRecipient,
    SubmitKey,
    SubmitRecipient,
    SubmitPayload,
    SubmitYear9999,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::PreferencesRecipient,
        Kind::ListRecipient,
        Kind::SubmitKey,
        Kind::SubmitRecipient,
        Kind::SubmitPayload,
        Kind::SubmitYear9999,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::PreferencesRecipient => "GetPreferences, huge recipient",
            Kind::ListRecipient => "ListNotifications, huge recipient",
            Kind::SubmitKey => "Submit, huge idempotency key",
            Kind::SubmitRecipient => "Submit, huge recipient",
            Kind::SubmitPayload => "Submit, huge payload",
            Kind::SubmitYear9999 => "Submit, send_at in year 9999",
        }
    }

    /// Makes call number `i` of this kind; `huge` is the oversized field's content.
    async fn call(self, channel: AuthedChannel, huge: &str, i: u64) -> Result<(), tonic::Status> {
        let submit =
            |key: String, recipient: String, payload: Vec<u8>, send_at| proto::SubmitRequest {
                customer_id: CUSTOMER.into(),
                idempotency_key: key,
                recipient,
                payload,
                send_at,
                ..proto::SubmitRequest::default()
            };
        let ok_key = format!("hostile-{i}");
        let ok_payload = br#"{"n":1}"#.to_vec();
        let request = match self {
            Kind::PreferencesRecipient => {
                let request = proto::GetPreferencesRequest {
                    customer_id: CUSTOMER.into(),
                    recipient: huge.to_owned(),
                };
                PreferencesClient::new(channel)
                    .get_preferences(request)
                    .await?;
                return Ok(());
            }
            Kind::ListRecipient => {
                let request = proto::ListNotificationsRequest {
                    customer_id: CUSTOMER.into(),
                    recipient: huge.to_owned(),
                    ..proto::ListNotificationsRequest::default()
                };
                DispatcherClient::new(channel)
                    .list_notifications(request)
                    .await?;
                return Ok(());
            }
            Kind::SubmitKey => submit(huge.to_owned(), "user".into(), ok_payload, None),
            Kind::SubmitRecipient => submit(ok_key, huge.to_owned(), ok_payload, None),
            Kind::SubmitPayload => submit(ok_key, "user".into(), huge.as_bytes().to_vec(), None),
            Kind::SubmitYear9999 => submit(
                ok_key,
                "user".into(),
                ok_payload,
                Some(Timestamp {
                    seconds: YEAR_9999,
                    nanos: 0,
                }),
            ),
        };
        DispatcherClient::new(channel).submit(request).await?;
        Ok(())
    }
}

/// What one kind of hostile request got.
#[derive(Debug, Clone, Serialize)]
struct KindSummary {
    kind: &'static str,
    sent: u64,
    /// Answered INVALID_ARGUMENT or RESOURCE_EXHAUSTED, as they must be.
    refused: u64,
    /// Any other answer (an acceptance included), by gRPC code.
    errors: BTreeMap<String, u64>,
    secs: f64,
    /// RSS once this kind's calls were answered and floodgate settled.
    rss_after_mib: f64,
    hwm_after_mib: f64,
}

/// What the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Summary {
    server: String,
    requests_per_kind: u64,
    hostile_bytes: usize,
    rss_before_mib: f64,
    hwm_before_mib: f64,
    kinds: Vec<KindSummary>,
    rss_end_mib: f64,
    /// `VmHWM` at the end: the peak over the whole run.
    hwm_end_mib: f64,
    /// Answers that were not a refusal, over every kind.
    errors: u64,
}

/// Runs the scenario on a freshly started `floodgate`.
pub(super) async fn run(args: &MemoryArgs, floodgate: &Floodgate) -> Result<Summary> {
    // Only for registering: the customer is paused and no request is accepted.
    let receiver = Receiver::start().await?;
    let measured = measure(args, floodgate, receiver.url()).await;
    let stopped = receiver.stop().await;
    let summary = measured?;
    stopped?;
    Ok(summary)
}

async fn measure(args: &MemoryArgs, floodgate: &Floodgate, webhook: &str) -> Result<Summary> {
    let channel = floodgate.connect().await?;
    client::register_customers(&channel, &[CUSTOMER.to_owned()], &[webhook], true).await?;
    tokio::time::sleep(SETTLE).await;
    let before = floodgate.memory()?;
    eprintln!(
        "before: rss {:.1} MiB (VmHWM {:.1} MiB); {} requests of each kind, {} bytes each",
        before.rss_mib(),
        before.hwm_mib(),
        args.requests,
        args.hostile_bytes
    );
    let huge: Arc<str> = "x".repeat(args.hostile_bytes).into();
    let mut kinds = Vec::new();
    for kind in Kind::ALL {
        let start = Instant::now();
        let (refused, errors) = send_all(args, &channel, kind, &huge).await?;
        let secs = start.elapsed().as_secs_f64();
        tokio::time::sleep(SETTLE).await;
        let after = floodgate.memory()?;
        eprintln!(
            "{:<36} refused {refused:>6} / {}  errors {:>4}  {secs:>6.1}s  rss {:>7.1} MiB  VmHWM {:>7.1} MiB",
            kind.name(),
            args.requests,
            errors.values().sum::<u64>(),
            after.rss_mib(),
            after.hwm_mib()
        );
        kinds.push(KindSummary {
            kind: kind.name(),
            sent: args.requests,
            refused,
            errors,
            secs,
            rss_after_mib: after.rss_mib(),
            hwm_after_mib: after.hwm_mib(),
        });
    }
    tokio::time::sleep(SETTLE).await;
    let end: Memory = floodgate.memory()?;
    Ok(Summary {
        server: floodgate.describe(),
        requests_per_kind: args.requests,
        hostile_bytes: args.hostile_bytes,
        rss_before_mib: before.rss_mib(),
        hwm_before_mib: before.hwm_mib(),
        errors: kinds.iter().flat_map(|k| k.errors.values()).sum(),
        kinds,
        rss_end_mib: end.rss_mib(),
        hwm_end_mib: end.hwm_mib(),
    })
}

/// Sends `--requests` calls of `kind` from `--callers` callers, each with one call in flight.
/// Returns how many were refused as they must be, and every other answer by code.
async fn send_all(
    args: &MemoryArgs,
    channel: &AuthedChannel,
    kind: Kind,
    huge: &Arc<str>,
) -> Result<(u64, BTreeMap<String, u64>)> {
    let next = Arc::new(AtomicU64::new(0));
    let mut callers = JoinSet::new();
    for _ in 0..args.callers {
        let (channel, huge, next, total) =
            (channel.clone(), huge.clone(), next.clone(), args.requests);
        callers.spawn(async move {
            let mut refused = 0u64;
            let mut errors = BTreeMap::<String, u64>::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                match kind.call(channel.clone(), &huge, i).await {
                    Err(status)
                        if matches!(
                            status.code(),
                            Code::InvalidArgument | Code::ResourceExhausted
                        ) =>
                    {
                        refused += 1;
                    }
                    Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
                    Ok(()) => *errors.entry("accepted".into()).or_default() += 1,
                }
            }
            (refused, errors)
        });
    }
    let mut refused = 0;
    let mut errors = BTreeMap::new();
    while let Some(done) = callers.join_next().await {
        let (r, e) = done.context("a hostile caller panicked")?;
        refused += r;
        for (code, n) in e {
            *errors.entry(code).or_default() += n;
        }
    }
    Ok((refused, errors))
}

/// Prints the summary to stdout.
pub(super) fn print(s: &Summary) {
    println!();
    println!("server:             {}", s.server);
    println!(
        "scenario:           hostile: {} requests of each kind, oversized fields of {} bytes",
        s.requests_per_kind, s.hostile_bytes
    );
    println!(
        "rss before:         {:.1} MiB (VmHWM {:.1} MiB)",
        s.rss_before_mib, s.hwm_before_mib
    );
    for k in &s.kinds {
        let errors: Vec<String> = k.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        println!(
            "{:<36} refused {} of {} in {:.1}s; rss {:.1} MiB (VmHWM {:.1} MiB){}",
            format!("{}:", k.kind),
            k.refused,
            k.sent,
            k.secs,
            k.rss_after_mib,
            k.hwm_after_mib,
            if errors.is_empty() {
                String::new()
            } else {
                format!("; NOT REFUSED: {}", errors.join(", "))
            }
        );
    }
    println!(
        "rss end:            {:.1} MiB (VmHWM {:.1} MiB)",
        s.rss_end_mib, s.hwm_end_mib
    );
    println!("errors:             {}", s.errors);
}
