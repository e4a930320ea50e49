//! The client subcommands (`floodgate customer|send|status|token`…), so a person can try floodgate
//! without writing code. They speak the same gRPC API as any service.

pub(crate) mod channels;
pub(crate) mod cluster;
pub(crate) mod customer;
pub(crate) mod error;
pub(crate) mod notifications;
pub(crate) mod preferences;
pub(crate) mod tokens;
pub(crate) mod top;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use floodgate::api::convert::timestamp;
use floodgate::config::ADMIN_TOKEN_FILE;
use floodgate::model::now_millis;
use floodgate_client::proto;

use error::CliError;

/// Where the server is and how to authenticate; shared by every client subcommand.
#[derive(Debug, Clone, Args)]
pub(crate) struct Connection {
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
    /// The longest one call may take (e.g. 30s, 2m). Every call is short, so a call that takes
    /// longer means a peer that accepted the connection but never answers (such as a TLS
    /// listener spoken to in plain text): the command fails instead of hanging.
    #[arg(
        long,
        env = "FLOODGATE_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration,
        global = true
    )]
    timeout: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
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
    channel: Option<floodgate::model::Channel>,
    /// Render this template of the customer instead of sending --payload.
    #[arg(long, conflicts_with = "payload")]
    template: Option<String>,
    /// A template variable, NAME=VALUE (a string); repeat for more.
    #[arg(long = "var", value_parser = parse_variable, requires = "template")]
    variables: Vec<(String, String)>,
    #[command(flatten)]
    connection: Connection,
}

fn parse_channel(name: &str) -> Result<floodgate::model::Channel, String> {
    floodgate::model::Channel::from_name(name)
        .ok_or_else(|| format!("unknown channel {name:?}: webhook, fcm, apns, email or sms"))
}

fn parse_variable(pair: &str) -> Result<(String, String), String> {
    let (name, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("{pair:?} is not NAME=VALUE"))?;
    Ok((name.to_owned(), value.to_owned()))
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
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
            .timeout(self.timeout)
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

/// Submits one notification and prints its id.
pub(crate) async fn send(args: SendArgs) -> Result<()> {
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
        floodgate::api::convert::proto_channel,
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
pub(crate) async fn status(args: StatusArgs) -> Result<()> {
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

/// A failed call, typed for the exit code: a broken connection or the server's refusal.
pub(crate) fn rpc_error(call: &'static str, status: &tonic::Status) -> anyhow::Error {
    CliError::from_status(call, "the --server address", status).into()
}
