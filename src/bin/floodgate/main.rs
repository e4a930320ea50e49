//! The `floodgate` binary: parses the command line and runs the server or a client command.
//! Failures are printed as one or two lines with a distinct exit code (see `client::error`),
//! never as a backtrace.

use std::process::ExitCode;

use clap::Parser as _;
use floodgate::app;

use cli::{Cli, Command};
use client::error::{EXIT_OTHER, one_line, report};

mod cli;
mod client;
mod receiver;
mod template_sheet;

/// mimalloc instead of glibc's malloc: the server allocates per request and per row, and glibc's
/// allocator was a sixth of its CPU under load. Version 2 (Cargo.toml says why): it hands freed
/// pages back to the OS after 10 ms, so a burst of intake does not stay resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// After the server has stopped, tasks it abandoned at the shutdown deadline (a connection
/// being cut, a render on a blocking thread) get this long before the process exits anyway.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match main_runtime(&cli) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_OTHER);
        }
    };
    let code = runtime.block_on(run(cli));
    // Dropping the runtime would wait for every blocking task without limit.
    runtime.shutdown_timeout(EXIT_WAIT);
    code
}

/// The runtime everything starts on; `serve`'s is sized by its configuration (see
/// [`app::main_runtime`]).
fn main_runtime(cli: &Cli) -> std::io::Result<tokio::runtime::Runtime> {
    match &cli.command {
        Command::Serve(cfg) => app::main_runtime(cfg),
        _ => tokio::runtime::Runtime::new(),
    }
}

async fn run(cli: Cli) -> ExitCode {
    let outcome = match cli.command {
        Command::Serve(cfg) => {
            return match app::serve(*cfg).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {}", one_line(&err));
                    ExitCode::from(EXIT_OTHER)
                }
            };
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "floodgate", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            return match page.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: cannot write the man page: {err}");
                    ExitCode::from(EXIT_OTHER)
                }
            };
        }
        Command::Customer(command) => client::customer::run(command).await,
        Command::Token(command) => client::tokens::run(command).await,
        Command::Cluster(command) => client::cluster::run(command).await,
        Command::Template(command) => template_sheet::run(command).await,
        Command::Send(args) => client::send(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Cancel(args) => client::notifications::cancel(args).await,
        Command::Inbox(args) => client::notifications::inbox(args).await,
        Command::Archive(args) => client::notifications::archive(args).await,
        Command::Pref(command) => client::preferences::run(command).await,
        Command::Top(args) => client::top::run(args).await,
        Command::Receive(args) => receiver::run(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}
