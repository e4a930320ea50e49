//! The `floodgate` binary: parses the command line and runs the server or a client command.

use anyhow::Result;
use clap::Parser as _;
use floodgate::config::{Cli, Command};
use floodgate::{app, client, receiver};

/// After the server has stopped, tasks it abandoned at the shutdown deadline (a connection
/// being cut, a render on a blocking thread) get this long before the process exits anyway.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

fn main() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(run(Cli::parse()));
    // Dropping the runtime would wait for every blocking task without limit.
    runtime.shutdown_timeout(EXIT_WAIT);
    result
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(cfg) => Ok(app::serve(*cfg).await?),
        Command::Customer(command) => client::customer(command).await,
        Command::Template(command) => floodgate::template_sheet::run(command).await,
        Command::Send(args) => client::send(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Top(args) => client::top(args).await,
        Command::Receive(args) => receiver::run(args).await,
    }
}
