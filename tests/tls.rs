//! TLS end to end, with a CA generated for each run: gRPC and HTTP over TLS, plain text refused,
//! mutual TLS, a certificate rotated on disk without a restart, the CLI over TLS, and PostgreSQL
//! with `sslmode=require` / `verify-full` when the test server has SSL on.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Backend, TestDb, TestServer, test_config};
use floodgate::api::proto;
use floodgate::api::proto::customers_client::CustomersClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A private CA and the files a TLS deployment of floodgate needs, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
            ca,
        };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) with `serial`, for a server or a
    /// client.
    fn issue(&self, names: &[&str], serial: u64, usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![usage];
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes a server certificate (localhost and 127.0.0.1, plus `extra` names) as server.pem
    /// and server.key, each replaced in one rename so the server never reads half a file.
    fn write_server(&self, serial: u64, extra: &[&str]) -> Issued {
        let mut names = vec!["localhost", "127.0.0.1"];
        names.extend_from_slice(extra);
        let issued = self.issue(&names, serial, ExtendedKeyUsagePurpose::ServerAuth);
        replace(&self.path("server.key"), &issued.key);
        replace(&self.path("server.pem"), &issued.cert);
        issued
    }

    fn client(&self) -> Issued {
        self.issue(&["client"], 7, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

fn replace(path: &Path, contents: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// floodgate with TLS on both listeners; with `mtls`, clients need a certificate from `pki`.
async fn start(pki: &Pki, mtls: bool) -> (TestServer, TestDb) {
    pki.write_server(1, &[]);
    let db = TestDb::new(Backend::Sqlite).await;
    let mut cfg = test_config(&db);
    cfg.tls_cert = Some(pki.path("server.pem"));
    cfg.tls_key = Some(pki.path("server.key"));
    cfg.tls_client_ca = mtls.then(|| pki.path("ca.pem"));
    (TestServer::start(cfg).await, db)
}

/// A gRPC client over TLS trusting `ca`, optionally presenting `identity`; retries while the
/// server starts, gives the last error after that.
async fn grpc(
    server: &TestServer,
    ca: &str,
    identity: Option<&Issued>,
) -> Result<Vec<proto::Customer>, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
    }
    let endpoint = Channel::from_shared(server.grpc_url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let mut last = String::new();
    for _ in 0..50 {
        match endpoint.connect().await {
            Ok(channel) => {
                let mut request = tonic::Request::new(proto::ListCustomersRequest {});
                let bearer = format!("Bearer {ADMIN_TOKEN}").parse().unwrap();
                request.metadata_mut().insert("authorization", bearer);
                return CustomersClient::new(channel)
                    .list_customers(request)
                    .await
                    .map(|answer| answer.into_inner().customers)
                    .map_err(|status| format!("{status:?}"));
            }
            Err(err) => last = format!("{err:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// An HTTPS client trusting `ca`, optionally presenting `identity`.
fn https(ca: &str, identity: Option<&Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5));
    if let Some(identity) = identity {
        let pem = format!("{}{}", identity.cert, identity.key);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

fn http_url(server: &TestServer, path: &str) -> String {
    format!("https://localhost:{}{path}", server.http_addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_speak_tls_and_refuse_plain_text() {
    let pki = Pki::new("floodgate test CA");
    let (server, _db) = start(&pki, false).await;

    let customers = grpc(&server, &pki.ca_pem(), None).await;
    assert_eq!(customers.unwrap(), Vec::new(), "ListCustomers over TLS");

    let client = https(&pki.ca_pem(), None);
    let health = client
        .get(http_url(&server, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_11);
    let metrics = client
        .get(http_url(&server, "/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("# TYPE"));
    let anonymous = client
        .get(http_url(&server, "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "the token is still required");

    // A CA that did not sign the server's certificate is not enough.
    let stranger = Pki::new("another CA");
    assert!(grpc(&server, &stranger.ca_pem(), None).await.is_err());
    let untrusted = https(&stranger.ca_pem(), None)
        .get(http_url(&server, "/healthz"))
        .send()
        .await;
    assert!(untrusted.is_err(), "{untrusted:?}");

    // Plain text on either port gets no answer.
    let plain_http = reqwest::Client::new()
        .get(format!("http://{}/healthz", server.http_addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain_http.is_err(), "{plain_http:?}");
    let plain_url = server.grpc_url.replace("https://", "http://");
    let plain_grpc = async {
        let channel = Channel::from_shared(plain_url).unwrap().connect().await?;
        CustomersClient::new(channel)
            .list_customers(proto::ListCustomersRequest {})
            .await
            .map_err(Box::<dyn std::error::Error>::from)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let plain_grpc = tokio::time::timeout(Duration::from_secs(10), plain_grpc).await;
    assert!(
        matches!(plain_grpc, Ok(Err(_))),
        "plain-text gRPC must fail: {plain_grpc:?}"
    );

    // Clients that connect and never start the handshake do not hold up the shutdown (the grace
    // is 30 s; its first half waits for connections under way).
    let grpc_port = reqwest::Url::parse(&server.grpc_url)
        .unwrap()
        .port()
        .unwrap();
    let _silent_grpc = tokio::net::TcpStream::connect(("127.0.0.1", grpc_port))
        .await
        .unwrap();
    let _silent_http = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), server.stop()).await;
    stopped.expect("stopped promptly").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let pki = Pki::new("floodgate test CA");
    let (server, _db) = start(&pki, true).await;
    let client = pki.client();

    assert!(grpc(&server, &pki.ca_pem(), Some(&client)).await.is_ok());
    let denied = grpc(&server, &pki.ca_pem(), None).await;
    assert!(denied.is_err(), "no client certificate: {denied:?}");
    let stranger = Pki::new("another CA").client();
    let denied = grpc(&server, &pki.ca_pem(), Some(&stranger)).await;
    assert!(denied.is_err(), "certificate from another CA: {denied:?}");

    let health = https(&pki.ca_pem(), Some(&client))
        .get(http_url(&server, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let denied = https(&pki.ca_pem(), None)
        .get(http_url(&server, "/healthz"))
        .send()
        .await;
    assert!(
        denied.is_err(),
        "HTTP without a client certificate: {denied:?}"
    );

    server.stop().await.unwrap();
}

/// The leaf certificate the HTTP listener presents now (DER), read with a bare rustls client.
async fn presented_certificate(server: &TestServer, ca: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let chain = tls.get_ref().1.peer_certificates().unwrap();
    chain[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_without_a_restart() {
    let pki = Pki::new("floodgate test CA");
    let (server, _db) = start(&pki, false).await;
    assert!(grpc(&server, &pki.ca_pem(), None).await.is_ok());
    let first = der(&std::fs::read_to_string(pki.path("server.pem")).unwrap());
    assert_eq!(presented_certificate(&server, &pki.ca_pem()).await, first);

    let renewed = der(&pki.write_server(2, &["renewed.floodgate.test"]).cert);
    assert_ne!(renewed, first);
    let deadline = Instant::now() + Duration::from_secs(20);
    while presented_certificate(&server, &pki.ca_pem()).await != renewed {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        grpc(&server, &pki.ca_pem(), None).await.is_ok(),
        "gRPC with the renewed certificate"
    );

    // A broken file is refused and the renewed certificate stays in use.
    replace(&pki.path("server.pem"), "not a certificate\n");
    tokio::time::sleep(floodgate::tls::RELOAD_INTERVAL * 2).await;
    assert_eq!(presented_certificate(&server, &pki.ca_pem()).await, renewed);
    assert!(grpc(&server, &pki.ca_pem(), None).await.is_ok());

    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_tls_with_the_ca_it_is_given() {
    let pki = Pki::new("floodgate test CA");
    let (server, _db) = start(&pki, false).await;
    assert!(
        grpc(&server, &pki.ca_pem(), None).await.is_ok(),
        "server up"
    );
    let cli = |with_ca: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"));
        command.args(["customer", "list", "--server", &server.grpc_url]);
        command.args(["--token", ADMIN_TOKEN]);
        if with_ca {
            command.arg("--tls-ca").arg(pki.path("ca.pem"));
        }
        command.env_remove("FLOODGATE_TLS_CA");
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let trusted = cli(true).await.unwrap();
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    // Without --tls-ca the public roots do not know the test CA: a connection failure (exit 3).
    let untrusted = cli(false).await.unwrap();
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("--tls-ca"),
        "the hint names the flag: {stderr}"
    );
    // Plain text to the TLS listener: the hint says to use https://.
    let port = server
        .grpc_url
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let plain = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
            .args(["customer", "list", "--server", &format!("127.0.0.1:{port}")])
            .args(["--token", ADMIN_TOKEN])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert_eq!(plain.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("https://"), "the hint names TLS: {stderr}");
    server.stop().await.unwrap();
}

/// Whether the PostgreSQL server of `DATABASE_URL` has SSL on; `None` (with the reason printed)
/// when the test cannot run.
async fn postgres_with_ssl() -> Option<String> {
    use sqlx::Connection as _;
    let Some(url) = common::postgres_url() else {
        eprintln!("skipped: DATABASE_URL is not set, so PostgreSQL over TLS was not tried");
        return None;
    };
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    if ssl != "on" {
        eprintln!("skipped: the PostgreSQL server at DATABASE_URL has ssl = {ssl}");
        return None;
    }
    Some(url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_use_tls_with_sslmode_require() {
    use sqlx::Connection as _;
    let Some(admin) = postgres_with_ssl().await else {
        return;
    };
    let db = TestDb::new(Backend::Postgres).await;
    let name = reqwest::Url::parse(&db.url).unwrap().path()[1..].to_owned();
    let mut cfg = test_config(&db);
    cfg.database_url = Some(format!("{}?sslmode=require", db.url));
    let server = TestServer::start(cfg).await;
    common::add_customer(&server.grpc_url, "acme", "http://127.0.0.1:9/hook").await;

    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let (encrypted, plain): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1",
    )
    .bind(&name)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(encrypted > 0, "floodgate's connections to {name}");
    assert_eq!(plain, 0, "no plain-text connection to {name}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_refuses_a_server_certificate_from_another_ca() {
    if postgres_with_ssl().await.is_none() {
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let pki = Pki::new("not the database's CA");
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        db.url,
        pki.path("ca.pem").display()
    );
    let refused = floodgate::store::Store::connect(&url, &Default::default()).await;
    let err = refused
        .expect_err("verify-full against the wrong CA must fail")
        .to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

/// A redis-server of this test's own that speaks TLS only (its plain port is off), with a
/// certificate from the test CA; killed when dropped.
struct RedisTls {
    child: std::process::Child,
    port: u16,
}

impl RedisTls {
    /// `None`, with the reason printed, when redis-server is not installed or cannot do TLS.
    async fn start(pki: &Pki) -> Option<Self> {
        pki.write_server(3, &[]);
        let port = common::process::free_addr().port();
        let path = |name: &str| pki.path(name).display().to_string();
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &path("server.pem")])
            .args(["--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.pem")])
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", &pki.dir.path().display().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let mut redis = match child {
            Ok(child) => Self { child, port },
            Err(err) => {
                eprintln!(
                    "skipped: cannot run redis-server ({err}), so Redis over TLS was not tried"
                );
                return None;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if redis.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                eprintln!("skipped: redis-server did not start with TLS on port {port}");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(redis)
    }
}

impl Drop for RedisTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `floodgate serve` as a child process with `--redis-url`, trusting the CA in `ca_file` (through
/// `SSL_CERT_FILE`, as an operator with a private CA would). `Ok` once ready, `Err` with its
/// output when it exited.
async fn serve_with_redis(db: &TestDb, redis_url: &str, ca_file: &Path) -> Result<(), String> {
    let (grpc, http) = (common::process::free_addr(), common::process::free_addr());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .arg("serve")
        .args(["--grpc-addr", &grpc.to_string()])
        .args(["--http-addr", &http.to_string()])
        .args(["--data-dir", &db.dir.path().display().to_string()])
        .args(["--database-url", &db.url])
        .args(["--admin-token", ADMIN_TOKEN])
        .args(["--redis-url", redis_url])
        .env("SSL_CERT_FILE", ca_file)
        .env_remove("SSL_CERT_DIR")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read as _;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            break Err(format!("{status}: {stderr}"));
        }
        let ready = client.get(format!("http://{http}/readyz")).send().await;
        if ready.is_ok_and(|answer| answer.status().is_success()) {
            break Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "floodgate neither became ready nor exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_rediss_url() {
    let pki = Pki::new("floodgate test CA");
    let Some(redis) = RedisTls::start(&pki).await else {
        return;
    };
    let url = format!("rediss://localhost:{}", redis.port);
    let db = TestDb::new(Backend::Sqlite).await;
    // The plain port is off, so starting at all means the connection is TLS.
    serve_with_redis(&db, &url, &pki.path("ca.pem"))
        .await
        .unwrap();
    // A Redis whose certificate does not chain to a trusted CA is refused: no start.
    let stranger = Pki::new("another CA");
    let refused = serve_with_redis(&db, &url, &stranger.path("ca.pem")).await;
    assert!(
        refused.is_err(),
        "an untrusted Redis certificate must stop the start"
    );
}
