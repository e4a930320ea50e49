//! What a failed client command tells the person at the terminal: one or two lines (what went
//! wrong, then what to do next) and an exit code a script can branch on. Never a backtrace and
//! never the same cause twice, whatever `RUST_BACKTRACE` says.

use std::process::ExitCode;

/// Exit code of a command that failed for any reason not listed below.
pub(crate) const EXIT_OTHER: u8 = 1;
/// Exit code of a usage error: a bad flag, argument or address (clap uses 2 as well).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code when the server cannot be reached.
pub(crate) const EXIT_CONNECTION: u8 = 3;
/// Exit code when the server answered the call with an error.
pub(crate) const EXIT_SERVER: u8 = 4;

/// A client command's failure, typed so `main` can choose the exit code and the hint.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The command line was wrong in a way clap could not see (an address, a token).
    #[error("{message}")]
    Usage { message: String, hint: String },
    /// Nothing answered at the server address, or the connection broke.
    #[error("cannot reach floodgate at {server}: {reason}")]
    Connect { server: String, reason: String },
    /// The server refused or failed the call.
    #[error("{call}: {} ({code:?})", .message)]
    Server {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
}

impl CliError {
    /// The exit code that tells a script which kind of failure this was.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage { .. } => EXIT_USAGE,
            Self::Connect { .. } => EXIT_CONNECTION,
            Self::Server { .. } => EXIT_SERVER,
        }
    }

    /// What to do next, when there is something to say.
    pub(crate) fn hint(&self) -> Option<String> {
        match self {
            Self::Usage { hint, .. } => Some(hint.clone()).filter(|h| !h.is_empty()),
            // The server answered, but its certificate is not one this client trusts.
            Self::Connect { reason, .. } if reason.contains("certificate") => Some(
                "pass --tls-ca with the CA that signed the server's certificate (or set \
                 FLOODGATE_TLS_CA); the public web roots are trusted by default."
                    .into(),
            ),
            // Plain text to a TLS listener fails with no word about TLS ("operation was canceled").
            Self::Connect { server, .. } if !server.starts_with("https://") => Some(format!(
                "is `floodgate serve` running at {server}? If it listens elsewhere, pass \
                 --server HOST:PORT (or set FLOODGATE_SERVER); if it speaks TLS (--tls-cert), \
                 pass --server https://HOST:PORT."
            )),
            Self::Connect { server, .. } => Some(format!(
                "is `floodgate serve` running at {server}? If it listens elsewhere, pass \
                 --server https://HOST:PORT (or set FLOODGATE_SERVER)."
            )),
            Self::Server { code, .. } => server_hint(*code).map(str::to_owned),
        }
    }

    /// A failed call: a transport failure is a connection error, anything else the server's.
    pub(crate) fn from_status(call: &'static str, server: &str, status: &tonic::Status) -> Self {
        // A connection that failed or broke carries the transport error as its source, whatever
        // its code: UNAVAILABLE, or CANCELLED / UNKNOWN when the peer hung up during the HTTP/2
        // handshake (plain text sent to a TLS listener). The server's own answers have none.
        if is_transport_failure(status) {
            return Self::Connect {
                server: server.to_owned(),
                reason: root_cause(status),
            };
        }
        Self::Server {
            call,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

fn server_hint(code: tonic::Code) -> Option<&'static str> {
    match code {
        tonic::Code::Unauthenticated => Some(
            "pass the right token with --token (or FLOODGATE_TOKEN); the generated admin token \
             is in DATA_DIR/admin-token on the server.",
        ),
        tonic::Code::PermissionDenied => {
            Some("this call needs the admin token: pass it with --token (or FLOODGATE_TOKEN).")
        }
        tonic::Code::NotFound => Some(
            "check the id: `floodgate customer list` shows the customer systems, and \
             `floodgate inbox` a recipient's notifications.",
        ),
        tonic::Code::Unavailable => {
            Some("the server is up but cannot serve this now (see its log); try again.")
        }
        _ => None,
    }
}

/// tonic reports a connection that failed or broke with a transport error as its source; a
/// status the server sent (even UNAVAILABLE, a database down) has no source.
fn is_transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The innermost cause of a transport failure ("Connection refused (os error 111)"): the
/// layers above it only repeat that a connection failed.
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// One line from an error and its causes, each cause added only when the message above does
/// not already contain it (so "Caused by" never repeats the message).
pub(crate) fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// Prints a failed command's error to stderr and returns its exit code.
pub(crate) fn report(error: &anyhow::Error) -> ExitCode {
    match error.downcast_ref::<CliError>() {
        Some(cli) => {
            eprintln!("error: {cli}");
            if let Some(hint) = cli.hint() {
                eprintln!("  hint: {hint}");
            }
            ExitCode::from(cli.exit_code())
        }
        None => {
            eprintln!("error: {}", one_line(error.as_ref()));
            ExitCode::from(EXIT_OTHER)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: inner failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn one_line_skips_causes_the_message_already_says() {
        let inner = std::io::Error::other("inner failed");
        assert_eq!(one_line(&Outer(inner)), "outer: inner failed");
        let other = std::io::Error::other("disk full");
        assert_eq!(one_line(&Outer(other)), "outer: inner failed: disk full");
    }

    #[test]
    fn exit_codes_are_distinct_per_kind() {
        let usage = CliError::Usage {
            message: "bad".into(),
            hint: String::new(),
        };
        let connect = CliError::Connect {
            server: "x".into(),
            reason: "refused".into(),
        };
        let server = CliError::from_status("Submit", "x", &tonic::Status::not_found("no"));
        assert_eq!(
            [usage.exit_code(), connect.exit_code(), server.exit_code()],
            [2, 3, 4]
        );
        assert_eq!(usage.hint(), None);
        assert!(connect.hint().unwrap().contains("floodgate serve"));
        let untrusted = CliError::Connect {
            server: "https://x".into(),
            reason: "invalid peer certificate: UnknownIssuer".into(),
        };
        assert!(untrusted.hint().unwrap().contains("--tls-ca"));
    }
}
