//! The live dashboard, served by floodgate itself at `/dashboard`: one self-contained page (no
//! CDN, works offline) that polls two JSON endpoints every two seconds.
//!
//! - `GET /dashboard`: the page. It holds no data, so it is served to anyone; it asks for a token
//!   (from `#token=` in its URL fragment, which never reaches a server and is removed from the
//!   address bar, or a login form) and sends it in the `Authorization` header of every data
//!   request.
//! - `GET /dashboard/api/overview`: every customer's current figures, for the table, and the
//!   last minutes of delivered/s of the [`CHART_SERIES`] busiest, for the chart.
//! - `GET /dashboard/api/customers/{id}`: one customer's samples (limit, rate, RTT, delivered/s)
//!   and tier changes, for the view where an SRE watches the controller move.
//!
//! Both data endpoints are read-only and accept the admin or the metrics token, as
//! `Authorization: Bearer <token>` only. The HTTP port routes to them and checks the token
//! (see [`crate::http`]); this module only answers, from the [`Sources`] it is given, so it
//! knows nothing of the port.

pub(crate) mod history;

use std::collections::HashMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use crate::dispatch::{CustomerStats, Dispatcher};
use crate::model::{EpochMillis, now_millis};
use crate::store::Store;
use history::{History, Sample, TierChange};

/// The page: HTML, CSS and JavaScript in one file, compiled into the binary.
const PAGE: &str = include_str!("page.html");

/// How many customers the overview's chart draws: the busiest by delivered/s now. Only their
/// series are sent; with every customer's, the overview of 10,000 running customers was 5.8 MB
/// a minute after they started, and grew with each two-second sample for ten minutes.
const CHART_SERIES: usize = 8;

/// What the dashboard's data is read from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sources<'a> {
    /// The backlog per customer.
    pub store: &'a Store,
    /// The running actors' live figures, and this node's place in a cluster.
    pub dispatcher: &'a Dispatcher,
    /// The recent samples the charts draw.
    pub history: &'a History,
}

/// `GET /dashboard`.
pub(crate) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// One row of the customer table.
#[derive(Debug, Serialize)]
struct Row {
    id: String,
    /// `idle` when no actor is running (nothing due, or paused with nothing in flight).
    tier: &'static str,
    limit: usize,
    rate: f64,
    delivered_per_sec: f64,
    rtt_p50_ms: Option<f64>,
    rtt_p99_ms: Option<f64>,
    error_rate: f64,
    in_flight: usize,
    backlog_transactional: u64,
    backlog_bulk: u64,
    circuit: &'static str,
    last_tier_change: Option<TierChange>,
}

/// `GET /dashboard/api/overview`.
#[derive(Debug, Serialize)]
struct Overview {
    now_ms: EpochMillis,
    refresh_ms: u128,
    customers: Vec<Row>,
    /// Delivered/s over time of the busiest customers, as `[t_ms, delivered_per_sec]` pairs.
    throughput: HashMap<String, Vec<(EpochMillis, f64)>>,
    /// In a cluster, the node answering (its live figures are its own customers'), its buckets,
    /// and whether it is fenced.
    node: Option<crate::telemetry::cluster::ClusterView>,
}

/// `GET /dashboard/api/customers/{id}`.
#[derive(Debug, Serialize)]
struct CustomerView {
    id: String,
    now: Option<Row>,
    samples: Vec<Sample>,
    tier_changes: Vec<TierChange>,
}

/// `GET /dashboard/api/overview`.
pub(crate) async fn overview(state: Sources<'_>) -> Response {
    match rows(state).await {
        Ok(customers) => Json(Overview {
            now_ms: now_millis(),
            refresh_ms: history::SAMPLE_EVERY.as_millis(),
            throughput: state.history.throughput(&busiest(&customers, CHART_SERIES)),
            customers,
            node: state.dispatcher.placement().view(),
        })
        .into_response(),
        Err(response) => response,
    }
}

