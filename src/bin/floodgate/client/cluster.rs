//! `floodgate cluster status`: the live nodes of a cluster and how many customer systems'
//! buckets each owns (admin token).

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Connection;
use super::notifications::time;

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// List the nodes (live first), the buckets each owns, and the handovers and takeovers so far.
    #[command(after_help = "Example:
  floodgate cluster status --server https://node-1.internal:50051 --tls-ca ca.pem")]
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    connection: Connection,
}

/// Runs one `cluster` subcommand.
pub(crate) async fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Status(args) => {
            let client = args.connection.client().await?;
            let status = client
                .cluster_status()
                .await
                .map_err(|err| args.connection.cli_error(err))?;
            if !status.clustered {
                println!(
                    "single node (SQLite): this server owns all {} buckets of customer systems",
                    status.buckets
                );
                return Ok(());
            }
            println!(
                "answered by {}; {} buckets, {} without an owner; {} handovers, {} takeovers so far",
                status.this_node,
                status.buckets,
                status.unowned_buckets,
                status.handovers_total,
                status.takeovers_total
            );
            println!(
                "{:<32} {:<5} {:>8} {:>9} {:>14}  STARTED",
                "NODE", "LIVE", "BUCKETS", "MAX EPOCH", "HEARTBEAT AGE"
            );
            for node in status.nodes {
                println!(
                    "{:<32} {:<5} {:>8} {:>9} {:>12}ms  {}",
                    node.node_id,
                    if node.live { "yes" } else { "no" },
                    node.buckets_owned,
                    node.max_epoch,
                    node.heartbeat_age_ms,
                    time(node.started_at)
                );
            }
        }
    }
    Ok(())
}
