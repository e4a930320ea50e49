//! The HTTP client the provider sinks (FCM, APNs, SMS) send through, with the outbound target
//! policy built in: named hosts are resolved through the policy at every new connection,
//! IP-literal URLs are checked before each request, and redirects are never followed. Webhooks,
//! sent by the thousand per second, have their own leaner client with the same guarantees
//! ([`WebhookClient`](super::webhook_client::WebhookClient)).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{IntoUrl, RequestBuilder, Response};

use super::target_policy::{PolicyResolver, TargetPolicy};
use super::webhook::{ClientError, WebhookSettings};
use super::{SinkError, answer};

/// A pooled HTTP client that reaches only what the target policy allows.
#[derive(Debug, Clone)]
pub struct Outbound {
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
}

impl Outbound {
    /// HTTPS (HTTP/2 by ALPN where offered), or, with `h2c`, HTTP/2 by prior knowledge for
    /// plain-text endpoints (APNs has no HTTP/1.1). Proxies from the environment are ignored: a
    /// proxy would make the connection, and the policy could no longer see where it goes.
    pub fn new(settings: &WebhookSettings, h2c: bool) -> Result<Self, ClientError> {
        let policy = settings.target_policy.clone();
        let builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(policy.clone())))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("floodgate/", env!("CARGO_PKG_VERSION")));
        let builder = if h2c {
            builder.http2_prior_knowledge()
        } else {
            builder
        };
        Ok(Self {
            client: builder.build()?,
            policy,
        })
    }

    /// Starts a POST to `url`; hand the finished builder to [`Outbound::send`].
    pub fn post(&self, url: impl IntoUrl) -> RequestBuilder {
        self.client.post(url)
    }

    /// Sends `request` if the policy allows its target. `what` names the far end in reasons.
    pub async fn send(&self, what: &str, request: RequestBuilder) -> Result<Response, SinkError> {
        let request = request
            .build()
            .map_err(|e| answer::transport_error(what, &e))?;
        self.policy
            .check_url(request.url())
            .map_err(|refused| SinkError::Permanent {
                reason: format!("{what}: {refused}"),
            })?;
        self.client
            .execute(request)
            .await
            .map_err(|e| answer::transport_error(what, &e))
    }
}
