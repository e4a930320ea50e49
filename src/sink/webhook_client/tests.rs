//! The webhook client against real local receivers: HTTPS verified against a root the test
//! trusts, refused on an untrusted certificate, and the target policy before anything is sent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use http_body_util::BodyExt as _;

use super::*;
use crate::sink::target_policy::{Cidr, TargetPolicy};

fn settings(allow: &[&str]) -> WebhookSettings {
    let allow = allow.iter().map(|c| c.parse::<Cidr>().unwrap()).collect();
    WebhookSettings {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        target_policy: Arc::new(TargetPolicy::new(allow)),
        allow_plaintext_smtp_auth: false,
        max_connections_per_host: None,
    }
}

fn headers() -> [(HeaderName, HeaderValue); 4] {
    [
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (
            HeaderName::from_static("webhook-id"),
            HeaderValue::from_static("msg_1"),
        ),
        (
            HeaderName::from_static("webhook-timestamp"),
            HeaderValue::from(1_700_000_000_i64),
        ),
        (
            HeaderName::from_static("webhook-signature"),
            HeaderValue::from_static("v1,c2ln"),
        ),
    ]
}

/// A certificate for `localhost`, signed by itself.
struct ServerCert {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn server_cert() -> ServerCert {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    ServerCert {
        cert: certified.cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        )),
    }
}

/// What a receiver saw of one request.
type Seen = (Version, HeaderMap, Bytes, String);

/// An HTTPS receiver on a free port that offers `alpn` (HTTP/2 if it offers `h2` and the client
/// takes it, else HTTP/1.1), answers 200 and passes each request on.
async fn https_receiver(cert: &ServerCert, alpn: &[&[u8]]) -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.clone()], cert.key.clone_key())
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let service = service_fn(move |request: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (head, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let _ = tx.send((head.version, head.headers, body, head.uri.to_string()));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let io = TokioIo::new(tls);
                let _ = if h2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                };
            });
        }
    });
    (port, rx)
}

/// A client that trusts `cert` alone.
fn trusting(cert: &ServerCert) -> WebhookClient {
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.clone()).unwrap();
    WebhookClient::with_roots(&settings(&["127.0.0.0/8"]), roots).unwrap()
}

