//! The `--server` address. People copy what `floodgate serve` prints (`127.0.0.1:50051`, the
//! same form as `--grpc-addr`) as often as a URL, so both are accepted.

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
    fn other_schemes_and_garbage_are_usage_errors() {
        for bad in ["ftp://host:1", "http://", "not an address", "http://a b:1"] {
            let err = server_url(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }
}
