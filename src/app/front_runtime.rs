//! The front runtime: the gRPC and HTTP servers and every task that takes turns at the database's
//! write connection (see [`Store::writers_runtime`](crate::store::Store::writers_runtime)),
//! beside the main runtime that runs the customer actors and their HTTP sends.
//!
//! Tokio polls the tasks of one runtime from shared queues, first come first served. With a
//! backlog draining, thousands of delivery tasks are queued at any moment, and a Submit's
//! handler, the writer committing it and, on SQLite, whichever task holds the one write
//! connection all waited behind them: a unary Submit's p99 was 185–520 ms during a drain. On a
//! runtime of their own (threads of their own, which the operating system schedules beside the
//! main runtime's) it was 47–90 ms, with deliveries no slower (BENCHMARKS.md, "Thirteenth
//! pass"). The writers alone were not enough: the handler on the main runtime still waited.

use tokio::runtime::{Builder, Handle, Runtime};

use crate::config::ServeConfig;

/// The runtime `floodgate serve` starts on, which runs the customer actors and their sends: on
/// `--delivery-threads` worker threads named `floodgate-main`, by default half the cores. With
/// a thread per core, ready sends took the cores the front runtime's threads and SQLite's write
/// connection needed; on two cores one delivery thread delivered more, for less CPU per
/// notification, and let a Submit through sooner at the same load (BENCHMARKS.md, "Seventeenth
/// pass"). Both binaries that serve (`floodgate` and the load-test harness's built-in copy)
/// build it here, so they measure the same server.
pub fn main_runtime(cfg: &ServeConfig) -> std::io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(cfg.delivery_threads(cores()))
        .thread_name("floodgate-main")
        .enable_all()
        .build()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The runtime, shut down when dropped.
pub(super) struct FrontRuntime {
    /// `None` only once dropped: shutting down takes the runtime by value.
    runtime: Option<Runtime>,
    handle: Handle,
}

impl FrontRuntime {
    /// Starts a worker thread per core. The main runtime has fewer (`--delivery-threads`), so
    /// the cores are not all taken by ready sends when a Submit or a writer needs one.
    pub(super) fn start() -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(cores())
            .thread_name("floodgate-front")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Where the gRPC server and the write-holding tasks are spawned.
    pub(super) fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

impl Drop for FrontRuntime {
    /// After the server has stopped: whatever is left on it is dropped without waiting (a
    /// runtime cannot block its caller's async context to shut down).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
