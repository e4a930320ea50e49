//! E-mail over SMTP (lettre): one pooled transport per customer credential, one message per
//! notification, its `Message-ID` naming the notification.
//!
//! SMTP reply classes are mapped here: 4xx is transient (retried; 421 "closing, too busy" and 452
//! "insufficient storage / too many recipients" count as overload), 5xx is permanent (550 no
//! such mailbox), and a connection that fails or times out is retried.
//!
//! The SMTP host is resolved here, through the outbound target policy, and the transport connects
//! to the address that passed (TLS still verifies the host name). Transports are rebuilt, and so
//! the name resolved again, every `RESOLVE_TTL`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

use super::payload::{ChannelPayload, EmailPayload};
use super::target_policy::{TargetPolicy, refusal_in};
use super::webhook::WebhookSettings;
use super::{RetryCause, SinkError, answer};
use crate::model::{Claimed, EmailSettings, EmailTls};

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// How long a transport keeps the address its host resolved to.
const RESOLVE_TTL: Duration = Duration::from_secs(60);

/// A customer's transport and what it was built from (no `Debug`: the transport holds the
/// SMTP credentials).
struct Built {
    settings: EmailSettings,
    built_at: Instant,
    transport: Transport,
}

/// Delivers e-mail. `Debug` leaves the transports (and their credentials) out.
pub struct EmailSink {
    /// Limit for one SMTP command or connection.
    timeout: Duration,
    /// Which addresses the SMTP host may resolve to.
    policy: Arc<TargetPolicy>,
    /// Whether a password may cross a plain-text connection.
    allow_plaintext_auth: bool,
    /// Per customer: the transport (and its connection pool). Changed settings or an address
    /// older than `RESOLVE_TTL` replace it. std Mutex: never held across an `.await`.
    transports: Mutex<HashMap<String, Built>>,
}

impl std::fmt::Debug for EmailSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSink")
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .field("allow_plaintext_auth", &self.allow_plaintext_auth)
            .finish_non_exhaustive()
    }
}

impl EmailSink {
    /// The webhook timeout bounds each SMTP command, as it bounds an HTTP attempt.
    pub fn new(settings: &WebhookSettings) -> Self {
        Self {
            timeout: settings.timeout,
            policy: settings.target_policy.clone(),
            allow_plaintext_auth: settings.allow_plaintext_smtp_auth,
            transports: Mutex::new(HashMap::new()),
        }
    }

    /// Makes one delivery attempt of `notification` (recipient: an e-mail address), `id` being
    /// its public id (the Message-ID's left part).
    pub async fn deliver(
        &self,
        customer_id: &str,
        settings: &EmailSettings,
        notification: &Claimed,
        id: &str,
    ) -> Result<(), SinkError> {
        let message = message(settings, notification, id)
            .map_err(|reason| SinkError::Permanent { reason })?;
        let transport = self.transport(customer_id, settings).await?;
        match transport.send(message).await {
            Ok(_) => Ok(()),
            Err(err) => Err(classify(
                err.status().map(u16::from),
                err.is_timeout(),
                err.to_string(),
            )),
        }
    }

    /// The customer's pooled transport, built on first use, when its settings changed, or when
    /// its address is older than `RESOLVE_TTL`.
    async fn transport(
        &self,
        customer_id: &str,
        settings: &EmailSettings,
    ) -> Result<Transport, SinkError> {
        if let Some(built) = self
            .transports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(customer_id)
            && built.settings == *settings
            && built.built_at.elapsed() < RESOLVE_TTL
        {
            return Ok(built.transport.clone());
        }
        if settings.tls == EmailTls::None
            && !settings.username.is_empty()
            && !self.allow_plaintext_auth
        {
            return Err(SinkError::Permanent {
                reason: "SMTP: refusing to send the password over a plain-text connection (tls NONE); use STARTTLS or TLS".into(),
            });
        }
        let address = self.resolve(settings).await?;
        let transport = build(settings, address, self.timeout)?;
        self.transports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                customer_id.to_owned(),
                Built {
                    settings: settings.clone(),
                    built_at: Instant::now(),
                    transport: transport.clone(),
                },
            );
        Ok(transport)
    }

    /// The first address of the SMTP host that the policy allows.
    async fn resolve(&self, settings: &EmailSettings) -> Result<IpAddr, SinkError> {
        let host = settings.smtp_host.as_str();
        match self.policy.resolve(host, settings.smtp_port).await {
            Ok(addrs) => addrs
                .first()
                .map(|a| a.ip())
                .ok_or_else(|| unreachable_host(format!("SMTP host {host} has no address"))),
            Err(err) => match refusal_in(&*err) {
                Some(refused) => Err(SinkError::Permanent {
                    reason: format!("SMTP: {refused}"),
                }),
                None => Err(unreachable_host(format!(
                    "cannot resolve SMTP host {host}: {err}"
                ))),
            },
        }
    }
}

