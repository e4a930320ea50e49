//! The database a run's floodgate uses: by default none is named (floodgate then uses SQLite in
//! its data directory); a PostgreSQL URL gets a scratch database created beside the one it names
//! and dropped when the run ends, so runs never see each other's rows and leave nothing behind.
//! Shared by the in-process server and the child-process one.

use anyhow::{Context as _, Result};
use sqlx::{Connection as _, Executor as _, PgConnection};

/// The database of one run.
#[derive(Debug)]
pub(crate) struct RunDatabase {
    /// The URL floodgate is given; `None` means its default, SQLite in the data directory.
    url: Option<String>,
    scratch: Option<ScratchDatabase>,
}

impl RunDatabase {
    /// Creates a scratch database for a PostgreSQL URL; any other URL is used as given.
    pub(crate) async fn prepare(database_url: Option<&str>) -> Result<Self> {
        match database_url {
            Some(url) if is_postgres(url) => {
                let scratch = ScratchDatabase::create(url).await?;
                Ok(Self {
                    url: Some(scratch.url.clone()),
                    scratch: Some(scratch),
                })
            }
            url => Ok(Self {
                url: url.map(str::to_owned),
                scratch: None,
            }),
        }
    }

    /// The URL to hand floodgate, if any.
    pub(crate) fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// What a summary calls this database.
    pub(crate) fn backend(&self) -> &'static str {
        match self.url.as_deref() {
            Some(url) if is_postgres(url) => "PostgreSQL",
            _ => "SQLite",
        }
    }

    /// Drops the scratch database, if there is one. Call it once floodgate has stopped.
    pub(crate) async fn release(self) -> Result<()> {
        match self.scratch {
            Some(scratch) => scratch.drop().await,
            None => Ok(()),
        }
    }

    /// [`RunDatabase::release`] on an error path, where the first error is the one to report.
    pub(crate) async fn release_quietly(self) {
        if let Some(scratch) = self.scratch {
            let name = scratch.name.clone();
            if let Err(err) = scratch.drop().await {
                eprintln!("warning: scratch database {name} is left behind: {err:#}");
            }
        }
    }
}

/// Whether `url` names a PostgreSQL database: the only store several nodes can share.
pub(crate) fn is_postgres(url: &str) -> bool {
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
}
