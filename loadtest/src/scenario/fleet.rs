//! The simulated customer systems of a run: started, registered with floodgate, offered their
//! load, drained, paused and stopped.

use std::time::Duration;

use anyhow::{Context as _, Result};
use floodgate::api::proto;
use floodgate::api::proto::customers_client::CustomersClient;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::load::{self, Target};
use super::spec::{Scenario, TierName};
use super::system::System;
use crate::arrivals::Arrivals;
use crate::client::{self, AuthedChannel};

/// The simulated customers of a run, in group order, with the group each belongs to.
pub(super) struct Fleet {
    pub(super) customers: Vec<(usize, System)>,
}

impl Fleet {
    pub(super) async fn start(
        scenario: &Scenario,
        epoch: Instant,
        prefix: &str,
    ) -> Result<(Self, Vec<String>)> {
        let mut customers = Vec::with_capacity(scenario.customer_count());
        let mut ids = Vec::with_capacity(scenario.customer_count());
        for (g, group) in scenario.customers.iter().enumerate() {
            for id in group.ids(prefix) {
                let arrivals = Arrivals::since(epoch)?;
                customers.push((g, System::start(group, arrivals).await?));
                ids.push(id);
            }
        }
        Ok((Self { customers }, ids))
    }

    pub(super) async fn stop(self) -> Result<()> {
        let mut stopping = JoinSet::new();
        for (_, system) in self.customers {
            stopping.spawn(system.stop());
        }
        while let Some(stopped) = stopping.join_next().await {
            stopped.context("a simulated customer system panicked")??;
        }
        Ok(())
    }

    pub(super) fn delivered(&self) -> u64 {
        self.customers
            .iter()
            .map(|(_, s)| s.arrivals().unique())
            .sum()
    }

    pub(super) fn overloaded(&self) -> u64 {
        self.customers
            .iter()
            .map(|(_, s)| {
                let r = s.responses();
                r.overloaded + r.abandoned
            })
            .sum()
    }
}

/// Registers every customer with its system's URL and secret and its group's configured tier.
pub(super) async fn register(
    scenario: &Scenario,
    channel: &AuthedChannel,
    fleet: &Fleet,
    ids: &[String],
) -> Result<()> {
    let customers = fleet
        .customers
        .iter()
        .zip(ids)
        .map(|((group, system), id)| proto::Customer {
            id: id.clone(),
            webhook_url: system.url().to_owned(),
            signing_secret: system.secret().to_owned(),
            start_tier: scenario.customers[*group]
                .tier
                .map_or(proto::Tier::Unspecified, |tier| match tier {
                    TierName::Fast => proto::Tier::Fast,
                    TierName::Medium => proto::Tier::Medium,
                    TierName::Slow => proto::Tier::Slow,
                }) as i32,
            ..proto::Customer::default()
        })
        .collect();
    client::upsert_customers(channel, customers).await
}

/// What each customer is offered, in fleet order.
pub(super) fn targets(scenario: &Scenario, ids: &[String]) -> Vec<Target> {
    let mut ids = ids.iter();
    let mut targets = Vec::with_capacity(ids.len());
    for group in &scenario.customers {
        for id in ids.by_ref().take(group.count) {
            targets.push(Target {
                id: id.clone(),
                rates: [group.rate, group.bulk_rate],
                campaign: group.campaign.as_ref().map(|c| (c.at.0, c.count)),
            });
        }
    }
    targets
}

/// Waits until every customer has received as many notifications as were accepted for it, or
/// until `until`.
pub(super) async fn drain(fleet: &Fleet, ledger: &load::Ledger, until: Instant) {
    let done = || {
        fleet
            .customers
            .iter()
            .enumerate()
            .all(|(i, (_, s))| s.arrivals().unique() >= ledger.accepted_count(i))
    };
    while !done() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Pauses every customer, so nothing is delivered while the run is accounted for (and a
/// `--target` server does not keep sending to systems that are about to go away).
pub(super) async fn pause_all(channel: &AuthedChannel, ids: &[String]) -> Result<()> {
    let mut pausing = JoinSet::new();
    for chunk in ids.chunks(ids.len().div_ceil(16).max(1)) {
        let mut customers = CustomersClient::new(channel.clone());
        let chunk = chunk.to_vec();
        pausing.spawn(async move {
            for customer_id in chunk {
                customers
                    .pause_customer(proto::PauseCustomerRequest { customer_id })
                    .await
                    .context("PauseCustomer failed")?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(paused) = pausing.join_next().await {
        paused.context("a pausing task panicked")??;
    }
    Ok(())
}
