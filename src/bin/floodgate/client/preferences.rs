//! `floodgate pref set|get`: a recipient's opt-outs per channel and lane, as the service that
//! owns users' settings would set them through `Preferences`.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{Connection, rpc_error};
use floodgate_client::proto;

#[derive(Debug, Subcommand)]
pub(crate) enum PrefCommand {
    /// Opt a recipient out of (or back in to) a channel and lane.
    Set(SetArgs),
    /// Show a recipient's stored preferences.
    Get(GetArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    #[arg(long)]
    customer: String,
    #[arg(long)]
    recipient: String,
    /// Only this lane (transactional or bulk) [default: every lane].
    #[arg(long, value_parser = ["transactional", "bulk"])]
    lane: Option<String>,
    /// The channel: webhook, fcm, apns, email or sms [default: the webhook].
    #[arg(long, value_parser = super::parse_channel)]
    channel: Option<floodgate::model::Channel>,
    /// Opt out (the default) ...
    #[arg(long, conflicts_with = "opt_in")]
    opt_out: bool,
    /// ... or opt back in.
    #[arg(long)]
    opt_in: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    #[arg(long)]
    customer: String,
    #[arg(long)]
    recipient: String,
    #[command(flatten)]
    connection: Connection,
}

/// Runs one `pref` subcommand.
pub(crate) async fn run(command: PrefCommand) -> Result<()> {
    match command {
        PrefCommand::Set(args) => set(args).await,
        PrefCommand::Get(args) => get(args).await,
    }
}

async fn set(args: SetArgs) -> Result<()> {
    let mut client = args.connection.client().await?.preferences();
    let lane = match args.lane.as_deref() {
        Some("transactional") => proto::Lane::Transactional,
        Some("bulk") => proto::Lane::Bulk,
        _ => proto::Lane::Unspecified,
    };
    let channel = args.channel.map_or(
        proto::Channel::Unspecified,
        floodgate::api::convert::proto_channel,
    );
    let saved = client
        .set_preference(proto::SetPreferenceRequest {
            preference: Some(proto::Preference {
                customer_id: args.customer,
                recipient: args.recipient,
                channel: channel as i32,
                lane: lane as i32,
                opted_out: !args.opt_in,
                updated_at: None,
            }),
        })
        .await
        .map_err(|status| rpc_error("SetPreference", &status))?
        .into_inner();
    print_header();
    print_preference(&saved);
    Ok(())
}

async fn get(args: GetArgs) -> Result<()> {
    let mut client = args.connection.client().await?.preferences();
    let found = client
        .get_preferences(proto::GetPreferencesRequest {
            customer_id: args.customer,
            recipient: args.recipient,
        })
        .await
        .map_err(|status| rpc_error("GetPreferences", &status))?
        .into_inner();
    print_header();
    for preference in &found.preferences {
        print_preference(preference);
    }
    Ok(())
}

fn print_header() {
    println!("{:<10} {:<14} CHOICE", "CHANNEL", "LANE");
}

fn print_preference(p: &proto::Preference) {
    let channel = super::notifications::channel_name(p.channel);
    let lane = match proto::Lane::try_from(p.lane) {
        Ok(proto::Lane::Unspecified) | Err(_) => "every lane".to_owned(),
        Ok(l) => l.as_str_name().trim_start_matches("LANE_").to_lowercase(),
    };
    let choice = if p.opted_out { "opted out" } else { "opted in" };
    println!("{channel:<10} {lane:<14} {choice}");
}
