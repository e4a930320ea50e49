//! The properties every provider answer must keep, whatever the far end sends: classifying never
//! panics; 2xx is a success; 408, 429 and 5xx are retried (429 and 503 as overload, unless FCM's
//! body names its own code); a 4xx is permanent unless the provider documents it as worth a
//! retry; the reason kept for `last_error` is short and printable; and any `Retry-After` honoured
//! passes through unchanged. (That the retry policy then bounds it by its budget, never
//! overflowing the due time, is the dispatcher's property: `dispatch::retry` checks it for
//! every `Retry-After` a sink can pass on.)
//!
//! Compiled for `cargo test` (proptest drives [`check`] below) and for cargo-fuzz (the
//! `provider_answer` target in `fuzz/` drives it with libFuzzer), so both check the same thing;
//! absent from ordinary builds.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use super::answer::{self, REASON_LIMIT};
use super::{RetryCause, SinkError, apns, email, fcm, sms, webhook};

/// The longest reason any sink builds: its own words, the status line, and at most two pieces
/// of the provider's text of [`REASON_LIMIT`] characters each.
const REASON_BOUND: usize = 2 * REASON_LIMIT + 100;

/// Body words that make a 4xx retryable by a provider's documented error code: FCM's overload
/// and internal codes, Twilio's 20429 and 30001, APNs's stale provider token.
const RETRY_MARKERS: [&str; 7] = [
    "RESOURCE_EXHAUSTED",
    "QUOTA_EXCEEDED",
    "UNAVAILABLE",
    "INTERNAL",
    "20429",
    "30001",
    "ExpiredProviderToken",
];

/// Classifies `status` (any number; HTTP sinks see only 100..=999), a raw `Retry-After` header
/// value and a body (any bytes, read as the sinks read them) as each provider's answer, and the
/// status as an SMTP reply code, panicking if any property above fails.
pub fn check(status: u16, retry_after: &[u8], body: &[u8]) {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(retry_after) {
        headers.insert(RETRY_AFTER, value);
    }
    let retry_after = answer::retry_after(&headers);
    let text = String::from_utf8_lossy(body).trim().to_owned();
    email_reply(status, &text);
    let Ok(code) = StatusCode::from_u16(status) else {
        return;
    };
    let marked = RETRY_MARKERS.iter().any(|m| text.contains(m));
    let fcm = fcm::classify(&fcm::Answer {
        status: code,
        retry_after,
        body: text.clone(),
    });
    http_answer("FCM", code, retry_after, fcm, marked || status == 401);
    let apns = apns::classify(&apns::Answer::read(code, retry_after, text.clone()));
    http_answer("APNs", code, retry_after, apns, marked);
    let sms = sms::classify(code, retry_after, &text);
    http_answer("SMS", code, retry_after, sms, marked);
    let webhook = webhook::classify_status(code, retry_after);
    http_answer("webhook", code, retry_after, webhook, false);
}

/// One HTTP provider's classification of `status`. `may_retry_4xx`: the answer carries what the
/// provider documents as a retryable 4xx, so a 4xx need not be permanent.
fn http_answer(
    sink: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    result: Result<(), SinkError>,
    may_retry_4xx: bool,
) {
    let code = status.as_u16();
    if status.is_success() {
        assert_eq!(result, Ok(()), "{sink}: {code} is a success");
        return;
    }
    let Err(error) = result else {
        panic!("{sink}: {code} is not a success");
    };
    kept_reason(sink, &error);
    let must_retry = code == 408 || code == 429 || status.is_server_error();
    let permanent_4xx = status.is_client_error() && !must_retry && !may_retry_4xx;
    match error {
        SinkError::Retryable {
            cause,
            retry_after: kept,
            ..
        } => {
            assert!(!permanent_4xx, "{sink}: {code} is permanent");
            assert_eq!(kept, retry_after, "{sink}: Retry-After passes through");
            // FCM's body may name an INTERNAL error on any status, which it retries as one.
            if (code == 429 || code == 503) && sink != "FCM" {
                assert_eq!(cause, RetryCause::Overload, "{sink}: {code} is overload");
            }
        }
        SinkError::Permanent { .. } => assert!(!must_retry, "{sink}: {code} must be retried"),
    }
}

