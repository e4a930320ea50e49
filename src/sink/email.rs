//! E-mail over SMTP (lettre): one pooled transport per customer credential, one message per
//! notification, its `Message-ID` naming the notification.
//!
//! SMTP reply classes are mapped here: 4xx is transient (retried; 421 "closing, too busy" and 452
//! "insufficient storage / too many recipients" count as overload), 5xx is permanent (550 no
//! such mailbox), and a connection that fails or times out is retried.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

use super::payload::{ChannelPayload, EmailPayload};
use super::{RetryCause, SinkError};
use crate::model::{EmailSettings, EmailTls};
use crate::store::Claimed;

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Delivers e-mail.
#[derive(Debug)]
pub struct EmailSink {
    /// Limit for one SMTP command or connection.
    timeout: Duration,
    /// Per customer: the settings a transport (and its connection pool) was built for. A changed
    /// setting replaces it. std Mutex: never held across an `.await`.
    transports: Mutex<HashMap<String, (EmailSettings, Transport)>>,
}

impl EmailSink {
    /// `timeout` bounds each SMTP command, as the webhook timeout bounds an HTTP attempt.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            transports: Mutex::new(HashMap::new()),
        }
    }

    /// Makes one delivery attempt of `notification` (recipient: an e-mail address).
    pub async fn deliver(
        &self,
        customer_id: &str,
        settings: &EmailSettings,
        notification: &Claimed,
    ) -> Result<(), SinkError> {
        let message =
            message(settings, notification).map_err(|reason| SinkError::Permanent { reason })?;
        let transport = self.transport(customer_id, settings)?;
        match transport.send(message).await {
            Ok(_) => Ok(()),
            Err(err) => Err(classify(
                err.status().map(u16::from),
                err.is_timeout(),
                err.to_string(),
            )),
        }
    }

    /// The customer's pooled transport, built on first use or when its settings changed.
    fn transport(
        &self,
        customer_id: &str,
        settings: &EmailSettings,
    ) -> Result<Transport, SinkError> {
        let mut transports = self.transports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((built_for, transport)) = transports.get(customer_id)
            && built_for == settings
        {
            return Ok(transport.clone());
        }
        let transport = build(settings, self.timeout)?;
        transports.insert(
            customer_id.to_owned(),
            (settings.clone(), transport.clone()),
        );
        Ok(transport)
    }
}

fn build(settings: &EmailSettings, timeout: Duration) -> Result<Transport, SinkError> {
    let host = settings.smtp_host.as_str();
    let builder = match settings.tls {
        EmailTls::None => Ok(Transport::builder_dangerous(host)),
        EmailTls::StartTls => Transport::starttls_relay(host),
        EmailTls::Tls => Transport::relay(host),
    }
    .map_err(|e| SinkError::Permanent {
        reason: format!("invalid SMTP settings: {e}"),
    })?;
    let mut builder = builder.port(settings.smtp_port).timeout(Some(timeout));
    if !settings.username.is_empty() {
        builder = builder.credentials(Credentials::new(
            settings.username.clone(),
            settings.password.clone(),
        ));
    }
    Ok(builder.build())
}

/// The message for one notification. Errors are permanent (a bad address or payload).
fn message(settings: &EmailSettings, notification: &Claimed) -> Result<Message, String> {
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
        .message_id(Some(format!("<{}@floodgate>", notification.id)));
    match payload.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(payload.body, html)),
        None => builder.header(ContentType::TEXT_PLAIN).body(payload.body),
    }
    .map_err(|e| format!("cannot build the message: {e}"))
}

/// An SMTP failure as the retry policy needs it: by reply code when the server answered, else a
/// timeout or connection failure.
fn classify(code: Option<u16>, timed_out: bool, text: String) -> SinkError {
    let reason = format!("SMTP: {text}");
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
