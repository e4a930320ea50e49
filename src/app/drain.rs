//! The waiting half of the shutdown sequence: each server and background task gets until its
//! share of the deadline, and is cut or abandoned after that.

use tokio::task::JoinHandle;

use crate::connections::Cut;

/// Waits for a server task to finish the calls under way until `cut_at`, then cuts every
/// connection still open and waits for the task until `end`; aborts it after that. `None` when
/// it was aborted.
pub(super) async fn drain_server<T>(
    server: &mut JoinHandle<T>,
    cut: &Cut,
    cut_at: tokio::time::Instant,
    end: tokio::time::Instant,
) -> Option<Result<T, tokio::task::JoinError>> {
    if let Ok(result) = tokio::time::timeout_at(cut_at, &mut *server).await {
        return Some(result);
    }
    tracing::warn!("closing connections still open at the shutdown deadline");
    cut.cut();
    match tokio::time::timeout_at(end, &mut *server).await {
        Ok(result) => Some(result),
        Err(_) => {
            server.abort();
            None
        }
    }
}

/// Waits for a background task until `end`; abandons it (aborted) after that.
pub(super) async fn finish_by<T>(task: &mut JoinHandle<T>, end: tokio::time::Instant, what: &str) {
    match tokio::time::timeout_at(end, &mut *task).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::error!(task = what, error = %err, "failed while stopping"),
        Err(_) => {
            tracing::warn!(task = what, "did not finish within the grace period");
            task.abort();
        }
    }
}