/// The reason a failure keeps is short, and printable ASCII only.
fn kept_reason(sink: &str, error: &SinkError) {
    let reason = error.to_string();
    assert!(
        reason.len() <= REASON_BOUND,
        "{sink}: reason too long: {reason:?}"
    );
    assert!(
        reason.chars().all(|c| c == ' ' || c.is_ascii_graphic()),
        "{sink}: reason not printable: {reason:?}"
    );
}

/// SMTP reply codes: 4xx is retried (421 and 452 as overload), any other reply is permanent,
/// and no reply at all is retried as a timeout or a connection failure. SMTP has no
/// `Retry-After`.
fn email_reply(code: u16, text: &str) {
    let answered = email::classify(Some(code), false, text.to_owned());
    kept_reason("SMTP", &answered);
    match (code, answered) {
        (
            400..=499,
            SinkError::Retryable {
                cause, retry_after, ..
            },
        ) => {
            assert_eq!(retry_after, None);
            if code == 421 || code == 452 {
                assert_eq!(cause, RetryCause::Overload, "SMTP {code} is overload");
            }
        }
        (400..=499, other) => panic!("SMTP {code} must be retried, got {other:?}"),
        (_, SinkError::Permanent { .. }) => {}
        (_, other) => panic!("SMTP {code} must be permanent, got {other:?}"),
    }
    for timed_out in [false, true] {
        let silent = email::classify(None, timed_out, text.to_owned());
        kept_reason("SMTP", &silent);
        assert!(matches!(silent, SinkError::Retryable { .. }));
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// Status numbers around every class edge, and anything at all.
    fn status() -> impl Strategy<Value = u16> {
        prop_oneof![
            prop::sample::select(vec![
                200, 201, 204, 299, 301, 400, 401, 403, 404, 408, 410, 421, 429, 450, 452, 499,
                500, 502, 503, 550, 599, 600, 999,
            ]),
            100..1000u16,
            any::<u16>(),
        ]
    }

    /// `Retry-After` values: seconds (up to past `u64::MAX`), HTTP dates (past, near, year
    /// 9999), and arbitrary bytes.
    fn retry_after() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<u64>().prop_map(|s| s.to_string().into_bytes()),
            (0..100_000u64).prop_map(|s| s.to_string().into_bytes()),
            Just(b"18446744073709551616".to_vec()),
            Just(b"99999999999999999999999999".to_vec()),
            Just(b"Sun, 06 Nov 1994 08:49:37 GMT".to_vec()),
            Just(b"Fri, 31 Dec 9999 23:59:59 GMT".to_vec()),
            Just(b"-1".to_vec()),
            vec(any::<u8>(), 0..40),
        ]
    }

    /// Bodies: each provider's JSON error shapes with any code and message, provider codes near
    /// the documented ones, invalid UTF-8, and huge bodies.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let word = prop_oneof![
            prop::sample::select(RETRY_MARKERS.to_vec()).prop_map(str::to_owned),
            Just("UNREGISTERED".to_owned()),
            Just("BadDeviceToken".to_owned()),
            ".{0,300}",
        ];
        prop_oneof![
            (word.clone(), word.clone()).prop_map(|(code, message)| {
                serde_json::json!({"error": {"status": code, "message": message,
                    "details": [{"errorCode": code}]}})
                .to_string()
                .into_bytes()
            }),
            word.clone()
                .prop_map(|reason| serde_json::json!({ "reason": reason })
                    .to_string()
                    .into_bytes()),
            (any::<u64>(), word).prop_map(|(code, message)| {
                serde_json::json!({"code": code, "message": message})
                    .to_string()
                    .into_bytes()
            }),
            vec(any::<u8>(), 0..200),
            (any::<u8>(), 0..1usize << 20).prop_map(|(byte, len)| vec![byte; len]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn provider_answers_are_classified_within_bounds(
            status in status(),
            retry_after in retry_after(),
            body in body(),
        ) {
            check(status, &retry_after, &body);
        }
    }
}
