//! Connecting: the server's address, the bearer token on every call, and TLS.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{Client, Error, RetryPolicy, address};

/// A connection that adds the bearer token to every call. Clones share the connection.
pub type AuthedChannel = InterceptedService<Channel, BearerToken>;

/// Adds `authorization: Bearer <token>` to every call, the header floodgate's server checks
/// (an admin token may call everything, a submit or scoped token the `Dispatcher` and
/// `Preferences` services). Without a token it adds nothing, and the server answers UNAUTHENTICATED.
#[derive(Debug, Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    /// The header for `token`; [`Error::InvalidToken`] if it cannot be sent in one.
    pub fn new(token: Option<&str>) -> Result<Self, Error> {
        token
            .map(|token| format!("Bearer {token}").parse())
            .transpose()
            .map(Self)
            .map_err(|_| Error::InvalidToken)
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// How to reach the server; made by [`Client::builder`].
#[derive(Clone)]
pub struct ClientBuilder {
    address: String,
    token: Option<String>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
    retry: RetryPolicy,
    tls_ca: Option<Vec<u8>>,
    tls_identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Says which secrets are set, never what they are: a builder may end up in a log.
impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |present: bool| if present { "<set>" } else { "<none>" };
        f.debug_struct("ClientBuilder")
            .field("address", &self.address)
            .field("token", &set(self.token.is_some()))
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("tls_ca", &set(self.tls_ca.is_some()))
            .field("tls_identity", &set(self.tls_identity.is_some()))
            .finish()
    }
}

impl ClientBuilder {
    /// The defaults: no token, a 5 s connect timeout, no call timeout, the default retries.
    pub(crate) fn new(address: String) -> Self {
        Self {
            address,
            token: None,
            connect_timeout: Duration::from_secs(5),
            timeout: None,
            retry: RetryPolicy::default(),
            tls_ca: None,
            tls_identity: None,
        }
    }

    /// The bearer token: an admin token, or a submit or scoped (`fgt_…`) token for `Dispatcher`
    /// and `Preferences`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How long to wait for a TCP connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest a single call may take before it fails DEADLINE_EXCEEDED (default: no limit).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How calls answered UNAVAILABLE are retried (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// For an `https://` address: the PEM CA certificate(s) the server's certificate must chain
    /// to, such as a private CA that signed the server's `--tls-cert` (default: the public web
    /// roots). Ignored for `http://`.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// For an `https://` address: the client certificate and its private key (PEM), for a
    /// server that requires one (`--tls-client-ca`, mutual TLS). Ignored for `http://`.
    pub fn tls_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls_identity = Some((cert.into(), key.into()));
        self
    }

    /// Connects now: fails with [`Error::Connect`] if nothing answers, so a wrong address shows
    /// at start-up. The connection is re-established by itself if it later breaks.
    pub async fn connect(self) -> Result<Client, Error> {
        let (endpoint, token, retry) = self.parts()?;
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            address: endpoint.uri().to_string(),
            source,
        })?;
        Ok(Client::new(channel, token, retry))
    }

    /// Connects at the first call instead, so a client can be made before its server is up:
    /// calls made while nothing answers fail UNAVAILABLE and are retried by the policy.
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let (endpoint, token, retry) = self.parts()?;
        Ok(Client::new(endpoint.connect_lazy(), token, retry))
    }

    fn parts(self) -> Result<(Endpoint, BearerToken, RetryPolicy), Error> {
        let token = BearerToken::new(self.token.as_deref())?;
        let url = address::server_url(&self.address)?;
        let tls = url.starts_with("https://");
        let mut endpoint = Endpoint::from_shared(url)
            .map_err(|err| Error::InvalidAddress {
                address: self.address.clone(),
                reason: err.to_string(),
            })?
            .connect_timeout(self.connect_timeout);
        if let Some(timeout) = self.timeout {
            endpoint = endpoint.timeout(timeout);
        }
        if tls {
            endpoint = endpoint
                .tls_config(self.tls_config())
                .map_err(|source| Error::Tls { source })?;
        }
        Ok((endpoint, token, self.retry))
    }

    fn tls_config(&self) -> ClientTlsConfig {
        let tls = match &self.tls_ca {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        match &self.tls_identity {
            Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
            None => tls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_that_cannot_be_a_header_are_refused() {
        assert!(matches!(
            BearerToken::new(Some("a\nb")),
            Err(Error::InvalidToken)
        ));
        let mut token = BearerToken::new(Some("secret")).unwrap();
        let request = token.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer secret"
        );
        let mut none = BearerToken::new(None).unwrap();
        let request = none.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }
}
