//! `floodgate customer channels set`: a customer's FCM, APNs, email or SMS settings from the
//! command line, so a channel can be tried without grpcurl. It reads the customer, replaces one
//! channel's settings and writes it back through `UpsertCustomer`; the other channels and the
//! webhook stay as stored (secrets read back empty, which the server reads as "keep").

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};

use super::customer::save_customer;
use super::error::CliError;
use super::{Connection, rpc_error};
use floodgate_client::proto;

#[derive(Debug, Subcommand)]
pub(crate) enum ChannelsCommand {
    /// Set one channel's provider settings on a customer system (replacing that channel's).
    Set(SetArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    /// Customer id.
    id: String,
    #[command(subcommand)]
    channel: ChannelSettings,
    #[command(flatten)]
    connection: Connection,
}

/// One channel's settings; a secret left out keeps the stored one while the endpoint is unchanged.
#[derive(Debug, Subcommand)]
pub(crate) enum ChannelSettings {
    /// SMTP submission; recipients are e-mail addresses.
    Email {
        /// The SMTP server's host name.
        #[arg(long)]
        smtp_host: String,
        /// The SMTP port [default: 587 for starttls, 465 for tls, 25 for none].
        #[arg(long)]
        smtp_port: Option<u16>,
        /// The SMTP user [default: no authentication].
        #[arg(long)]
        username: Option<String>,
        /// The SMTP password [default: keep the stored one].
        #[arg(long, env = "FLOODGATE_SMTP_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// The From mailbox, e.g. "Acme <no-reply@acme.example>".
        #[arg(long)]
        from: String,
        /// How the connection is encrypted: starttls, tls or none (a local relay only).
        #[arg(long, default_value = "starttls", value_parser = ["starttls", "tls", "none"])]
        tls: String,
    },
    /// A Twilio-style SMS API; recipients are E.164 phone numbers.
    Sms {
        /// The API's base URL [default: https://api.twilio.com].
        #[arg(long)]
        base_url: Option<String>,
        /// The account SID.
        #[arg(long)]
        account_sid: String,
        /// The auth token [default: keep the stored one].
        #[arg(long, env = "FLOODGATE_SMS_AUTH_TOKEN", hide_env_values = true)]
        auth_token: Option<String>,
        /// The sending number (E.164) or alphanumeric sender id.
        #[arg(long)]
        from: String,
    },
    /// Firebase Cloud Messaging; recipients are FCM registration tokens.
    Fcm {
        /// The API's base URL [default: https://fcm.googleapis.com].
        #[arg(long)]
        base_url: Option<String>,
        /// The Google service-account key JSON file [default: keep the stored one].
        #[arg(long)]
        service_account: Option<PathBuf>,
    },
    /// Apple Push Notification service (token-based); recipients are hex device tokens.
    Apns {
        /// The API's base URL [default: https://api.push.apple.com].
        #[arg(long)]
        base_url: Option<String>,
        /// The Apple developer team id.
        #[arg(long)]
        team_id: String,
        /// The id of the .p8 key.
        #[arg(long)]
        key_id: String,
        /// The .p8 key file (PKCS#8 PEM) [default: keep the stored one].
        #[arg(long)]
        private_key: Option<PathBuf>,
        /// The app's bundle id (apns-topic).
        #[arg(long)]
        topic: String,
    },
}

/// Runs one `customer channels` subcommand.
pub(crate) async fn run(command: ChannelsCommand) -> Result<()> {
    let ChannelsCommand::Set(args) = command;
    let mut client = args.connection.client().await?.customers();
    // The read carries no signing secret, so saving it back keeps the stored one (and a rotation
    // in progress).
    let mut customer = client
        .get_customer(proto::GetCustomerRequest {
            customer_id: args.id.clone(),
        })
        .await
        .map_err(|status| rpc_error("GetCustomer", &status))?
        .into_inner();
    let name = match args.channel {
        ChannelSettings::Email {
            smtp_host,
            smtp_port,
            username,
            password,
            from,
            tls,
        } => {
            customer.email = Some(proto::EmailSettings {
                smtp_host,
                smtp_port: smtp_port.map_or(0, u32::from),
                username: username.unwrap_or_default(),
                password: password.unwrap_or_default(),
                from,
                tls: match tls.as_str() {
                    "tls" => proto::EmailTls::Tls,
                    "none" => proto::EmailTls::None,
                    _ => proto::EmailTls::Starttls,
                } as i32,
            });
            "email"
        }
        ChannelSettings::Sms {
            base_url,
            account_sid,
            auth_token,
            from,
        } => {
            customer.sms = Some(proto::SmsSettings {
                base_url: base_url.unwrap_or_default(),
                account_sid,
                auth_token: auth_token.unwrap_or_default(),
                from,
            });
            "sms"
        }
        ChannelSettings::Fcm {
            base_url,
            service_account,
        } => {
            customer.fcm = Some(proto::FcmSettings {
                base_url: base_url.unwrap_or_default(),
                service_account_json: read_secret("--service-account", service_account.as_deref())?,
            });
            "fcm"
        }
        ChannelSettings::Apns {
            base_url,
            team_id,
            key_id,
            private_key,
            topic,
        } => {
            customer.apns = Some(proto::ApnsSettings {
                base_url: base_url.unwrap_or_default(),
                team_id,
                key_id,
                private_key_pem: read_secret("--private-key", private_key.as_deref())?,
                topic,
            });
            "apns"
        }
    };
    let saved = save_customer(&mut client, customer).await?;
    println!("customer {}: {name} channel set", saved.id);
    Ok(())
}

/// A secret file's content, or empty (the server keeps the stored secret) when none is given.
fn read_secret(flag: &str, path: Option<&Path>) -> Result<String, CliError> {
    let Some(path) = path else {
        return Ok(String::new());
    };
    std::fs::read_to_string(path).map_err(|err| CliError::Usage {
        message: format!("cannot read {flag} {}: {err}", path.display()),
        hint: format!("{flag} names a file floodgate can read."),
    })
}
