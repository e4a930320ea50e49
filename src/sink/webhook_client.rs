//! The webhook's HTTP client: hyper's pooled client, driven directly.
//!
//! A webhook is one POST of a ready body to a registered URL, answered by a status. reqwest,
//! which the provider sinks use, wraps each request in layers a webhook never needs: a redirect
//! follower that parses the URL again, a retry policy that copies every request in case of an
//! HTTP/2 refusal, and further copies of the headers. Under load those layers were 12–16% of
//! the server's CPU per delivered notification (docs/dispatch-engine.md, "The webhook client"),
//! so webhooks go straight to the same kind of connection pool underneath.
//!
//! What the shared client guarantees holds here too: the target policy resolves every named host
//! at every new connection and no request goes to an IP-literal URL it refuses (checked when the
//! client first reads the URL, see `Targets`), redirects are never
//! followed (hyper does not follow them), proxies are never used, HTTPS is verified against the
//! Mozilla roots, and HTTP/2 is used where the receiver offers it by ALPN. URLs are read as
//! reqwest read them, credentials in a URL included (see `Target`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue, USER_AGENT};
use hyper::http::uri::InvalidUri;
use hyper::{Request, Response, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::percent_decode_str;
use rustls::RootCertStore;

use super::target_policy::TargetPolicy;
use super::webhook::{ClientError, WebhookSettings};
use super::{SinkError, answer};
use crate::bounded_cache::BoundedCache;

/// How the far end is named in reasons (`last_error`).
const WHAT: &str = "the webhook";

/// The user agent every delivery carries, the same as the provider sinks'.
const AGENT: &str = concat!("floodgate/", env!("CARGO_PKG_VERSION"));

/// The most URLs a client keeps read (see [`Targets`]). Past it the client starts over, so a
/// deployment with more customers than this reads some URLs again, as every send once did.
const MAX_TARGETS: usize = 4096;

type Connector = HttpsConnector<HttpConnector<PolicyDns>>;

/// A pooled HTTP/1.1 and HTTP/2 client that reaches only what the target policy allows.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    client: Client<Connector, Full<Bytes>>,
    policy: Arc<TargetPolicy>,
    targets: Arc<Targets>,
}

impl WebhookClient {
    /// A client that trusts the Mozilla root certificates (webpki-roots), as the provider sinks'
    /// client does.
    pub fn new(settings: &WebhookSettings) -> Result<Self, ClientError> {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(settings, roots)
    }

    /// A client that trusts `roots` (tests bring their own certificate authority).
    fn with_roots(settings: &WebhookSettings, roots: RootCertStore) -> Result<Self, ClientError> {
        let policy = settings.target_policy.clone();
        let mut http = HttpConnector::new_with_resolver(PolicyDns(policy.clone()));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            client,
            policy,
            targets: Arc::default(),
        })
    }

    /// POSTs `body` to `url` with `headers` (plus the user agent; hyper adds `Host` and
    /// `Content-Length`) and returns the answer; read its body with `answer::read_body`. Errors
    /// are classified for the retry policy: an invalid URL or a refused target is permanent,
    /// anything on the way (connect, TLS, a closed connection) retryable. The attempt's time
    /// limit is the caller's.
    pub async fn post(
        &self,
        url: &str,
        headers: [(HeaderName, HeaderValue); 4],
        body: Vec<u8>,
    ) -> Result<Response<Incoming>, SinkError> {
        let Target { uri, auth } = self.targets.get(url, &self.policy)?;
        let mut request = Request::post(uri);
        if let Some(map) = request.headers_mut() {
            map.reserve(headers.len() + 2);
            map.extend(headers);
            map.insert(USER_AGENT, HeaderValue::from_static(AGENT));
            if let Some(auth) = auth {
                map.insert(AUTHORIZATION, auth);
            }
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| invalid(&e))?;
        self.client
            .request(request)
            .await
            .map_err(|e| answer::unreachable(WHAT, e.is_connect(), &e))
    }
}

/// A request target that failed to build: the reason for `last_error`.
fn invalid(why: &dyn std::fmt::Display) -> SinkError {
    SinkError::Permanent {
        reason: format!("invalid request to {WHAT}: {why}"),
    }
}

/// Webhook URLs as read and checked, by URL, so that a customer's URL is read once rather than
/// at every send: reading it (the WHATWG parser, then `http::Uri`) was 4% of the delivery
/// thread's time under load (docs/dispatch-engine.md, "The webhook client"). Only URLs the
/// target policy allowed are kept; the policy does not change while the client lives, and a named
/// host is still resolved and checked at every new connection. A URL that is refused or does
/// not parse is read again at its next send, and answered the same. Its `Debug` shows no URLs
/// (see [`BoundedCache`]): a URL may carry a user name and password.
#[derive(Debug)]
struct Targets(BoundedCache<Box<str>, Target>);

impl Default for Targets {
    fn default() -> Self {
        Self(BoundedCache::new(MAX_TARGETS))
    }
}

impl Targets {
    /// The target `url` names, if it is one and the policy allows an IP-literal host.
    fn get(&self, url: &str, policy: &TargetPolicy) -> Result<Target, SinkError> {
        if let Some(target) = self.0.get(url) {
            return Ok(target);
        }
        let target = Target::parse(url).map_err(|e| invalid(&e))?;
        if let Some(host) = target.uri.host() {
            policy
                .check_host(host)
                .map_err(|refused| SinkError::Permanent {
                    reason: format!("{WHAT}: {refused}"),
                })?;
        }
        self.0.insert(url.into(), target.clone());
        Ok(target)
    }
}

/// Where a webhook goes, read from its registered URL as the API validated it and as reqwest
/// read it before: the WHATWG parser (which percent-encodes spaces, punycodes names and drops
/// tabs and newlines that `http::Uri` would refuse), then credentials in the URL moved into an
/// `Authorization: Basic` header, marked sensitive.
#[derive(Debug, Clone)]
struct Target {
    uri: Uri,
    auth: Option<HeaderValue>,
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let mut url = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err("not an http:// or https:// URL with a host".into());
        }
        let auth = basic_auth(&mut url);
        let uri = url
            .as_str()
            .parse()
            .map_err(|e: InvalidUri| e.to_string())?;
        Ok(Self { uri, auth })
    }
}

/// Takes the user name and password out of `url` and returns them as a Basic credential
/// (percent-decoded, as a browser would send them), or `None` if it has none.
fn basic_auth(url: &mut reqwest::Url) -> Option<HeaderValue> {
    let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
    let user = decode(url.username());
    let password = url.password().map(decode);
    if user.is_empty() && password.is_none() {
        return None;
    }
    // A URL with a host can always lose its credentials.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let credentials = STANDARD.encode(format!("{user}:{}", password.unwrap_or_default()));
    let mut value = HeaderValue::from_str(&format!("Basic {credentials}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The connector's resolver: the system's, filtered by the target policy, at every new
/// connection to a named host (the same check as the provider sinks' resolver).
#[derive(Debug, Clone)]
struct PolicyDns(Arc<TargetPolicy>);

type Resolved = Result<std::vec::IntoIter<SocketAddr>, Box<dyn std::error::Error + Send + Sync>>;

impl tower_service::Service<Name> for PolicyDns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Resolved> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.0.clone();
        // Port 0: the connector puts the URL's port on every address.
        Box::pin(async move { Ok(policy.resolve(name.as_str(), 0).await?.into_iter()) })
    }
}

#[cfg(test)]
mod tests;
