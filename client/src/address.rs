//! Server addresses. People copy what `floodgate serve` prints (`127.0.0.1:50051`, the same form
//! as its `--grpc-addr`) as often as a URL, so both are accepted.

use crate::Error;

/// The URL to dial for `address`: `host:port` means plain `http://host:port`; a URL must be
/// `http://` or `https://` with a host.
pub(crate) fn server_url(address: &str) -> Result<String, Error> {
    let trimmed = address.trim();
    let invalid = |reason: String| Error::InvalidAddress {
        address: address.to_owned(),
        reason,
    };
    let url = match trimmed.split_once("://") {
        None => format!("http://{trimmed}"),
        Some(("http" | "https", _)) => trimmed.to_owned(),
        Some((scheme, _)) => {
            return Err(invalid(format!(
                "the scheme {scheme}:// is not http:// or https://"
            )));
        }
    };
    let uri: tonic::transport::Uri = url.parse().map_err(|err| invalid(format!("{err}")))?;
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(url),
        _ => Err(invalid("it has no host".to_owned())),
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
            server_url(" http://localhost:50051 ").unwrap(),
            "http://localhost:50051"
        );
        assert_eq!(
            server_url("https://floodgate.internal").unwrap(),
            "https://floodgate.internal"
        );
    }

    #[test]
    fn other_schemes_and_garbage_are_invalid_addresses() {
        for bad in ["ftp://host:1", "http://", "not an address", "http://a b:1"] {
            match server_url(bad) {
                Err(Error::InvalidAddress { address, .. }) => assert_eq!(address, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