#[tokio::test]
async fn https_is_verified_against_the_trusted_roots_and_carries_the_headers() {
    let cert = server_cert();
    let (port, mut received) = https_receiver(&cert, &[]).await;
    let client = trusting(&cert);

    let url = format!("https://localhost:{port}/hook");
    let response = client
        .post(&url, headers(), b"{\"a\":1}".to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    crate::sink::answer::read_body(response.into_body(), 0).await;

    let (version, seen, body, target) = received.recv().await.unwrap();
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(target, "/hook");
    assert!(!seen.contains_key("authorization"));
    assert_eq!(body.as_ref(), b"{\"a\":1}");
    assert_eq!(seen["webhook-id"], "msg_1");
    assert_eq!(seen["webhook-timestamp"], "1700000000");
    assert_eq!(seen["content-type"], "application/json");
    assert_eq!(seen["user-agent"], AGENT);
    assert_eq!(seen["host"], format!("localhost:{port}").as_str());

    // The connection went back to the pool: a second webhook reuses it.
    let response = client.post(&url, headers(), b"{}".to_vec()).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Sends one webhook to `https://<userinfo>localhost:<port><rest>` on a receiver offering
/// `alpn`, through a client that trusts it; expects a 200 and returns the port and what the
/// receiver saw.
async fn one_webhook(alpn: &[&[u8]], userinfo: &str, rest: &str) -> (u16, Seen) {
    let cert = server_cert();
    let (port, mut received) = https_receiver(&cert, alpn).await;
    let url = format!("https://{userinfo}localhost:{port}{rest}");
    let response = trusting(&cert)
        .post(&url, headers(), b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    (port, received.recv().await.unwrap())
}

#[tokio::test]
async fn https_takes_http2_when_the_receiver_offers_it() {
    let (_, (version, seen, _, _)) = one_webhook(&[b"h2"], "", "/hook").await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(seen["webhook-id"], "msg_1");
}

#[tokio::test]
async fn urls_are_read_as_the_api_validated_them_and_credentials_become_basic_auth() {
    // Percent-encoded credentials, a space and a tab: the WHATWG parser encodes the space and
    // drops the tab; `http::Uri` alone would refuse both.
    let (port, (_, seen, _, target)) = one_webhook(&[], "us%65r:p%40ss@", "/ho\tok?x=a b").await;
    assert_eq!(target, "/hook?x=a%20b");
    // "user:p@ss"
    assert_eq!(seen["authorization"], "Basic dXNlcjpwQHNz");
    assert_eq!(seen["host"], format!("localhost:{port}").as_str());
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_retryable_connection_failure() {
    let cert = server_cert();
    let (port, mut received) = https_receiver(&cert, &[]).await;
    let client = WebhookClient::new(&settings(&["127.0.0.0/8"])).unwrap();

    let url = format!("https://localhost:{port}/hook");
    let err = client.post(&url, headers(), Vec::new()).await.unwrap_err();
    match err {
        SinkError::Retryable { reason, .. } => {
            assert!(
                reason.starts_with("cannot connect to the webhook"),
                "{reason}"
            );
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("expected a retryable failure, got {other:?}"),
    }
    assert!(received.try_recv().is_err(), "nothing may be sent");
}

#[tokio::test]
async fn refused_targets_are_permanent_and_nothing_is_sent() {
    let client = WebhookClient::new(&settings(&[])).unwrap();
    // An IP literal is checked before the request; a name when it is resolved.
    for url in [
        "http://10.1.2.3/hook",
        "http://[::1]:9/hook",
        "http://localhost:9/hook",
    ] {
        let err = client.post(url, headers(), Vec::new()).await.unwrap_err();
        match err {
            SinkError::Permanent { reason } => {
                assert!(reason.starts_with("the webhook: target"), "{url}: {reason}");
                assert!(reason.contains("is refused"), "{url}: {reason}");
            }
            other => panic!("{url}: expected a permanent refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_url_that_is_not_one_is_permanent() {
    let client = WebhookClient::new(&settings(&[])).unwrap();
    for url in ["not a url", "/relative", "ftp://example.com/hook"] {
        let err = client.post(url, headers(), Vec::new()).await.unwrap_err();
        assert!(
            matches!(&err, SinkError::Permanent { reason } if reason.starts_with("invalid request to the webhook")),
            "{url}: {err:?}"
        );
    }
}

#[test]
fn a_url_is_read_once_and_a_refused_one_is_not_kept() {
    let policy = TargetPolicy::new(vec!["127.0.0.0/8".parse::<Cidr>().unwrap()]);
    let targets = Targets::default();
    let allowed = "http://u:p@127.0.0.1:9/hook";
    let first = targets.get(allowed, &policy).unwrap();
    let again = targets.get(allowed, &policy).unwrap();
    assert_eq!(again.uri, first.uri);
    assert_eq!(again.auth, first.auth);
    assert_eq!(first.uri, "http://127.0.0.1:9/hook");
    assert_eq!(targets.0.len(), 1);
    assert!(
        !format!("{targets:?}").contains("u:p@"),
        "credentials stay out of logs"
    );

    for refused in ["http://10.1.2.3/hook", "not a url"] {
        for _ in 0..2 {
            let err = targets.get(refused, &policy).unwrap_err();
            assert!(matches!(err, SinkError::Permanent { .. }), "{refused}");
        }
    }
    assert_eq!(targets.0.len(), 1, "refusals are not kept");
}

#[test]
fn the_kept_urls_are_bounded() {
    let policy = TargetPolicy::new(vec!["127.0.0.0/8".parse::<Cidr>().unwrap()]);
    let targets = Targets::default();
    for i in 0..MAX_TARGETS + 10 {
        let url = format!("http://127.0.0.1:9/hook/{i}");
        let target = targets.get(&url, &policy).unwrap();
        assert_eq!(target.uri.path(), format!("/hook/{i}"));
        assert!(targets.0.len() <= MAX_TARGETS);
    }
}
