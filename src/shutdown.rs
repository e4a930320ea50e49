//! The shutdown signal. The order of shutdown itself is written down in `app::run`.

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives while the server is still
/// starting is then a request to shut down, not the default "terminate at once".
pub fn signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        let listener = signal(kind);
        if let Err(err) = &listener {
            tracing::error!(error = %err, signal = name, "cannot listen for the signal");
        }
        listener.ok()
    };
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            _ = received(interrupt.as_mut()) => tracing::info!("SIGINT received; shutting down"),
            _ = received(terminate.as_mut()) => tracing::info!("SIGTERM received; shutting down"),
        }
    }
}

/// Completes when `listener` receives its signal; never without a listener.
async fn received(listener: Option<&mut tokio::signal::unix::Signal>) {
    match listener {
        Some(listener) => {
            listener.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// The one point in time by which the whole shutdown must be over (`--shutdown-grace` after the
/// signal). Every step is bounded by it, so grace periods never add up.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    start: tokio::time::Instant,
    end: tokio::time::Instant,
}

impl Deadline {
    /// The deadline `grace` from now.
    pub fn after(grace: std::time::Duration) -> Self {
        let start = tokio::time::Instant::now();
        Self {
            start,
            end: start + grace,
        }
    }

    /// The end: nothing may still run after it.
    pub fn end(&self) -> tokio::time::Instant {
        self.end
    }

    /// The point `fraction` (0 to 1) of the way from the signal to the end, for a step that must
    /// leave time to the steps after it.
    pub fn share(&self, fraction: f64) -> tokio::time::Instant {
        self.start + (self.end - self.start).mul_f64(fraction.clamp(0.0, 1.0))
    }

    /// Time left until `until` (zero once it has passed).
    pub fn left(until: tokio::time::Instant) -> std::time::Duration {
        until.saturating_duration_since(tokio::time::Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn shares_fall_inside_the_grace() {
        let deadline = Deadline::after(Duration::from_secs(10));
        assert_eq!(deadline.share(0.5) + Duration::from_secs(5), deadline.end());
        assert_eq!(deadline.share(2.0), deadline.end());
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(Deadline::left(deadline.end()), Duration::ZERO);
    }
}
