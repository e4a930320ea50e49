//! Command-line and environment configuration. Every server option has a flag and an env twin
//! (`FLOODGATE_…`) with a sane default, so `floodgate serve` alone starts a working server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::dispatch::DispatchSettings;
use crate::dispatch::controller::ControllerSettings;
use crate::dispatch::policy::{Policy, PolicySettings, TierRates};
use crate::dispatch::retry::RetryPolicy;

/// The file in the data directory holding the generated admin token (which the CLI reads too).
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The file in the data directory holding the generated metrics token (unless
/// `--metrics-token-file` names another).
pub const METRICS_TOKEN_FILE: &str = "metrics-token";
/// The file in the data directory holding the generated secrets key (unless
/// `--secrets-key-file` names another).
pub const SECRETS_KEY_FILE: &str = "secrets-key";

pub use crate::telemetry::LogFormat;

/// Everything `floodgate serve` can be told.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address of the gRPC API.
    #[arg(long, env = "FLOODGATE_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP endpoints (/healthz, /readyz).
    #[arg(long, env = "FLOODGATE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Directory for the SQLite database and the generated admin token.
    #[arg(long, env = "FLOODGATE_DATA_DIR", default_value = "floodgate-data")]
    pub data_dir: PathBuf,
    /// Database URL: sqlite://PATH or postgres://… [default: sqlite://DATA_DIR/floodgate.db]
    #[arg(long, env = "FLOODGATE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Token allowed to call everything. When neither this nor a saved one exists, one is
    /// generated, saved as DATA_DIR/admin-token and printed once.
    #[arg(long, env = "FLOODGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<crate::redact::SecretString>,
    /// Token allowed to call only the Dispatcher and Preferences services, for every customer
    /// system. Scoped tokens (`floodgate token create`) are the recommended way: one per caller,
    /// each for its own customers, rotated without a restart.
    #[arg(long, env = "FLOODGATE_SUBMIT_TOKEN", hide_env_values = true)]
    pub submit_token: Option<crate::redact::SecretString>,
    /// File holding the read-only token for /metrics and the dashboard's data (the admin token
    /// works there too). Generated there when missing. [default: DATA_DIR/metrics-token]
    #[arg(long, env = "FLOODGATE_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// File holding the key that seals signing secrets and provider secrets in the database
    /// (base64 of 32 bytes). Generated there when missing; every node sharing a database needs
    /// the same file. [default: DATA_DIR/secrets-key]
    #[arg(long, env = "FLOODGATE_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// The key file --secrets-key-file replaced: secrets it sealed are still read, and sealed
    /// again with the current key at start. Drop it once every node has restarted.
    #[arg(long, env = "FLOODGATE_SECRETS_KEY_FILE_PREVIOUS")]
    pub secrets_key_file_previous: Option<PathBuf>,
    /// Serve gRPC server reflection (grpcurl, Postman discover the API with it). It reveals only
    /// the API's shape, never data; turn it off to hide even that.
    #[arg(long, env = "FLOODGATE_GRPC_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub grpc_reflection: bool,
    /// Largest accepted notification payload, in bytes.
    #[arg(long, env = "FLOODGATE_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024)]
    pub max_payload_bytes: usize,
    /// Largest accepted gRPC message (a whole SubmitBatch), in bytes.
    #[arg(long, env = "FLOODGATE_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// How far ahead a notification's send_at or expires_at may lie (e.g. 30days).
    #[arg(long, env = "FLOODGATE_MAX_SCHEDULE_AHEAD", default_value = "30days", value_parser = humantime::parse_duration)]
    pub max_schedule_ahead: Duration,
    /// Most notifications one customer may have waiting (pending or retrying); submits beyond
    /// it answer RESOURCE_EXHAUSTED. 0: no quota.
    #[arg(
        long,
        env = "FLOODGATE_MAX_BACKLOG_PER_CUSTOMER",
        default_value_t = 1_000_000
    )]
    pub max_backlog_per_customer: u64,
    /// Attempts per notification (the first included) before it is FAILED.
    #[arg(long, env = "FLOODGATE_RETRY_MAX_ATTEMPTS", default_value_t = 12)]
    pub retry_max_attempts: u32,
    /// Age after which a failing notification is no longer retried (e.g. 24h, 90m).
    #[arg(long, env = "FLOODGATE_RETRY_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub retry_max_age: Duration,
    /// Backoff ceiling before the first retry; doubles per attempt, with full jitter.
    #[arg(long, env = "FLOODGATE_RETRY_BASE_DELAY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_base_delay: Duration,
    /// Cap on a single retry backoff.
    #[arg(long, env = "FLOODGATE_RETRY_MAX_DELAY", default_value = "10m", value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,
    /// Limit for one webhook attempt (connect, send, response headers).
    #[arg(long, env = "FLOODGATE_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,
    /// At most this many webhook requests open at once to one host; more wait their turn,
    /// outside the round trip the controller sees [default: no cap].
    #[arg(long, env = "FLOODGATE_WEBHOOK_MAX_CONNECTIONS_PER_HOST")]
    pub webhook_max_connections_per_host: Option<std::num::NonZeroUsize>,
    /// Worker threads of the runtime that runs the customer actors and their sends; the gRPC
    /// API and the database's writers run beside it on a thread per core of their own. Fewer
    /// threads than cores leave room for those [default: half the cores, at least 1].
    #[arg(long, env = "FLOODGATE_DELIVERY_THREADS")]
    pub delivery_threads: Option<std::num::NonZeroUsize>,
    /// Hard cap on any customer's concurrency limit (the controller moves below it).
    #[arg(
        long,
        env = "FLOODGATE_MAX_IN_FLIGHT_PER_CUSTOMER",
        default_value_t = 1000
    )]
    pub max_in_flight_per_customer: usize,
    /// Rate (deliveries/s) at or above which a customer is in the fast tier.
    #[arg(long, env = "FLOODGATE_TIER_FAST", default_value_t = 100.0)]
    pub tier_fast: f64,
    /// Rate (deliveries/s) at or above which a customer is in the medium tier (below: slow).
    #[arg(long, env = "FLOODGATE_TIER_MEDIUM", default_value_t = 10.0)]
    pub tier_medium: f64,
    /// Pacing policy: `adaptive` (the controller), or a baseline for side-by-side load tests:
    /// `fixed` (every customer at --fixed-rate) or `static-tiers` (each customer at its start
    /// tier's rate from --tier-rates).
    #[arg(long, env = "FLOODGATE_POLICY", value_enum, default_value_t = Policy::Adaptive)]
    pub policy: Policy,
    /// `fixed` policy: deliveries/s for every customer.
    #[arg(long, env = "FLOODGATE_FIXED_RATE", default_value_t = 100.0)]
    pub fixed_rate: f64,
    /// `static-tiers` policy: deliveries/s of the fast, medium and slow tiers.
    #[arg(long, env = "FLOODGATE_TIER_RATES", value_delimiter = ',', num_args = 3, default_values_t = [1000.0, 100.0, 10.0])]
    pub tier_rates: Vec<f64>,
    /// Share of a customer's sends guaranteed to the bulk lane while transactional work waits.
    #[arg(long, env = "FLOODGATE_BULK_SHARE", default_value_t = 0.1)]
    pub bulk_share: f64,
    /// How long a customer actor with nothing to do stays alive before stopping.
    #[arg(long, env = "FLOODGATE_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How long a claimed notification is leased before it is presumed lost and redelivered.
    /// Must exceed --webhook-timeout.
    #[arg(long, env = "FLOODGATE_LEASE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// How often the store is swept for work that came due (send_at, retries) and expired leases.
    #[arg(long, env = "FLOODGATE_SWEEP_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
    /// How long the whole shutdown may take after SIGTERM/SIGINT: calls and deliveries under
    /// way finish within it, connections still open at its end are closed, then the process exits.
    #[arg(long, env = "FLOODGATE_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// minijinja instructions one template render may execute; a render that runs out is
    /// refused (INVALID_ARGUMENT at intake).
    #[arg(long, env = "FLOODGATE_TEMPLATE_FUEL", default_value_t = crate::templates::DEFAULT_FUEL)]
    pub template_fuel: u64,
    /// Longest one template render may take (it runs on a blocking thread).
    #[arg(long, env = "FLOODGATE_TEMPLATE_RENDER_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub template_render_timeout: Duration,
    /// How long an HTTP client may take to send a request's headers.
    #[arg(long, env = "FLOODGATE_HTTP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http_header_read_timeout: Duration,
    /// How long one HTTP request (metrics, dashboard, probes) may take to be answered.
    #[arg(long, env = "FLOODGATE_HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http_request_timeout: Duration,
    /// Most connections open at once on the HTTP port; more wait in the listen backlog.
    #[arg(long, env = "FLOODGATE_HTTP_MAX_CONNECTIONS", default_value_t = 256)]
    pub http_max_connections: usize,
    /// gRPC calls one connection may have running at once; more wait.
    #[arg(
        long,
        env = "FLOODGATE_GRPC_CONCURRENCY_PER_CONNECTION",
        default_value_t = 256
    )]
    pub grpc_concurrency_per_connection: usize,
    /// HTTP/2 streams one gRPC connection may open at once.
    #[arg(
        long,
        env = "FLOODGATE_GRPC_MAX_CONCURRENT_STREAMS",
        default_value_t = 512
    )]
    pub grpc_max_concurrent_streams: u32,
    /// How often an idle gRPC connection is pinged (HTTP/2 keepalive).
    #[arg(long, env = "FLOODGATE_GRPC_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grpc_keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = "FLOODGATE_GRPC_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grpc_keepalive_timeout: Duration,
    /// Database connections for reads. On PostgreSQL a node also opens up to 15 for writes (10
    /// for writes callers wait on, 5 for background work).
    #[arg(long, env = "FLOODGATE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Redis for the preference cache shared by every node (`redis://host:6379`). Without it:
    /// an in-process cache on SQLite, none on PostgreSQL (each lookup reads the database).
    #[arg(long, env = "FLOODGATE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of floodgate's Redis keys, so deployments can share one Redis.
    #[arg(long, env = "FLOODGATE_REDIS_PREFIX", default_value = "floodgate:")]
    pub redis_prefix: String,
    /// How long Redis keeps a recipient's cached preferences nobody touches.
    #[arg(long, env = "FLOODGATE_PREFERENCE_CACHE_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub preference_cache_ttl: Duration,
    /// How far back `ListNotifications` reaches. Finished notifications older than this move to
    /// the archive, which ends idempotency for their keys.
    #[arg(long, env = "FLOODGATE_INBOX_RETENTION", default_value = "90days", value_parser = humantime::parse_duration)]
    pub inbox_retention: Duration,
    /// How long archived notifications are kept (from creation) for ListArchivedNotifications.
    /// On PostgreSQL whole months are dropped, so rows stay up to a month longer.
    #[arg(long, env = "FLOODGATE_ARCHIVE_RETENTION", default_value = "365days", value_parser = humantime::parse_duration)]
    pub archive_retention: Duration,
    /// Time between retention passes (archive, then purge); 0 turns retention off.
    #[arg(long, env = "FLOODGATE_RETENTION_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,
    /// Rows the retention job moves or deletes per transaction.
    #[arg(long, env = "FLOODGATE_RETENTION_BATCH", default_value_t = 100)]
    pub retention_batch: usize,
    /// Rest between two retention batches, so intake always gets the writer in between.
    #[arg(long, env = "FLOODGATE_RETENTION_PAUSE", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub retention_pause: Duration,
    /// With --redis-url: how long Redis remembers an accepted idempotency key, so repeats are
    /// answered without the database (the database's unique key still decides after that).
    #[arg(long, env = "FLOODGATE_IDEMPOTENCY_CACHE_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub idempotency_cache_ttl: Duration,
    /// Networks deliveries may reach although they are loopback, link-local, private, CGNAT,
    /// unique-local, multicast or unspecified (all refused by default, against server-side
    /// request forgery). Repeat the flag, or give a comma-separated list in the env twin, e.g.
    /// `127.0.0.0/8` for local development or `10.20.0.0/16` for an in-house relay.
    #[arg(long, env = "FLOODGATE_ALLOW_TARGET_CIDR", value_delimiter = ',')]
    pub allow_target_cidr: Vec<crate::sink::target_policy::Cidr>,
    /// Let SMTP authenticate over a plain-text connection (a customer's `tls: NONE` with a
    /// username), which sends the password in clear. Off: such settings are refused at upsert
    /// and at send. Only for a relay on a network you trust.
    #[arg(long, env = "FLOODGATE_ALLOW_PLAINTEXT_SMTP_AUTH")]
    pub allow_plaintext_smtp_auth: bool,
    /// PEM certificate chain (leaf first) for TLS on both the gRPC and the HTTP listener; needs
    /// --tls-key. Re-read every few seconds, so a renewed certificate is used without a restart.
    #[arg(long, env = "FLOODGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "FLOODGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; with it, clients on both listeners must present a certificate signed
    /// by one of them (mutual TLS). Needs --tls-cert.
    #[arg(long, env = "FLOODGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// This node's id in a cluster (several nodes on one PostgreSQL database); unique per running
    /// process. Default: the host name and a hash of --data-dir, so a restarted node keeps its id
    /// and takes its own buckets back at once. Ignored on SQLite.
    #[arg(long, env = "FLOODGATE_NODE_ID")]
    pub node_id: Option<String>,
    /// How long a node's ownership of a bucket of customers lasts without renewal. A node that
    /// dies is replaced within about this time; it stops starting sends --webhook-timeout plus
    /// one heartbeat before its leases could expire. PostgreSQL only.
    #[arg(long, env = "FLOODGATE_CLUSTER_LEASE_TTL", default_value = "20s", value_parser = humantime::parse_duration)]
    pub cluster_lease_ttl: Duration,
    /// How often a node heartbeats, renews its leases and looks for buckets to hand over or
    /// take. PostgreSQL only.
    #[arg(long, env = "FLOODGATE_CLUSTER_HEARTBEAT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub cluster_heartbeat: Duration,
    /// Log format; the level is set with RUST_LOG (default info).
    #[arg(long, env = "FLOODGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--lease ({lease:?}) must be longer than --webhook-timeout ({timeout:?})")]
    LeaseTooShort { lease: Duration, timeout: Duration },
    #[error("--archive-retention ({archive:?}) must be at least --inbox-retention ({inbox:?})")]
    ArchiveShorterThanInbox { archive: Duration, inbox: Duration },
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error("--max-payload-bytes ({payload}) must be below --max-message-bytes ({message})")]
    PayloadOverMessage { payload: usize, message: usize },
    #[error("--{0} must not be empty")]
    EmptyToken(&'static str),
    #[error("--fixed-rate and the three --tier-rates must be positive")]
    Rates,
    #[error("--bulk-share ({0}) must be at least 0 and below 1")]
    BulkShare(f64),
    #[error("tier thresholds must satisfy 0 < --tier-medium ({medium}) < --tier-fast ({fast})")]
    Tiers { fast: f64, medium: f64 },
    #[error(
        "--tls-cert, --tls-key and --tls-client-ca work together: give both --tls-cert and --tls-key"
    )]
    TlsIncomplete,
    #[error(
        "--cluster-lease-ttl ({ttl:?}) must be at least --webhook-timeout plus three --cluster-heartbeat ({least:?}): a node stops sending that long before its leases expire"
    )]
    LeaseTtlTooShort { ttl: Duration, least: Duration },
}