/// `GET /dashboard/api/customers/{id}`.
pub(crate) async fn customer(state: Sources<'_>, id: String) -> Response {
    let now = match rows(state).await {
        Ok(rows) => rows.into_iter().find(|row| row.id == id),
        Err(response) => return response,
    };
    let (samples, tier_changes) = state.history.customer(&id).unwrap_or_default();
    if now.is_none() && samples.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            "no such customer with recent activity\n",
        )
            .into_response();
    }
    Json(CustomerView {
        id,
        now,
        samples,
        tier_changes,
    })
    .into_response()
}

/// Every customer with a running actor or a backlog, by id.
async fn rows(state: Sources<'_>) -> Result<Vec<Row>, Response> {
    let actors = state.dispatcher.all_stats().await;
    let backlog = state.store.backlog_all().await.map_err(|err| {
        tracing::warn!(error = %err, "dashboard: cannot read the backlog");
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
    })?;
    let mut backlog: HashMap<String, (u64, u64)> =
        backlog.into_iter().map(|(id, t, b)| (id, (t, b))).collect();
    let mut rows: Vec<Row> = actors
        .iter()
        .map(|stats| {
            let (t, b) = backlog.remove(&stats.customer_id).unwrap_or_default();
            row(stats, t, b)
        })
        .collect();
    rows.extend(backlog.into_iter().map(|(id, (t, b))| idle_row(id, t, b)));
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

/// The ids of the `n` rows with the most delivered/s, the busiest first; among equals, in the
/// rows' order (by id), as the page sorts them.
fn busiest(rows: &[Row], n: usize) -> Vec<&str> {
    let mut by_rate: Vec<&Row> = rows.iter().collect();
    by_rate.sort_by(|a, b| b.delivered_per_sec.total_cmp(&a.delivered_per_sec));
    by_rate
        .into_iter()
        .take(n)
        .map(|row| row.id.as_str())
        .collect()
}

fn row(stats: &CustomerStats, backlog_transactional: u64, backlog_bulk: u64) -> Row {
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    Row {
        id: stats.customer_id.clone(),
        tier: stats.tier.as_str(),
        limit: stats.limit,
        rate: stats.rate,
        delivered_per_sec: stats.delivered_per_sec,
        rtt_p50_ms: ms(stats.rtt_p50),
        rtt_p99_ms: ms(stats.rtt_p99),
        error_rate: stats.error_rate,
        in_flight: stats.in_flight,
        backlog_transactional,
        backlog_bulk,
        circuit: circuit_name(stats),
        last_tier_change: stats.last_tier_change.as_ref().map(|last| TierChange {
            at_ms: last.at,
            from: last.from.as_str(),
            to: last.to.as_str(),
            reason: last.reason.clone(),
        }),
    }
}

/// A customer with work in the store but no running actor (paused, or not started yet).
fn idle_row(id: String, backlog_transactional: u64, backlog_bulk: u64) -> Row {
    Row {
        id,
        tier: "idle",
        limit: 0,
        rate: 0.0,
        delivered_per_sec: 0.0,
        rtt_p50_ms: None,
        rtt_p99_ms: None,
        error_rate: 0.0,
        in_flight: 0,
        backlog_transactional,
        backlog_bulk,
        circuit: "closed",
        last_tier_change: None,
    }
}

fn circuit_name(stats: &CustomerStats) -> &'static str {
    use crate::dispatch::controller::Circuit;
    match stats.circuit {
        Circuit::Closed => "closed",
        Circuit::Open => "open",
        Circuit::HalfOpen => "half-open",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_rate(id: &str, delivered_per_sec: f64) -> Row {
        Row {
            delivered_per_sec,
            ..idle_row(id.to_owned(), 0, 0)
        }
    }

    #[test]
    fn the_chart_gets_the_busiest_customers_first_and_equals_by_id() {
        let rows = [
            with_rate("a", 1.0),
            with_rate("b", 50.0),
            with_rate("c", 0.0),
            with_rate("d", 50.0),
            with_rate("e", 7.5),
        ];
        assert_eq!(busiest(&rows, 3), ["b", "d", "e"]);
        assert_eq!(busiest(&rows, 10), ["b", "d", "e", "a", "c"]);
        assert!(busiest(&[], CHART_SERIES).is_empty());
    }
}
