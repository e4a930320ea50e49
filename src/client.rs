//! The client subcommands (`floodgate customer|send|status|token`…), so a person can try floodgate
//! without writing code. They speak the same gRPC API as any service.

pub mod channels;
pub mod cluster;
pub mod error;
pub mod notifications;
pub mod preferences;
pub mod tokens;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::api::convert::timestamp;
use crate::api::proto;
use crate::app::ADMIN_TOKEN_FILE;
use crate::model::now_millis;
use error::CliError;

/// Where the server is and how to authenticate; shared by every client subcommand.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The server's gRPC address: HOST:PORT (as --grpc-addr) or a URL (http://…, https://…).
    #[arg(
        long,
        env = "FLOODGATE_SERVER",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// Bearer token [default: the admin token saved in DATA_DIR/admin-token].
    #[arg(long, env = "FLOODGATE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Data directory to read the saved admin token from.
    #[arg(
        long,
        env = "FLOODGATE_DATA_DIR",
        default_value = "floodgate-data",
        global = true
    )]
    data_dir: PathBuf,
    /// PEM CA certificate(s) an https:// --server's certificate must chain to [default: the
    /// public web roots]. For a private CA, such as the one that signed --tls-cert.
    #[arg(long, env = "FLOODGATE_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (--tls-client-ca); with
    /// --tls-client-key.
    #[arg(long, env = "FLOODGATE_TLS_CLIENT_CERT", global = true)]
    tls_client_cert: Option<PathBuf>,
    /// PEM private key of --tls-client-cert.
    #[arg(long, env = "FLOODGATE_TLS_CLIENT_KEY", global = true)]
    tls_client_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Create or update a customer system; prints its signing secret.
    #[command(after_help = "Example:
  floodgate customer add acme --webhook-url https://hooks.acme.example/floodgate --max-rate 50")]
    Add(AddCustomerArgs),
    /// List customer systems.
    List(ListArgs),
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
pub struct RotateSecretArgs {
    /// Customer id.
    id: String,
    /// How long webhooks also carry the old secret's signature (e.g. 1h, 2d) [default: 24h].
    #[arg(long, value_parser = humantime::parse_duration)]
    overlap: Option<Duration>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct CustomerIdArgs {
    /// Customer id.
    id: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct AddCustomerArgs {
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

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The customer system to deliver to.
    #[arg(long)]
    customer: String,
    /// The user inside the customer system.
    #[arg(long)]
    recipient: String,
    /// The payload (JSON recommended).
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Idempotency key [default: a random one].
    #[arg(long)]
    key: Option<String>,
    /// Send in the bulk lane instead of transactional.
    #[arg(long)]
    bulk: bool,
    /// Delay the send by this long (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    send_in: Option<Duration>,
    /// The channel: webhook, fcm, apns, email or sms [default: the webhook].
    #[arg(long, value_parser = parse_channel)]
    channel: Option<crate::model::Channel>,
    /// Render this template of the customer instead of sending --payload.
    #[arg(long, conflicts_with = "payload")]
    template: Option<String>,
    /// A template variable, NAME=VALUE (a string); repeat for more.
    #[arg(long = "var", value_parser = parse_variable, requires = "template")]
    variables: Vec<(String, String)>,
    #[command(flatten)]
    connection: Connection,
}

fn parse_channel(name: &str) -> Result<crate::model::Channel, String> {
    crate::model::Channel::from_name(name)
        .ok_or_else(|| format!("unknown channel {name:?}: webhook, fcm, apns, email or sms"))
}

fn parse_variable(pair: &str) -> Result<(String, String), String> {
    let (name, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("{pair:?} is not NAME=VALUE"))?;
    Ok((name.to_owned(), value.to_owned()))
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Refresh interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Print the table once and exit (for scripts).
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The notification id `send` printed.
    id: String,
    #[command(flatten)]
    connection: Connection,
}

impl Connection {
    /// Connects to the server with the bearer token (and TLS for an `https://` server) through
    /// floodgate-client; every failure is a [`CliError`] saying what to fix.
    pub(crate) async fn client(&self) -> Result<floodgate_client::Client> {
        let connected = self
            .with_tls(floodgate_client::Client::builder(self.server.as_str()))?
            .token(self.token()?)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await;
        connected.map_err(|err| self.cli_error(err).into())
    }

    /// What a failed connection or call means for the person at the terminal.
    pub(crate) fn cli_error(&self, error: floodgate_client::Error) -> CliError {
        use floodgate_client::Error;
        match error {
            Error::InvalidAddress { reason, .. } => CliError::Usage {
                message: format!("--server {:?} is not an address: {reason}", self.server),
                hint: "give HOST:PORT (such as 127.0.0.1:50051) or a URL (such as \
                       http://127.0.0.1:50051)."
                    .into(),
            },
            Error::InvalidToken => CliError::Usage {
                message: "the token holds characters an HTTP header cannot carry".into(),
                hint: "check --token (or FLOODGATE_TOKEN) for stray spaces or line breaks.".into(),
            },
            Error::Tls { source } => CliError::Usage {
                message: format!("cannot set up TLS: {}", error::root_cause(&source)),
                hint: "--tls-ca, --tls-client-cert and --tls-client-key name PEM files.".into(),
            },
            Error::Connect { source, .. } => CliError::Connect {
                server: self.server.clone(),
                reason: error::root_cause(&source),
            },
            Error::Status { call, status, .. } => {
                CliError::from_status(call, "the --server address", &status)
            }
            Error::Batch { source, .. } => self.cli_error(*source),
            // A kind of failure newer than this match: still one line, never a backtrace.
            other => CliError::Usage {
                message: error::one_line(&other),
                hint: String::new(),
            },
        }
    }

    /// The TLS files of `--tls-ca`, `--tls-client-cert` and `--tls-client-key`, read into the
    /// builder (which uses them only for an `https://` server).
    fn with_tls(
        &self,
        mut builder: floodgate_client::ClientBuilder,
    ) -> Result<floodgate_client::ClientBuilder, CliError> {
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|err| CliError::Usage {
                message: format!("cannot read {flag} {}: {err}", path.display()),
                hint: format!("{flag} names a PEM file floodgate can read."),
            })
        };
        if let Some(ca) = &self.tls_ca {
            builder = builder.tls_ca_pem(read("--tls-ca", ca)?);
        }
        match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => Ok(builder.tls_identity_pem(
                read("--tls-client-cert", cert)?,
                read("--tls-client-key", key)?,
            )),
            (None, None) => Ok(builder),
            _ => Err(CliError::Usage {
                message: "--tls-client-cert and --tls-client-key go together".into(),
                hint: "give both (the certificate and its key), or neither.".into(),
            }),
        }
    }

    /// `--token`, or else the admin token `floodgate serve` saved in the data directory.
    fn token(&self) -> Result<String, CliError> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let path = self.data_dir.join(ADMIN_TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(token) => Ok(token.trim().to_owned()),
            Err(err) => Err(CliError::Usage {
                message: format!("no --token given and cannot read {}: {err}", path.display()),
                hint: "pass --token (or set FLOODGATE_TOKEN), or run where `floodgate serve` \
                       keeps its data (or point --data-dir at it)."
                    .into(),
            }),
        }
    }
}

