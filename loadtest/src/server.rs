//! floodgate started in-process for one run: a fresh data directory, a fresh database, a random
//! admin token and ports chosen by the kernel — so runs never see each other's rows, and a run
//! needs nothing set up beforehand.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use floodgate::api::proto;
use floodgate::api::proto::customers_client::CustomersClient;
use floodgate::app::AppError;
use floodgate::{Listeners, ServeConfig};
use sqlx::{Connection as _, Executor as _, PgConnection};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client;

/// Short, so the run ends promptly; every answered submit is committed before the gRPC server
/// returns, whatever the grace.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A floodgate running inside this process.
#[derive(Debug)]
pub(crate) struct Server {
    grpc_url: String,
    admin_token: String,
    backend: &'static str,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), AppError>>,
    scratch: Option<ScratchDatabase>,
    /// Holds the SQLite file and the lock beside it; removed when the run ends.
    _data_dir: TempDir,
}

impl Server {
    /// Starts floodgate and waits until it answers calls. `database_url` of `None` means SQLite
    /// in the temporary data directory; a PostgreSQL URL gets a scratch database created beside
    /// the one it names (dropped again by [`Server::stop`]); any other URL is used as given.
    pub(crate) async fn start(database_url: Option<&str>) -> Result<Self> {
        let scratch = match database_url {
            Some(url) if is_postgres(url) => Some(ScratchDatabase::create(url).await?),
            _ => None,
        };
        let url = match &scratch {
            Some(scratch) => Some(scratch.url.clone()),
            None => database_url.map(str::to_owned),
        };
        match Self::launch(url).await {
            Ok(mut server) => {
                server.scratch = scratch;
                Ok(server)
            }
            Err(err) => {
                if let Some(scratch) = scratch {
                    scratch.drop_quietly().await;
                }
                Err(err)
            }
        }
    }

    /// Starts floodgate on `database_url` (its default, SQLite in the data directory, if `None`).
    async fn launch(database_url: Option<String>) -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("floodgate-load-")
            .tempdir()
            .context("cannot create a temporary data directory")?;
        let admin_token = format!("fgload_{:032x}", rand::random::<u128>());
        let mut cfg = ServeConfig::defaults();
        cfg.data_dir = data_dir.path().to_owned();
        cfg.database_url = database_url;
        cfg.admin_token = Some(admin_token.clone());
        cfg.shutdown_grace = SHUTDOWN_GRACE;
        cfg.validate().context("invalid server configuration")?;
        let backend = if is_postgres(&cfg.database_url()) {
            "PostgreSQL"
        } else {
            "SQLite"
        };

        let grpc = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the gRPC port")?;
        let http = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the HTTP port")?;
        let grpc_url = format!(
            "http://{}",
            grpc.local_addr().context("cannot read the gRPC address")?
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let mut task = tokio::spawn(floodgate::run(cfg, Listeners { grpc, http }, async {
            let _ = stopped.await;
        }));

        // The ports accept connections at once, but calls are answered only once the store is
        // open and migrated: wait for a real call, or for the server to give up.
        tokio::select! {
            ready = answers_calls(&grpc_url, &admin_token) => {
                ready.context("the in-process floodgate does not answer")?;
            }
            ended = &mut task => {
                ended
                    .context("the in-process floodgate panicked")?
                    .context("the in-process floodgate failed to start")?;
                bail!("the in-process floodgate stopped before serving");
            }
        }
        Ok(Self {
            grpc_url,
            admin_token,
            backend,
            stop,
            task,
            scratch: None,
            _data_dir: data_dir,
        })
    }

    /// The gRPC address, as a URL for tonic.
    pub(crate) fn grpc_url(&self) -> &str {
        &self.grpc_url
    }

    /// The admin token the server was started with.
    pub(crate) fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// What the summary calls this server.
    pub(crate) fn describe(&self) -> String {
        format!("in-process floodgate on {}", self.backend)
    }

    /// Shuts floodgate down in its own order, then drops the scratch database.
    pub(crate) async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        let result = match self.task.await {
            Ok(result) => result.context("the in-process floodgate stopped with an error"),
            Err(err) => Err(err).context("the in-process floodgate panicked"),
        };
        if let Some(scratch) = self.scratch {
            scratch.drop().await?;
        }
        result
    }
}

async fn answers_calls(url: &str, token: &str) -> Result<()> {
    let mut customers = CustomersClient::new(client::connect(url, token).await?);
    customers
        .list_customers(proto::ListCustomersRequest {})
        .await
        .context("ListCustomers failed")?;
    Ok(())
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A database created for one run, so every run starts from empty tables and leaves nothing
/// behind.
#[derive(Debug)]
struct ScratchDatabase {
    /// The URL given on the command line: where the scratch database is created from and
    /// dropped from (a database cannot drop itself).
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    async fn create(admin_url: &str) -> Result<Self> {
        // Only hex digits after a fixed prefix: safe to splice into the statement unquoted.
        let name = format!("fg_load_{:016x}", rand::random::<u64>());
        let mut url = url::Url::parse(admin_url)
            .with_context(|| format!("invalid database URL {admin_url:?}"))?;
        url.set_path(&format!("/{name}"));
        let mut conn = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("cannot connect to {admin_url}"))?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("cannot create the scratch database {name}"))?;
        let _ = conn.close().await;
        eprintln!("created scratch database {name}");
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url: url.into(),
        })
    }

    async fn drop(self) -> Result<()> {
        let mut conn = PgConnection::connect(&self.admin_url)
            .await
            .with_context(|| {
                format!("cannot connect to {} to drop {}", self.admin_url, self.name)
            })?;
        // FORCE: a pool connection floodgate failed to close must not keep the database alive.
        conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await
            .with_context(|| format!("cannot drop the scratch database {}", self.name))?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Drops the database after a failed start, where the start's error is the one to report.
    async fn drop_quietly(self) {
        let name = self.name.clone();
        if let Err(err) = self.drop().await {
            eprintln!("warning: scratch database {name} is left behind: {err:#}");
        }
    }
}