impl ServeConfig {
    /// A configuration with every default, for tests and embedding.
    pub fn defaults() -> Self {
        Self::parse_from_args(std::iter::empty::<String>())
    }

    fn parse_from_args<I: IntoIterator<Item = String>>(args: I) -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ServeConfig,
        }
        // Every field has a default, so parsing no arguments cannot fail.
        Wrapper::parse_from(std::iter::once("floodgate".to_owned()).chain(args)).config
    }

    /// The delivery runtime's worker threads: --delivery-threads, or half of `cores`, at least 1.
    pub fn delivery_threads(&self, cores: usize) -> usize {
        self.delivery_threads
            .map_or((cores / 2).max(1), std::num::NonZeroUsize::get)
    }

    /// Checks the settings against each other before anything is bound or opened.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease <= self.webhook_timeout {
            return Err(ConfigError::LeaseTooShort {
                lease: self.lease,
                timeout: self.webhook_timeout,
            });
        }
        if self.retry_max_attempts == 0 {
            return Err(ConfigError::Zero("retry-max-attempts"));
        }
        if self.max_in_flight_per_customer == 0 {
            return Err(ConfigError::Zero("max-in-flight-per-customer"));
        }
        if self.fixed_rate <= 0.0
            || self.tier_rates.len() != 3
            || self.tier_rates.iter().any(|r| *r <= 0.0)
        {
            return Err(ConfigError::Rates);
        }
        if !(0.0..1.0).contains(&self.bulk_share) {
            return Err(ConfigError::BulkShare(self.bulk_share));
        }
        if !(self.tier_medium > 0.0 && self.tier_fast > self.tier_medium) {
            return Err(ConfigError::Tiers {
                fast: self.tier_fast,
                medium: self.tier_medium,
            });
        }
        for (flag, value) in [
            ("http-max-connections", self.http_max_connections),
            ("template-fuel", self.template_fuel as usize),
            (
                "grpc-concurrency-per-connection",
                self.grpc_concurrency_per_connection,
            ),
            (
                "grpc-max-concurrent-streams",
                self.grpc_max_concurrent_streams as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(flag));
            }
        }
        if self.db_max_connections == 0 {
            return Err(ConfigError::Zero("db-max-connections"));
        }
        if self.retention_batch == 0 {
            return Err(ConfigError::Zero("retention-batch"));
        }
        if self.archive_retention < self.inbox_retention {
            return Err(ConfigError::ArchiveShorterThanInbox {
                archive: self.archive_retention,
                inbox: self.inbox_retention,
            });
        }
        if self.max_payload_bytes >= self.max_message_bytes {
            return Err(ConfigError::PayloadOverMessage {
                payload: self.max_payload_bytes,
                message: self.max_message_bytes,
            });
        }
        if self.cluster_heartbeat.is_zero() {
            return Err(ConfigError::Zero("cluster-heartbeat"));
        }
        // Only a PostgreSQL node joins a cluster; a SQLite node has no leases to fence.
        let least = self.fence_margin() + self.cluster_heartbeat * 2;
        if self.database_url().starts_with("postgres") && self.cluster_lease_ttl < least {
            return Err(ConfigError::LeaseTtlTooShort {
                ttl: self.cluster_lease_ttl,
                least,
            });
        }
        let tls = [&self.tls_cert, &self.tls_key, &self.tls_client_ca];
        if tls.iter().any(|file| file.is_some()) && self.tls_files().is_none() {
            return Err(ConfigError::TlsIncomplete);
        }
        for (flag, token) in [
            ("admin-token", &self.admin_token),
            ("submit-token", &self.submit_token),
        ] {
            if token.as_ref().is_some_and(|t| t.expose().trim().is_empty()) {
                return Err(ConfigError::EmptyToken(flag));
            }
        }
        Ok(())
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("floodgate.db").display()))
    }

    /// The key file sealing customers' secrets, defaulting to one in the data directory.
    pub fn secrets_key_path(&self) -> PathBuf {
        self.secrets_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(SECRETS_KEY_FILE))
    }

    /// The TLS files of both listeners; `None` serves plain text.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// Where the preference cache lives.
    pub fn preference_cache(&self) -> crate::preferences::CacheSettings {
        crate::preferences::CacheSettings {
            redis_url: self.redis_url.clone(),
            redis_prefix: self.redis_prefix.clone(),
            ttl: self.preference_cache_ttl,
        }
    }

    /// What one template render may cost; its output is held to the payload limit.
    pub fn render_limits(&self) -> crate::templates::RenderLimits {
        crate::templates::RenderLimits {
            max_bytes: self.max_payload_bytes,
            fuel: self.template_fuel,
            timeout: self.template_render_timeout,
        }
    }

    /// Limits of the HTTP port.
    pub fn http_limits(&self) -> crate::http::HttpLimits {
        crate::http::HttpLimits {
            header_read_timeout: self.http_header_read_timeout,
            request_timeout: self.http_request_timeout,
        }
    }

    /// Limits of the gRPC port.
    pub fn grpc_limits(&self) -> crate::api::GrpcLimits {
        crate::api::GrpcLimits {
            concurrency_per_connection: self.grpc_concurrency_per_connection,
            max_concurrent_streams: self.grpc_max_concurrent_streams,
            keepalive_interval: self.grpc_keepalive_interval,
            keepalive_timeout: self.grpc_keepalive_timeout,
        }
    }

    /// The retention job's settings.
    pub fn retention(&self) -> crate::retention::RetentionSettings {
        crate::retention::RetentionSettings {
            inbox: self.inbox_retention,
            archive: self.archive_retention,
            interval: self.retention_interval,
            batch: self.retention_batch,
            pause: self.retention_pause,
        }
    }

    /// Which addresses deliveries may reach.
    pub fn target_policy(&self) -> crate::sink::target_policy::TargetPolicy {
        crate::sink::target_policy::TargetPolicy::new(self.allow_target_cidr.clone())
    }

    /// How long before its leases expire a node stops starting sends: the longest attempt
    /// (--webhook-timeout bounds every channel's) plus one heartbeat of slack.
    fn fence_margin(&self) -> Duration {
        self.webhook_timeout + self.cluster_heartbeat
    }

    /// The cluster protocol's timing for a node called `node_id`.
    pub fn membership_settings(&self, node_id: String) -> crate::cluster::MembershipSettings {
        crate::cluster::MembershipSettings {
            node_id,
            lease_ttl: self.cluster_lease_ttl,
            heartbeat: self.cluster_heartbeat,
            fence_margin: self.fence_margin(),
        }
    }

    /// The dispatcher's settings.
    pub fn dispatch_settings(&self) -> DispatchSettings {
        let defaults = DispatchSettings::default();
        DispatchSettings {
            controller: ControllerSettings {
                max_limit: self.max_in_flight_per_customer as f64,
                fast_threshold: self.tier_fast,
                medium_threshold: self.tier_medium,
            },
            policy: PolicySettings {
                policy: self.policy,
                fixed_rate: self.fixed_rate,
                tier_rates: {
                    let rate =
                        |i: usize, default: f64| self.tier_rates.get(i).copied().unwrap_or(default);
                    let defaults = defaults.policy.tier_rates;
                    TierRates {
                        fast: rate(0, defaults.fast),
                        medium: rate(1, defaults.medium),
                        slow: rate(2, defaults.slow),
                    }
                },
                max_in_flight: self.max_in_flight_per_customer,
            },
            bulk_share: self.bulk_share,
            idle_timeout: self.idle_timeout,
            lease: self.lease,
            sweep_interval: self.sweep_interval,
            retry: RetryPolicy {
                max_attempts: self.retry_max_attempts,
                max_age: self.retry_max_age,
                base_delay: self.retry_base_delay,
                max_delay: self.retry_max_delay,
            },
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests;
