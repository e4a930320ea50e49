//! floodgate started in-process for one run: a fresh data directory, a fresh database (see
//! [`crate::database`]), a random admin token and ports chosen by the kernel — so runs never see
//! each other's rows, and a run needs nothing set up beforehand.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use floodgate::app::AppError;
use floodgate::{Listeners, ServeConfig};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client;
use crate::database::RunDatabase;

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
    database: Option<RunDatabase>,
    /// Holds the SQLite file and the lock beside it; removed when the run ends.
    _data_dir: TempDir,
}

impl Server {
    /// Starts floodgate and waits until it answers calls. `database_url` of `None` means SQLite
    /// in the temporary data directory; a PostgreSQL URL gets a scratch database created beside
    /// the one it names (dropped again by [`Server::stop`]); any other URL is used as given.
    pub(crate) async fn start(database_url: Option<&str>) -> Result<Self> {
        let database = RunDatabase::prepare(database_url).await?;
        match Self::launch(database.url().map(str::to_owned), database.backend()).await {
            Ok(mut server) => {
                server.database = Some(database);
                Ok(server)
            }
            Err(err) => {
                database.release_quietly().await;
                Err(err)
            }
        }
    }

    /// Starts floodgate on `database_url` (its default, SQLite in the data directory, if `None`).
    async fn launch(database_url: Option<String>, backend: &'static str) -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("floodgate-load-")
            .tempdir()
            .context("cannot create a temporary data directory")?;
        let admin_token = client::random_admin_token();
        let mut cfg = ServeConfig::defaults();
        cfg.data_dir = data_dir.path().to_owned();
        cfg.database_url = database_url;
        cfg.admin_token = Some(admin_token.clone().into());
        cfg.shutdown_grace = SHUTDOWN_GRACE;
        // The simulated customer systems listen on loopback, which deliveries may not reach
        // unless it is opened.
        cfg.allow_target_cidr = vec!["127.0.0.0/8".parse().context("loopback CIDR")?];
        cfg.validate().context("invalid server configuration")?;

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
            ready = client::answers_calls(&grpc_url, &admin_token) => {
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
            database: None,
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
        if let Some(database) = self.database {
            database.release().await?;
        }
        result
    }
}