/// A host that did not resolve: retried, as a connection failure is.
fn unreachable_host(reason: String) -> SinkError {
    SinkError::Retryable {
        reason,
        cause: RetryCause::Connection,
        retry_after: None,
    }
}

/// A transport connecting to `address`, the checked address of the SMTP host. TLS is set up for
/// the host's name, so certificates are verified against it.
fn build(
    settings: &EmailSettings,
    address: IpAddr,
    timeout: Duration,
) -> Result<Transport, SinkError> {
    let host = settings.smtp_host.as_str();
    let tls = |wrap: fn(TlsParameters) -> Tls| {
        TlsParameters::new(host.to_owned())
            .map(wrap)
            .map_err(|e| SinkError::Permanent {
                reason: format!("invalid SMTP settings: {e}"),
            })
    };
    let tls = match settings.tls {
        EmailTls::None => Tls::None,
        EmailTls::StartTls => tls(Tls::Required)?,
        EmailTls::Tls => tls(Tls::Wrapper)?,
    };
    let mut builder = Transport::builder_dangerous(address.to_string())
        .tls(tls)
        .port(settings.smtp_port)
        .timeout(Some(timeout));
    if !settings.username.is_empty() {
        builder = builder.credentials(Credentials::new(
            settings.username.clone(),
            settings.password.clone(),
        ));
    }
    Ok(builder.build())
}

/// The message for one notification. Errors are permanent (a bad address or payload).
fn message(settings: &EmailSettings, notification: &Claimed, id: &str) -> Result<Message, String> {
    let payload = EmailPayload::parse(&notification.payload).map_err(|e| format!("payload {e}"))?;
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|e| format!("invalid from address: {e}"))?;
    let to: Mailbox = notification
        .recipient
        .parse()
        .map_err(|e| format!("invalid recipient address: {e}"))?;
    let builder = Message::builder()
        .from(from)
        .to(to)
        .subject(payload.subject)
        // The same id on every attempt, so a receiver can drop a duplicate of a retried send.
        .message_id(Some(format!("<{id}@floodgate>")));
    match payload.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(payload.body, html)),
        None => builder.header(ContentType::TEXT_PLAIN).body(payload.body),
    }
    .map_err(|e| format!("cannot build the message: {e}"))
}

/// An SMTP failure as the retry policy needs it: by reply code when the server answered, else a
/// timeout or connection failure.
pub(super) fn classify(code: Option<u16>, timed_out: bool, text: String) -> SinkError {
    let reason = format!("SMTP: {}", answer::sanitize(&text));
    let cause = match code {
        Some(421 | 452) => RetryCause::Overload,
        Some(400..=499) => RetryCause::ServerError,
        Some(_) => return SinkError::Permanent { reason },
        None if timed_out => RetryCause::Timeout,
        None => RetryCause::Connection,
    };
    SinkError::Retryable {
        reason,
        cause,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(error: SinkError) -> Option<RetryCause> {
        match error {
            SinkError::Retryable { cause, .. } => Some(cause),
            SinkError::Permanent { .. } => None,
        }
    }

    #[test]
    fn smtp_replies_are_classified() {
        assert_eq!(
            cause(classify(Some(421), false, "busy".into())),
            Some(RetryCause::Overload)
        );
        assert_eq!(
            cause(classify(Some(452), false, "full".into())),
            Some(RetryCause::Overload)
        );
        assert_eq!(
            cause(classify(Some(450), false, "greylisted".into())),
            Some(RetryCause::ServerError)
        );
        assert_eq!(
            cause(classify(Some(451), false, "local error".into())),
            Some(RetryCause::ServerError)
        );
        assert_eq!(
            classify(Some(550), false, "no such user".into()),
            SinkError::Permanent {
                reason: "SMTP: no such user".into()
            }
        );
        assert_eq!(
            cause(classify(None, true, "timeout".into())),
            Some(RetryCause::Timeout)
        );
        assert_eq!(
            cause(classify(None, false, "refused".into())),
            Some(RetryCause::Connection)
        );
    }
}