/// Runs one customer subcommand.
pub async fn customer(command: CustomerCommand) -> Result<()> {
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
        CustomerCommand::List(args) => {
            let mut client = args.connection.client().await?.customers();
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
            print!("{}", render_top(std::slice::from_ref(&stats)));
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

/// Submits one notification and prints its id.
pub async fn send(args: SendArgs) -> Result<()> {
    // Through floodgate-client's submit: an UNAVAILABLE answer is retried with the same key.
    let client = args.connection.client().await?;
    let key = args
        .key
        .unwrap_or_else(|| format!("cli-{:016x}", rand::random::<u64>()));
    let send_at = args.send_in.map(|delay| {
        timestamp(now_millis().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)))
    });
    let lane = if args.bulk {
        proto::Lane::Bulk
    } else {
        proto::Lane::Transactional
    };
    let variables = args.template.as_ref().map(|_| prost_types::Struct {
        fields: args
            .variables
            .into_iter()
            .map(|(name, value)| {
                let value = prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(value)),
                };
                (name, value)
            })
            .collect(),
    });
    let payload = match args.template {
        Some(_) => Vec::new(),
        None => args.payload.into_bytes(),
    };
    let channel = args.channel.map_or(
        proto::Channel::Unspecified,
        crate::api::convert::proto_channel,
    );
    let response = client
        .submit(proto::SubmitRequest {
            customer_id: args.customer,
            idempotency_key: key,
            recipient: args.recipient,
            lane: lane as i32,
            payload,
            send_at,
            expires_at: None,
            channel: channel as i32,
            template_id: args.template.unwrap_or_default(),
            variables,
        })
        .await
        .map_err(|err| args.connection.cli_error(err))?;
    let mut note = if response.duplicate {
        " (duplicate: already accepted)".to_owned()
    } else {
        String::new()
    };
    // A recipient who opted out still gets a stored notification; say so, or the person
    // waits for a webhook that will never come.
    let stored = client
        .get_notification(&response.notification_id)
        .await
        .map_err(|err| args.connection.cli_error(err))?;
    if stored.state == proto::State::Suppressed as i32 {
        note.push_str(&format!(" SUPPRESSED: {}", stored.last_error));
    }
    println!("{}{note}", response.notification_id);
    Ok(())
}

