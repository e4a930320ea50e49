//! An optional cap on how many webhook requests are open at once to one host
//! (`--webhook-max-connections-per-host`), the way Go's `MaxConnsPerHost` caps an HTTP client.
//!
//! Every customer system paces itself with its own window, and an HTTP/1.1 request holds a
//! connection for its whole round trip, so many customer systems behind one endpoint (one
//! gateway, one receiver) add up to one connection per request in flight: hundreds to a single
//! host. Each of those connections carries few requests per wake-up, and an HTTP request costs
//! both sides more CPU the more connections carry the same load (BENCHMARKS.md, "Eleventh
//! pass": the bare reqwest → axum pair costs 1.6 times as much per request with 512 connections
//! as with 64). With a cap, requests to that host beyond it wait for one to finish, and the
//! connections they reuse stay busy.
//!
//! The cap is per host, never per node: a slow host only holds back the requests to itself,
//! which its own capacity already holds back, never a customer system elsewhere. Off by default,
//! because with few customer systems per host it adds nothing, and with a slow host it bounds
//! that host's throughput at cap ÷ round trip.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The requests open to each host, when capped.
#[derive(Debug)]
pub struct HostLimit {
    cap: Option<NonZeroUsize>,
    /// One semaphore per host, made at the first request to it. There is one entry per distinct
    /// webhook host of the customer systems this node served, so it stays small.
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostLimit {
    /// At most `cap` requests open to any one host at a time; `None` for no cap.
    pub fn new(cap: Option<NonZeroUsize>) -> Self {
        Self {
            cap,
            hosts: Mutex::default(),
        }
    }

    /// Waits until a request to `url`'s host may start, and returns what to hold until it has
    /// ended (the response read). Without a cap it returns at once with nothing to hold.
    pub async fn acquire(&self, url: &str) -> Option<OwnedSemaphorePermit> {
        let cap = self.cap?;
        let semaphore = {
            let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
            let key = host_key(url);
            match hosts.get(key) {
                Some(semaphore) => semaphore.clone(),
                None => hosts
                    .entry(key.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(cap.get())))
                    .clone(),
            }
        };
        // Never closed: the semaphores are only ever added to the map.
        semaphore.acquire_owned().await.ok()
    }
}

/// The part of a URL that names where it connects: scheme and authority
/// (`https://hooks.example.com:8443` of `https://hooks.example.com:8443/a?b`). A URL
/// without `://` is its own key (it cannot be sent anyway; the send reports why).
fn host_key(url: &str) -> &str {
    let Some(scheme_end) = url.find("://") else {
        return url;
    };
    let authority = scheme_end + 3;
    match url[authority..].find(['/', '?', '#']) {
        Some(end) => &url[..authority + end],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_host_is_its_scheme_and_authority() {
        assert_eq!(
            host_key("https://hooks.example.com:8443/a/b?c#d"),
            "https://hooks.example.com:8443"
        );
        assert_eq!(host_key("http://10.0.0.1?x"), "http://10.0.0.1");
        assert_eq!(host_key("http://10.0.0.1"), "http://10.0.0.1");
        assert_eq!(host_key("not a url"), "not a url");
    }

    #[tokio::test(start_paused = true)]
    async fn a_capped_host_waits_and_other_hosts_do_not() {
        let limit = HostLimit::new(NonZeroUsize::new(2));
        let first = limit.acquire("http://a.test/one").await;
        let second = limit.acquire("http://a.test/two").await;
        assert!(first.is_some() && second.is_some());
        let third = limit.acquire("http://a.test/three");
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut third)
                .await
                .is_err(),
            "a third request to the same host waits"
        );
        assert!(
            limit.acquire("http://b.test/one").await.is_some(),
            "another host has its own cap"
        );
        drop(first);
        assert!(
            third.await.is_some(),
            "a finished request lets the next one start"
        );
    }

    #[tokio::test]
    async fn without_a_cap_nothing_is_held() {
        let limit = HostLimit::new(None);
        assert!(limit.acquire("http://a.test/").await.is_none());
    }
}
