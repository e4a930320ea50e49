//! Several floodgate nodes as child processes on one database: floodgate's cluster, on one
//! machine. Each node has its own data directory, ports, admin token and node id (`node-0`,
//! `node-1`, ... by the order they started); a node can be SIGKILLed for good or another one
//! started while the others run. The database is created before the first node and dropped after
//! the last one stops. One node may use SQLite (it is then the whole cluster); several need
//! PostgreSQL, the only store nodes can share.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use tokio::task::JoinSet;

use crate::client::AuthedChannel;
use crate::database::{self, RunDatabase};
use crate::process::{Floodgate, Program};

/// The floodgate nodes of one run.
#[derive(Debug)]
pub(crate) struct Cluster {
    program: Program,
    /// Flags every node gets (its `--node-id` is added per node).
    flags: Vec<String>,
    /// Taken when the cluster stops.
    database: Option<RunDatabase>,
    /// By node number; `None` once killed.
    nodes: Vec<Option<Floodgate>>,
    /// Holds the secrets key every node shares (the first node generates it): nodes on one
    /// database must seal secrets with the same key.
    _shared: tempfile::TempDir,
}

/// The node id the `i`th node started in a run gets.
pub(crate) fn node_id(i: usize) -> String {
    format!("node-{i}")
}

/// Fails unless `nodes` floodgate nodes can share the database `database_url` names.
pub(crate) fn ensure_shareable(database_url: Option<&str>, nodes: usize) -> Result<()> {
    ensure!(
        nodes <= 1 || database_url.is_some_and(database::is_postgres),
        "{nodes} floodgate nodes need one PostgreSQL database to share: pass --database-url \
         postgres://… (SQLite is one node's store)"
    );
    Ok(())
}

impl Cluster {
    /// Creates the run's database (see [`RunDatabase::prepare`]) and starts `nodes` nodes on it,
    /// one after another, each with `flags`. Whatever fails, nothing is left running.
    pub(crate) async fn start(
        program: &Program,
        database_url: Option<&str>,
        nodes: usize,
        flags: &[&str],
    ) -> Result<Self> {
        ensure!(nodes >= 1, "a cluster needs at least one node");
        ensure_shareable(database_url, nodes)?;
        let shared =
            tempfile::tempdir().context("cannot create a directory for the secrets key")?;
        let key = shared.path().join("secrets-key").display().to_string();
        let mut flags: Vec<String> = flags.iter().map(|&flag| flag.to_owned()).collect();
        flags.extend(["--secrets-key-file".to_owned(), key]);
        let mut cluster = Self {
            program: program.clone(),
            flags,
            _shared: shared,
            database: Some(RunDatabase::prepare(database_url).await?),
            nodes: Vec::with_capacity(nodes),
        };
        for _ in 0..nodes {
            if let Err(err) = cluster.add().await {
                if let Err(stop) = cluster.stop().await {
                    eprintln!("warning: stopping the nodes after a failed start: {stop:#}");
                }
                return Err(err);
            }
        }
        Ok(cluster)
    }

    /// Starts one more node and waits until it answers calls; returns its number.
    pub(crate) async fn add(&mut self) -> Result<usize> {
        let database = self.database.as_ref().context("the cluster has stopped")?;
        ensure!(
            self.nodes.is_empty() || database.url().is_some_and(database::is_postgres),
            "a second floodgate node needs a PostgreSQL database (pass --database-url postgres://…)"
        );
        let i = self.nodes.len();
        let mut flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let id = node_id(i);
        flags.extend(["--node-id", id.as_str()]);
        let node = Floodgate::launch(&self.program, database, &flags).await?;
        self.nodes.push(Some(node));
        Ok(i)
    }

    /// SIGKILLs node `i` for good.
    pub(crate) async fn kill(&mut self, i: usize) -> Result<()> {
        match self.nodes.get_mut(i).and_then(Option::take) {
            Some(node) => node.kill().await,
            None => bail!("{} is not running", node_id(i)),
        }
    }

    /// SIGKILLs node `i` and starts it again on the same data directory and ports.
    pub(crate) async fn kill_and_restart(&mut self, i: usize) -> Result<()> {
        match self.nodes.get_mut(i).and_then(Option::as_mut) {
            Some(node) => node.kill_and_restart().await,
            None => bail!("{} is not running", node_id(i)),
        }
    }

    /// The running nodes, with their numbers.
    pub(crate) fn live(&self) -> impl Iterator<Item = (usize, &Floodgate)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| node.as_ref().map(|node| (i, node)))
    }

    /// A new connection to node `i`.
    pub(crate) async fn connect(&self, i: usize) -> Result<AuthedChannel> {
        match self.nodes.get(i).and_then(Option::as_ref) {
            Some(node) => node.connect().await,
            None => bail!("{} is not running", node_id(i)),
        }
    }

    /// A new connection to every running node, with its number.
    pub(crate) async fn connect_all(&self) -> Result<Vec<(usize, AuthedChannel)>> {
        let mut channels = Vec::new();
        for (i, node) in self.live() {
            channels.push((i, node.connect().await?));
        }
        Ok(channels)
    }

    /// The database every node uses, if it was named (`None`: SQLite in the only node's data
    /// directory).
    pub(crate) fn database_url(&self) -> Option<&str> {
        self.database.as_ref().and_then(RunDatabase::url)
    }

    /// CPU time the running nodes have used since they started, together.
    pub(crate) fn cpu(&self) -> Result<Duration> {
        self.live().map(|(_, node)| node.cpu()).sum()
    }

    /// What a summary calls these servers.
    pub(crate) fn describe(&self) -> String {
        let backend = self
            .database
            .as_ref()
            .map_or("a dropped database", RunDatabase::backend);
        let running = self.live().count();
        match self.nodes.len() {
            1 => format!("floodgate process on {backend}"),
            n if n == running => format!("{n} floodgate nodes on one {backend} database"),
            n => format!(
                "floodgate nodes on one {backend} database: {n} started, {running} running at the end"
            ),
        }
    }

    /// Stops every running node the orderly way, all at once rather than one shutdown after
    /// another, then drops the scratch database. Always call it, failed run or not.
    pub(crate) async fn stop(mut self) -> Result<()> {
        let mut stopping = JoinSet::new();
        for node in self.nodes.drain(..).flatten() {
            stopping.spawn(node.stop());
        }
        let mut first_error = None;
        while let Some(stopped) = stopping.join_next().await {
            let stopped = stopped
                .context("stopping a floodgate node panicked")
                .and_then(|stopped| stopped);
            if let Err(err) = stopped {
                first_error.get_or_insert(err);
            }
        }
        let released = match self.database.take() {
            Some(database) => database.release().await,
            None => Ok(()),
        };
        match first_error {
            Some(err) => Err(err),
            None => released,
        }
    }
}
