//! Reading HTTP answers, shared by every HTTP sink (webhook, FCM, APNs, SMS): transport errors,
//! `Retry-After`, bounded bodies, and the classes every provider shares.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use http_body_util::BodyExt as _;

use super::{RetryCause, SinkError};

/// How much of any response body is read (and then discarded) so the connection can be reused.
const DRAIN_LIMIT: usize = 64 * 1024;

/// How many characters of a far end's own words (a provider's error message) `last_error` keeps.
pub(crate) const REASON_LIMIT: usize = 100;

/// A request that got no HTTP answer, classified: timeouts and connection errors are worth
/// retrying; a request that could not even be built, or whose target the outbound policy
/// refused, is not. `what` names the far end in reasons.
pub(crate) fn transport_error(what: &str, err: &reqwest::Error) -> SinkError {
    if err.is_timeout() && super::target_policy::refusal_in(err).is_none() {
        return SinkError::Retryable {
            reason: format!("timed out waiting for {what}"),
            cause: RetryCause::Timeout,
            retry_after: None,
        };
    }
    if err.is_builder() {
        return SinkError::Permanent {
            reason: format!("invalid request to {what}: {}", root_cause(err)),
        };
    }
    unreachable(what, err.is_connect(), err)
}

/// A request that got no answer from a far end it never reached (`connecting`) or that dropped
/// it on the way: permanent if the outbound policy refused the target, else retryable.
pub(crate) fn unreachable(
    what: &str,
    connecting: bool,
    err: &(dyn std::error::Error + 'static),
) -> SinkError {
    if let Some(refused) = super::target_policy::refusal_in(err) {
        return SinkError::Permanent {
            reason: format!("{what}: {refused}"),
        };
    }
    let reason = if connecting {
        format!("cannot connect to {what}: {}", root_cause(err))
    } else {
        format!("request to {what} failed: {}", root_cause(err))
    };
    SinkError::Retryable {
        reason,
        cause: RetryCause::Connection,
        retry_after: None,
    }
}

/// The innermost error message: reqwest's own text ("error sending request") says little.
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The retryable class every HTTP downstream shares: 429 and 503 mean overload, 408 a timeout,
/// other 5xx a server error. `None` for anything else (the caller decides: usually permanent).
pub(crate) fn retry_cause(status: StatusCode) -> Option<RetryCause> {
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            Some(RetryCause::Overload)
        }
        StatusCode::REQUEST_TIMEOUT => Some(RetryCause::Timeout),
        s if s.is_server_error() => Some(RetryCause::ServerError),
        _ => None,
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Reads up to [`DRAIN_LIMIT`] bytes of the body (so the connection returns to the pool) and
/// keeps the first `keep` bytes, as text, for classifying and for error messages.
pub(crate) async fn read_bounded(response: reqwest::Response, keep: usize) -> String {
    read_body(hyper::Response::from(response).into_body(), keep).await
}

/// [`read_bounded`] for any HTTP body: the provider sinks' (reqwest) and the webhook's (hyper).
pub(crate) async fn read_body<B>(mut body: B, keep: usize) -> String
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Unpin,
{
    let mut kept = Vec::new();
    let mut read = 0;
    while let Some(Ok(frame)) = body.frame().await {
        let Some(chunk) = frame.data_ref() else {
            continue;
        };
        if kept.len() < keep {
            kept.extend_from_slice(&chunk[..chunk.len().min(keep - kept.len())]);
        }
        read += chunk.len();
        if read >= DRAIN_LIMIT {
            break;
        }
    }
    String::from_utf8_lossy(&kept).trim().to_owned()
}

/// A far end's own words made fit for `last_error`: printable ASCII only (anything else becomes
/// `?`, so no control characters or binary reach a client or a terminal), whitespace collapsed,
/// at most [`REASON_LIMIT`] characters.
pub(crate) fn sanitize(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(
            word.chars()
                .map(|c| if c.is_ascii_graphic() { c } else { '?' }),
        );
        if out.len() >= REASON_LIMIT {
            break;
        }
    }
    out.truncate(REASON_LIMIT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
    }

    #[test]
    fn shared_classes() {
        let cause = |code| retry_cause(StatusCode::from_u16(code).unwrap());
        assert_eq!(cause(429), Some(RetryCause::Overload));
        assert_eq!(cause(503), Some(RetryCause::Overload));
        assert_eq!(cause(408), Some(RetryCause::Timeout));
        assert_eq!(cause(500), Some(RetryCause::ServerError));
        assert_eq!(cause(400), None);
    }

    #[test]
    fn sanitize_keeps_short_printable_text() {
        assert_eq!(sanitize("héllo\n\tworld\u{7}"), "h?llo world?");
        assert_eq!(sanitize(&"x".repeat(500)).len(), REASON_LIMIT);
        assert_eq!(sanitize(""), "");
    }
}
