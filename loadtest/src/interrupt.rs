//! Ctrl-C or SIGTERM ends a run early but in order: the run's cleanup — stopping floodgate (a
//! child process would otherwise outlive the harness) and dropping a scratch database — still
//! happens, because the signal only ends the measurement, as an error.

use std::future::Future;

use anyhow::{Result, anyhow};
use tokio::signal::unix::{SignalKind, signal};

/// Runs `work` unless SIGINT or SIGTERM arrives first, which makes it an error.
pub(crate) async fn unless_interrupted<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        result = work => result,
        name = interrupted() => Err(anyhow!("interrupted by {name}")),
    }
}

/// Completes on the first SIGINT or SIGTERM. A signal whose handler cannot be installed is never
/// waited for (the default action then still ends the process).
async fn interrupted() -> &'static str {
    let int = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = int => "SIGINT",
        () = term => "SIGTERM",
    }
}
