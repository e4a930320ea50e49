//! The notification subcommands beyond `send`: `status` shows every field, `cancel` stops one,
//! `inbox` and `archive` page through one recipient's notifications. Same gRPC calls as any
//! service makes.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::Args;

use super::{Connection, rpc_error};
use floodgate_client::proto;

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The notification id `send` printed.
    id: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The customer system.
    #[arg(long)]
    customer: String,
    /// The recipient whose notifications to list.
    #[arg(long)]
    recipient: String,
    /// Notifications per page (at most 500).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue from this page token (printed under a full page).
    #[arg(long, default_value = "")]
    page_token: String,
    #[command(flatten)]
    connection: Connection,
}

/// Prints one notification, every field, one per line.
pub(crate) fn print_notification(n: &proto::Notification) {
    let name = |value: Option<&str>, prefix: &str| {
        value.map_or("UNKNOWN".to_owned(), |v| {
            v.trim_start_matches(prefix).to_owned()
        })
    };
    let state = name(
        proto::State::try_from(n.state)
            .ok()
            .map(|s| s.as_str_name()),
        "STATE_",
    );
    let lane = name(
        proto::Lane::try_from(n.lane).ok().map(|l| l.as_str_name()),
        "LANE_",
    )
    .to_lowercase();
    let channel = channel_name(n.channel);
    let rows = [
        ("id", n.id.clone()),
        ("customer", n.customer_id.clone()),
        ("recipient", n.recipient.clone()),
        ("state", state),
        ("attempts", n.attempts.to_string()),
        ("error", n.last_error.clone()),
        ("key", n.idempotency_key.clone()),
        ("lane", lane),
        ("channel", channel),
        ("template", template(n)),
        ("payload", String::from_utf8_lossy(&n.payload).into_owned()),
        ("created", time(n.created_at)),
        ("updated", time(n.updated_at)),
        ("send at", time(n.send_at)),
        ("expires", time(n.expires_at)),
        ("next try", time(n.next_attempt_at)),
        ("delivered", time(n.delivered_at)),
    ];
    for (label, value) in rows {
        if !value.is_empty() {
            println!("{:<10} {value}", format!("{label}:"));
        }
    }
}

/// A channel as the CLI's flags spell it: webhook, fcm, apns, email or sms.
pub(super) fn channel_name(channel: i32) -> String {
    match proto::Channel::try_from(channel) {
        Ok(proto::Channel::Unspecified) | Err(_) => "webhook".to_owned(),
        Ok(channel) => channel
            .as_str_name()
            .trim_start_matches("CHANNEL_")
            .to_lowercase(),
    }
}

fn template(n: &proto::Notification) -> String {
    if n.template_id.is_empty() {
        String::new()
    } else {
        format!("{} v{}", n.template_id, n.template_version)
    }
}

/// A timestamp as RFC 3339 in UTC, or empty when unset.
pub(super) fn time(t: Option<prost_types::Timestamp>) -> String {
    let Some(t) = t else { return String::new() };
    let (Ok(secs), Ok(nanos)) = (u64::try_from(t.seconds), u32::try_from(t.nanos)) else {
        return String::new();
    };
    let at = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
    humantime::format_rfc3339_millis(at).to_string()
}

/// `floodgate cancel ID`.
pub(crate) async fn cancel(args: CancelArgs) -> Result<()> {
    let mut client = args.connection.client().await?.dispatcher();
    let n = client
        .cancel_notification(proto::CancelNotificationRequest {
            notification_id: args.id,
        })
        .await
        .map_err(|status| rpc_error("CancelNotification", &status))?
        .into_inner();
    print_notification(&n);
    Ok(())
}

/// `floodgate inbox`: the recipient's notifications within the inbox retention, newest first.
pub(crate) async fn inbox(args: ListArgs) -> Result<()> {
    let mut client = args.connection.client().await?.dispatcher();
    let page = client
        .list_notifications(request(&args))
        .await
        .map_err(|status| rpc_error("ListNotifications", &status))?
        .into_inner();
    print_page(&page);
    Ok(())
}

/// `floodgate archive`: the recipient's notifications past the inbox retention (admin token).
pub(crate) async fn archive(args: ListArgs) -> Result<()> {
    let mut client = args.connection.client().await?.archive();
    let page = client
        .list_archived_notifications(request(&args))
        .await
        .map_err(|status| rpc_error("ListArchivedNotifications", &status))?
        .into_inner();
    print_page(&page);
    Ok(())
}

fn request(args: &ListArgs) -> proto::ListNotificationsRequest {
    proto::ListNotificationsRequest {
        customer_id: args.customer.clone(),
        recipient: args.recipient.clone(),
        page_size: args.limit,
        page_token: args.page_token.clone(),
    }
}

fn print_page(page: &proto::ListNotificationsResponse) {
    println!(
        "{:<12} {:<11} {:<9} {:<24}  PAYLOAD",
        "ID", "STATE", "ATTEMPTS", "CREATED"
    );
    for n in &page.notifications {
        let state = proto::State::try_from(n.state)
            .map_or("UNKNOWN", |s| s.as_str_name())
            .trim_start_matches("STATE_");
        println!(
            "{:<12} {:<11} {:<9} {:<24}  {}",
            n.id,
            state,
            n.attempts,
            time(n.created_at),
            String::from_utf8_lossy(&n.payload)
        );
    }
    if !page.next_page_token.is_empty() {
        println!("more: --page-token {}", page.next_page_token);
    }
}
