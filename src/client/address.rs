//! The `--server` address. People copy what `floodgate serve` prints (`127.0.0.1:50051`, the
//! same form as `--grpc-addr`) as often as a URL, so both are accepted.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::error::CliError;

/// The URL to dial for `--server`: `host:port` means plain `http://host:port`; a URL must be
/// `http://` or `https://` with a host.
pub(super) fn server_url(server: &str) -> Result<String, CliError> {
    let server = server.trim();
    let url = match server.split_once("://") {
        None => format!("http://{server}"),
        Some(("http" | "https", _)) => server.to_owned(),
        Some((scheme, _)) => {
            return Err(bad_address(
                server,
                &format!("the scheme {scheme}:// is not http:// or https://"),
            ));
        }
    };
    let uri: tonic::transport::Uri = url
        .parse()
        .map_err(|err| bad_address(server, &format!("{err}")))?;
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(url),
        _ => Err(bad_address(server, "it has no host")),
    }
}

/// TLS for an `https://` URL: the server's certificate must chain to `ca` (else to the public web
/// roots), and with `cert` and `key` the client proves who it is (mTLS). `None` for `http://`,
/// where TLS flags have nothing to do.
pub(super) fn client_tls(
    url: &str,
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<ClientTlsConfig>, CliError> {
    if !url.starts_with("https://") {
        return Ok(None);
    }
    let read = |flag: &str, path: &Path| {
        std::fs::read(path).map_err(|err| CliError::Usage {
            message: format!("cannot read {flag} {}: {err}", path.display()),
            hint: format!("{flag} names a PEM file floodgate can read."),
        })
    };
    let mut tls = ClientTlsConfig::new();
    tls = match ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?)),
        None => tls.with_webpki_roots(),
    };
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let identity = Identity::from_pem(
                read("--tls-client-cert", cert)?,
                read("--tls-client-key", key)?,
            );
            tls = tls.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(CliError::Usage {
                message: "--tls-client-cert and --tls-client-key go together".into(),
                hint: "give both (the certificate and its key), or neither.".into(),
            });
        }
    }
    Ok(Some(tls))
}

fn bad_address(server: &str, why: &str) -> CliError {
    CliError::Usage {
        message: format!("--server {server:?} is not an address: {why}"),
        hint: "give HOST:PORT (such as 127.0.0.1:50051) or a URL (such as http://127.0.0.1:50051)."
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_urls_are_accepted() {
        assert_eq!(
            server_url("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            server_url("http://localhost:50051").unwrap(),
            "http://localhost:50051"
        );
        assert_eq!(
            server_url("https://floodgate.internal").unwrap(),
            "https://floodgate.internal"
        );
    }

    #[test]
    fn tls_only_for_https_and_client_identity_needs_both_files() {
        assert!(
            client_tls("http://127.0.0.1:1", None, None, None)
                .unwrap()
                .is_none()
        );
        assert!(
            client_tls("https://h:1", None, None, None)
                .unwrap()
                .is_some()
        );
        let half = client_tls("https://h:1", None, Some(Path::new("c.pem")), None);
        assert_eq!(half.unwrap_err().exit_code(), 2);
        let missing = client_tls(
            "https://h:1",
            Some(Path::new("/nonexistent/ca.pem")),
            None,
            None,
        );
        assert_eq!(missing.unwrap_err().exit_code(), 2);
    }

    #[test]
    fn other_schemes_and_garbage_are_usage_errors() {
        for bad in ["ftp://host:1", "http://", "not an address", "http://a b:1"] {
            let err = server_url(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }
}
