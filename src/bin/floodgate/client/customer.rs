//! `floodgate customer …`: register, list, show, pause and resume customer systems, and rotate
//! their signing secrets.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use floodgate_client::proto;

use super::error::CliError;
use super::{Connection, channels, rpc_error};

#[derive(Debug, Subcommand)]
pub(crate) enum CustomerCommand {
    /// Create or update a customer system; prints its signing secret.
    #[command(after_help = "Example:
  floodgate customer add acme --webhook-url https://hooks.acme.example/floodgate --max-rate 50")]
    Add(AddCustomerArgs),
    /// List customer systems.
    List(Connection),
    /// Show one customer system's settings and live figures.
    Get(CustomerIdArgs),
    /// Stop sending to a customer system; its notifications wait in the store.
    Pause(CustomerIdArgs),
    /// Start sending to a paused customer system again.
    Resume(CustomerIdArgs),
    /// Set a customer system's FCM, APNs, email or SMS settings.
    #[command(subcommand)]
    Channels(channels::ChannelsCommand),
    /// Generate a new signing secret; the old one keeps signing for --overlap; prints the new one
    /// (the only time it is shown).
    RotateSecret(RotateSecretArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RotateSecretArgs {
    /// Customer id.
    id: String,
    /// How long webhooks also carry the old secret's signature (e.g. 1h, 2d) [default: 24h].
    #[arg(long, value_parser = humantime::parse_duration)]
    overlap: Option<Duration>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct CustomerIdArgs {
    /// Customer id.
    id: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct AddCustomerArgs {
    /// Customer id (letters, digits, '-', '_', '.').
    id: String,
    /// URL that receives the signed webhooks.
    #[arg(long)]
    webhook_url: String,
    /// Hard ceiling in deliveries per second (0 = none).
    #[arg(long, default_value_t = 0)]
    max_rate: u32,
    /// Register it paused (nothing is sent until it is updated unpaused).
    #[arg(long)]
    paused: bool,
    /// Signing secret (whsec_…) [default: keep the current one, or generate one]. A new secret
    /// is printed once; the server never shows it again.
    #[arg(long)]
    signing_secret: Option<String>,
    /// Tier the controller starts this customer in (fast, medium, slow) [default: fast].
    #[arg(long, value_parser = ["fast", "medium", "slow"])]
    start_tier: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

/// Runs one customer subcommand.
pub(crate) async fn run(command: CustomerCommand) -> Result<()> {
    match command {
        CustomerCommand::Add(args) => {
            let mut client = args.connection.client().await?.customers();
            // Channel settings have no flags here: keep the stored ones (their secrets come
            // back empty, which UpsertCustomer reads as "keep").
            let stored = match client
                .get_customer(proto::GetCustomerRequest {
                    customer_id: args.id.clone(),
                })
                .await
            {
                Ok(found) => found.into_inner(),
                Err(status) if status.code() == tonic::Code::NotFound => proto::Customer::default(),
                Err(status) => return Err(rpc_error("GetCustomer", &status)),
            };
            let customer = proto::Customer {
                fcm: stored.fcm,
                apns: stored.apns,
                email: stored.email,
                sms: stored.sms,
                previous_secret_until: None,
                id: args.id,
                webhook_url: args.webhook_url,
                signing_secret: args.signing_secret.unwrap_or_default(),
                max_rate_per_sec: args.max_rate,
                paused: args.paused,
                start_tier: match args.start_tier.as_deref() {
                    Some("fast") => proto::Tier::Fast,
                    Some("medium") => proto::Tier::Medium,
                    Some("slow") => proto::Tier::Slow,
                    _ => proto::Tier::Unspecified,
                } as i32,
            };
            let saved = save_customer(&mut client, customer).await?;
            println!("customer {} -> {}", saved.id, saved.webhook_url);
            // The server shows a signing secret once, in the answer that made it.
            match saved.signing_secret.as_str() {
                "" => println!("signing secret: unchanged"),
                secret => println!("signing secret: {secret}\n{SECRET_SHOWN_ONCE}"),
            }
        }
        CustomerCommand::List(connection) => {
            let mut client = connection.client().await?.customers();
            let list = client
                .list_customers(proto::ListCustomersRequest {})
                .await
                .map_err(|status| rpc_error("ListCustomers", &status))?
                .into_inner();
            println!("{:<24} {:>9} {:>7}  WEBHOOK", "ID", "MAX RATE", "PAUSED");
            for c in list.customers {
                let rate = if c.max_rate_per_sec == 0 {
                    "-".to_owned()
                } else {
                    c.max_rate_per_sec.to_string()
                };
                println!(
                    "{:<24} {:>9} {:>7}  {}",
                    c.id, rate, c.paused, c.webhook_url
                );
            }
        }
        CustomerCommand::Get(args) => {
            let mut client = args.connection.client().await?.customers();
            let customer = client
                .get_customer(proto::GetCustomerRequest {
                    customer_id: args.id.clone(),
                })
                .await
                .map_err(|status| rpc_error("GetCustomer", &status))?
                .into_inner();
            let stats = client
                .get_customer_stats(proto::GetCustomerStatsRequest {
                    customer_id: args.id,
                })
                .await
                .map_err(|status| rpc_error("GetCustomerStats", &status))?
                .into_inner();
            print_customer(&customer);
            print!("{}", super::top::render_top(std::slice::from_ref(&stats)));
        }
        CustomerCommand::Pause(args) => {
            let mut client = args.connection.client().await?.customers();
            let customer = client
                .pause_customer(proto::PauseCustomerRequest {
                    customer_id: args.id,
                })
                .await
                .map_err(|status| rpc_error("PauseCustomer", &status))?
                .into_inner();
            println!(
                "customer {} paused: nothing is sent until `floodgate customer resume {}`",
                customer.id, customer.id
            );
        }
        CustomerCommand::Resume(args) => {
            let mut client = args.connection.client().await?.customers();
            let customer = client
                .resume_customer(proto::ResumeCustomerRequest {
                    customer_id: args.id,
                })
                .await
                .map_err(|status| rpc_error("ResumeCustomer", &status))?
                .into_inner();
            println!("customer {} resumed", customer.id);
        }
        CustomerCommand::Channels(command) => channels::run(command).await?,
        CustomerCommand::RotateSecret(args) => {
            let overlap_seconds = match args.overlap {
                // Zero asks the server for its default; anything else is at least a second.
                None => 0,
                Some(overlap) => {
                    u32::try_from(overlap.as_secs().max(1)).map_err(|_| CliError::Usage {
                        message: "--overlap is too long".into(),
                        hint: "the server accepts at most 30 days".into(),
                    })?
                }
            };
            let mut client = args.connection.client().await?.customers();
            let customer = client
                .rotate_signing_secret(proto::RotateSigningSecretRequest {
                    customer_id: args.id,
                    overlap_seconds,
                })
                .await
                .map_err(|status| rpc_error("RotateSigningSecret", &status))?
                .into_inner();
            println!(
                "customer {}: new signing secret: {}\n{SECRET_SHOWN_ONCE}",
                customer.id, customer.signing_secret
            );
            if let Some(until) = customer.previous_secret_until {
                println!(
                    "the old secret keeps signing until {} (unix seconds)",
                    until.seconds
                );
            }
        }
    }
    Ok(())
}

/// What follows a signing secret the server has just made: it will not show it again.
const SECRET_SHOWN_ONCE: &str = "(shown only now: give it to the customer system; a lost secret is replaced with `floodgate customer rotate-secret`)";

/// A customer's settings, one per line; reads return no secret (signing or provider).
fn print_customer(c: &proto::Customer) {
    let tier = proto::Tier::try_from(c.start_tier)
        .map_or("?", |t| t.as_str_name())
        .trim_start_matches("TIER_")
        .to_lowercase();
    let channels: Vec<&str> = [
        ("fcm", c.fcm.is_some()),
        ("apns", c.apns.is_some()),
        ("email", c.email.is_some()),
        ("sms", c.sms.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    println!("id:         {}", c.id);
    println!("webhook:    {}", c.webhook_url);
    println!("secret:     set (shown only by `customer add` and `customer rotate-secret`)");
    println!(
        "max rate:   {}",
        if c.max_rate_per_sec == 0 {
            "none".to_owned()
        } else {
            format!("{}/s", c.max_rate_per_sec)
        }
    );
    println!("paused:     {}", c.paused);
    println!("start tier: {tier}");
    println!("channels:   webhook {}", channels.join(" "));
    println!();
}

/// Writes a customer's registration (`UpsertCustomer`): `customer add` and `customer channels
/// set` both end here.
pub(crate) async fn save_customer(
    client: &mut proto::customers_client::CustomersClient<floodgate_client::AuthedChannel>,
    customer: proto::Customer,
) -> Result<proto::Customer> {
    Ok(client
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(customer),
        })
        .await
        .map_err(|status| rpc_error("UpsertCustomer", &status))?
        .into_inner())
}