/// Prints one notification's state.
pub async fn status(args: StatusArgs) -> Result<()> {
    let mut client = args.connection.client().await?.dispatcher();
    let n = client
        .get_notification(proto::GetNotificationRequest {
            notification_id: args.id,
        })
        .await
        .map_err(|status| rpc_error("GetNotification", &status))?
        .into_inner();
    notifications::print_notification(&n);
    Ok(())
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

/// A failed call, typed for the exit code: a broken connection or the server's refusal.
pub(crate) fn rpc_error(call: &'static str, status: &tonic::Status) -> anyhow::Error {
    CliError::from_status(call, "the --server address", status).into()
}

/// A live table of every customer system's delivery figures, refreshed until Ctrl-C.
pub async fn top(args: TopArgs) -> Result<()> {
    let mut client = args.connection.client().await?.customers();
    loop {
        let mut stats = client
            .list_customer_stats(proto::ListCustomerStatsRequest {})
            .await
            .map_err(|status| rpc_error("ListCustomerStats", &status))?
            .into_inner()
            .stats;
        stats.sort_by(|a, b| {
            b.delivered_per_sec
                .total_cmp(&a.delivered_per_sec)
                .then(a.customer_id.cmp(&b.customer_id))
        });
        if !args.once {
            print!("\x1b[2J\x1b[H"); // clear the screen, cursor home
        }
        print!("{}", render_top(&stats));
        if args.once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn render_top(stats: &[proto::CustomerStats]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<20} {:<12} {:>6} {:>9} {:>9} {:>8} {:>8} {:>6} {:>6} {:>10} {:>10} {:<9} {}\n",
        "CUSTOMER",
        "TIER",
        "LIMIT",
        "RATE/s",
        "DELIV/s",
        "RTT p50",
        "RTT p99",
        "ERR%",
        "INFLT",
        "BACKLOG-T",
        "BACKLOG-B",
        "CIRCUIT",
        "OWNER"
    );
    for s in stats {
        let tier = proto::Tier::try_from(s.tier)
            .map_or("?", |t| t.as_str_name())
            .trim_start_matches("TIER_")
            .to_lowercase();
        let circuit = proto::CircuitState::try_from(s.circuit)
            .map_or("?", |c| c.as_str_name())
            .trim_start_matches("CIRCUIT_STATE_")
            .to_lowercase();
        let _ = writeln!(
            out,
            "{:<20} {:<12} {:>6} {:>9.1} {:>9.1} {:>6.1}ms {:>6.1}ms {:>5.1}% {:>6} {:>10} {:>10} {:<9} {}",
            s.customer_id,
            tier,
            s.concurrency_limit,
            s.pacing_rate,
            s.delivered_per_sec,
            s.rtt_p50_ms,
            s.rtt_p99_ms,
            s.error_rate * 100.0,
            s.in_flight,
            s.backlog_transactional,
            s.backlog_bulk,
            circuit,
            if s.owner_node.is_empty() {
                "-"
            } else {
                &s.owner_node
            }
        );
    }
    out
}
