//! The `store-ceiling` experiment: how many notification rows/s floodgate's store takes with
//! nothing in front of it — `Store::insert_notifications` called in a loop with fixed-size
//! transactions, the same schema, pragmas, durability and statements intake uses, but no gRPC,
//! no validation and no group-commit queue. Intake's accepted/s is judged against it.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use clap::builder::RangedU64ValueParser;
use floodgate::model::{Channel, CustomerId, Lane, NewNotification, now_millis};
use floodgate::store::{Commit, Store, StoreOptions};
use tokio::time::Instant;

use crate::database::RunDatabase;

/// Options of `floodgate-loadtest store-ceiling`.
#[derive(Debug, Args)]
pub(crate) struct StoreCeilingArgs {
    /// Rows per transaction.
    #[arg(long, default_value_t = 1000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    rows_per_tx: usize,
    /// Customers the rows are spread over, round-robin.
    #[arg(long, default_value_t = 10)]
    customers: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Database: a PostgreSQL URL gets a scratch database beside the one named.
    /// [default: SQLite in a fresh temporary directory]
    #[arg(long)]
    database_url: Option<String>,
}

/// Runs the experiment and prints rows/s.
pub(crate) async fn run(args: StoreCeilingArgs) -> Result<()> {
    ensure!(args.customers >= 1, "--customers must be at least 1");
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let database = RunDatabase::prepare(args.database_url.as_deref()).await?;
    let url = match database.url() {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", dir.path().join("floodgate.db").display()),
    };
    let measured = measure(&args, &url).await;
    let backend = database.backend();
    database.release().await?;
    let (rows, seconds, cpu) = measured?;
    println!(
        "store ceiling on {}: {:.0} rows/s, {:.1} CPU-µs/row ({rows} rows in {:.1}s, {} rows per transaction, {} customers)",
        backend,
        rows as f64 / seconds,
        cpu.as_secs_f64() * 1e6 / rows as f64,
        seconds,
        args.rows_per_tx,
        args.customers
    );
    Ok(())
}

/// Rows inserted, seconds spent inserting, and this process's CPU time over the whole loop
/// (SQLite runs inside it; building the rows is included, a small share).
async fn measure(args: &StoreCeilingArgs, url: &str) -> Result<(u64, f64, Duration)> {
    let store = Store::connect(url, &StoreOptions::default())
        .await
        .context("cannot open the store")?;
    let payload = vec![b'x'; args.payload_bytes];
    let customers = (0..args.customers)
        .map(|c| CustomerId::parse(format!("c-{c}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut next = 0u64;
    let batch = |next: &mut u64| -> Vec<NewNotification> {
        (0..args.rows_per_tx)
            .map(|_| {
                *next += 1;
                NewNotification {
                    customer_id: customers[(*next % args.customers as u64) as usize].clone(),
                    idempotency_key: format!("k-{next}"),
                    recipient: format!("user-{}", *next % 10_000),
                    lane: Lane::Transactional,
                    payload: payload.clone(),
                    send_at: None,
                    expires_at: None,
                    channel: Channel::Webhook,
                    suppressed: None,
                    template: None,
                }
            })
            .collect()
    };
    // One warm-up transaction creates the file's pages and the prepared statements.
    store
        .insert_notifications(Commit::Group, &batch(&mut next), &[], now_millis(), 0)
        .await?;
    // Only the inserts are timed, not building the rows.
    let cpu_before = crate::process::cpu_time(std::process::id())?;
    let mut inserting = Duration::ZERO;
    let mut rows = 0;
    while inserting < args.duration {
        let items = batch(&mut next);
        let started = Instant::now();
        store
            .insert_notifications(Commit::Group, &items, &[], now_millis(), 0)
            .await?;
        inserting += started.elapsed();
        rows += items.len() as u64;
    }
    let seconds = inserting.as_secs_f64();
    let cpu = crate::process::cpu_time(std::process::id())? - cpu_before;
    store.close().await;
    Ok((rows, seconds, cpu))
}
