//! The `floodgate` binary: parses the command line and runs the server or a client command.

use anyhow::{Context as _, Result};
use clap::Parser as _;
use floodgate::config::{Cli, Command, ServeConfig};
use floodgate::{Listeners, client, receiver, shutdown, telemetry};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve(cfg) => serve(*cfg).await,
        Command::Customer(command) => client::customer(command).await,
        Command::Send(args) => client::send(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Top(args) => client::top(args).await,
        Command::Receive(args) => receiver::run(args).await,
    }
}

async fn serve(cfg: ServeConfig) -> Result<()> {
    telemetry::init(cfg.log_format)
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging")?;
    cfg.validate().context("invalid configuration")?;
    let grpc = TcpListener::bind(cfg.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on --grpc-addr {}", cfg.grpc_addr))?;
    let http = TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("cannot listen on --http-addr {}", cfg.http_addr))?;
    floodgate::run(cfg, Listeners { grpc, http }, shutdown::signal())
        .await
        .context("floodgate stopped with an error")
}
