//! What `floodgate serve` tells a person at start-up: where it listens, where the dashboard is
//! and where the admin token lives; and, when a port is taken, which flag moves it. A newcomer
//! should never have to guess an address or read the source to find the token.

use std::fmt::Write as _;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::{ADMIN_TOKEN_FILE, ServeConfig};

/// The start-up lines: addresses as bound (so port 0 shows the real port).
pub(crate) fn banner(cfg: &ServeConfig, grpc: &TcpListener, http: &TcpListener) -> String {
    let grpc_addr = grpc.local_addr().unwrap_or(cfg.grpc_addr);
    let http_addr = http.local_addr().unwrap_or(cfg.http_addr);
    let token = match &cfg.admin_token {
        Some(_) => "given with --admin-token (FLOODGATE_ADMIN_TOKEN)".to_owned(),
        None => cfg.data_dir.join(ADMIN_TOKEN_FILE).display().to_string(),
    };
    // With TLS, clients must dial https:// (a bare HOST:PORT means plain text).
    let (grpc_server, scheme) = match cfg.tls_files() {
        Some(_) => (format!("https://{}", reachable(grpc_addr)), "https"),
        None => (reachable(grpc_addr).to_string(), "http"),
    };
    let mut out = String::from("floodgate is starting:\n");
    let _ = writeln!(
        out,
        "  gRPC API     {grpc_addr}  (clients: --server {grpc_server})"
    );
    let _ = writeln!(
        out,
        "  dashboard    {scheme}://{}/dashboard",
        reachable(http_addr)
    );
    let _ = write!(out, "  admin token  {token}");
    out
}

/// An address a client on this machine can dial: a wildcard bind is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let loopback = match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    }
}

/// The part of a bind error that says what to do: a taken port is moved with its flag.
pub(crate) fn bind_hint(error: &std::io::Error, flag: &str, env: &str) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "; another program uses that port: pick a free one with {flag} HOST:PORT \
             (or set {env})"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "; that address is not one of this machine's: pick another with {flag} HOST:PORT \
             (or set {env})"
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_names_the_flag_that_moves_it() {
        let taken = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let hint = bind_hint(&taken, "--http-addr", "FLOODGATE_HTTP_ADDR");
        assert!(hint.contains("--http-addr HOST:PORT"), "{hint}");
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(bind_hint(&other, "--http-addr", "FLOODGATE_HTTP_ADDR"), "");
    }

    #[test]
    fn wildcard_binds_are_shown_as_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(reachable(any).to_string(), "127.0.0.1:8080");
        let private: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        assert_eq!(reachable(private), private);
    }
}
