//! `floodgate top`: a live table of every customer system's delivery figures.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use floodgate_client::proto;

use super::{Connection, rpc_error};

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// Refresh interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Print the table once and exit (for scripts).
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    connection: Connection,
}

/// A live table of every customer system's delivery figures, refreshed until Ctrl-C.
pub(crate) async fn run(args: TopArgs) -> Result<()> {
    let mut client = args.connection.client().await?.customers();
    loop {
        let mut stats = client
            .list_customer_stats(proto::ListCustomerStatsRequest {})
            .await
            .map_err(|status| rpc_error("ListCustomerStats", &status))?
            .into_inner()
            .stats;
        stats.sort_by(|a, b| {
            b.delivered_per_sec
                .total_cmp(&a.delivered_per_sec)
                .then(a.customer_id.cmp(&b.customer_id))
        });
        if !args.once {
            print!("\x1b[2J\x1b[H"); // clear the screen, cursor home
        }
        print!("{}", render_top(&stats));
        if args.once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

pub(super) fn render_top(stats: &[proto::CustomerStats]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<20} {:<12} {:>6} {:>9} {:>9} {:>8} {:>8} {:>6} {:>6} {:>10} {:>10} {:<9} {}\n",
        "CUSTOMER",
        "TIER",
        "LIMIT",
        "RATE/s",
        "DELIV/s",
        "RTT p50",
        "RTT p99",
        "ERR%",
        "INFLT",
        "BACKLOG-T",
        "BACKLOG-B",
        "CIRCUIT",
        "OWNER"
    );
    for s in stats {
        let tier = proto::Tier::try_from(s.tier)
            .map_or("?", |t| t.as_str_name())
            .trim_start_matches("TIER_")
            .to_lowercase();
        let circuit = proto::CircuitState::try_from(s.circuit)
            .map_or("?", |c| c.as_str_name())
            .trim_start_matches("CIRCUIT_STATE_")
            .to_lowercase();
        let _ = writeln!(
            out,
            "{:<20} {:<12} {:>6} {:>9.1} {:>9.1} {:>6.1}ms {:>6.1}ms {:>5.1}% {:>6} {:>10} {:>10} {:<9} {}",
            s.customer_id,
            tier,
            s.concurrency_limit,
            s.pacing_rate,
            s.delivered_per_sec,
            s.rtt_p50_ms,
            s.rtt_p99_ms,
            s.error_rate * 100.0,
            s.in_flight,
            s.backlog_transactional,
            s.backlog_bulk,
            circuit,
            if s.owner_node.is_empty() {
                "-"
            } else {
                &s.owner_node
            }
        );
    }
    out
}
