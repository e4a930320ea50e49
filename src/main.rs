//! The `floodgate` binary: parses the command line and runs the server or a client command.

use anyhow::Result;
use clap::Parser as _;
use floodgate::config::{Cli, Command};
use floodgate::{app, client, receiver};

/// mimalloc instead of glibc's malloc: the server allocates per request and per row, and glibc's
/// allocator was a sixth of its CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve(cfg) => Ok(app::serve(*cfg).await?),
        Command::Customer(command) => client::customer(command).await,
        Command::Template(command) => floodgate::template_sheet::run(command).await,
        Command::Send(args) => client::send(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Top(args) => client::top(args).await,
        Command::Receive(args) => receiver::run(args).await,
    }
}
