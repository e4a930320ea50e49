//! The push, email and SMS channels at the front door: provider settings to and from protobuf
//! (secrets write-only), and each channel's recipient and payload checks at intake.

use std::str::FromStr as _;

use serde::Deserialize;

use super::proto;
use crate::error::Error;
use crate::model::{
    ApnsSettings, Channel, ChannelSettings, Customer, EmailSettings, EmailTls, FcmSettings,
    ServiceAccount, SmsSettings,
};
use crate::sink::payload::{ChannelPayload, EmailPayload, PushPayload, SmsPayload};
use crate::sink::{apns, oauth};

const FCM_URL: &str = "https://fcm.googleapis.com";
const APNS_URL: &str = "https://api.push.apple.com";
const TWILIO_URL: &str = "https://api.twilio.com";
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The settings blocks of an `UpsertCustomer`, checked. A secret left empty stays empty here;
/// [`keep_secrets`] fills it from the stored customer and [`require_secrets`] checks the result.
pub(super) fn settings(customer: &proto::Customer) -> Result<ChannelSettings, Error> {
    Ok(ChannelSettings {
        fcm: customer.fcm.as_ref().map(fcm).transpose()?,
        apns: customer.apns.as_ref().map(apns_settings).transpose()?,
        email: customer.email.as_ref().map(email).transpose()?,
        sms: customer.sms.as_ref().map(sms).transpose()?,
    })
}

/// The Google service-account key JSON, as Google issues it (extra fields ignored).
#[derive(Deserialize)]
struct ServiceAccountJson {
    project_id: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: String,
    #[serde(default)]
    token_uri: Option<String>,
}

fn fcm(p: &proto::FcmSettings) -> Result<FcmSettings, Error> {
    let base_url = base_url("customer.fcm.base_url", &p.base_url, FCM_URL)?;
    let field = "customer.fcm.service_account_json";
    let service_account = if p.service_account_json.is_empty() {
        ServiceAccount {
            project_id: String::new(),
            client_email: String::new(),
            private_key: String::new(),
            private_key_id: String::new(),
            token_uri: String::new(),
        }
    } else {
        let json: ServiceAccountJson = serde_json::from_str(&p.service_account_json)
            .map_err(|e| Error::invalid(field, format!("not a service-account key JSON: {e}")))?;
        let token_uri = json
            .token_uri
            .unwrap_or_else(|| GOOGLE_TOKEN_URI.to_owned());
        http_url(field, &token_uri)?;
        for (name, value) in [
            ("project_id", &json.project_id),
            ("client_email", &json.client_email),
        ] {
            if value.is_empty() || value.contains('/') {
                return Err(Error::invalid(
                    field,
                    format!("{name} is empty or holds '/'"),
                ));
            }
        }
        let account = ServiceAccount {
            project_id: json.project_id,
            client_email: json.client_email,
            private_key: json.private_key,
            private_key_id: json.private_key_id,
            token_uri,
        };
        // Signing once proves the key is a usable RSA key, here rather than at the first send.
        oauth::assertion(&account).map_err(|e| Error::invalid(field, e.to_string()))?;
        account
    };
    Ok(FcmSettings {
        base_url,
        service_account,
    })
}

fn apns_settings(p: &proto::ApnsSettings) -> Result<ApnsSettings, Error> {
    let settings = ApnsSettings {
        base_url: base_url("customer.apns.base_url", &p.base_url, APNS_URL)?,
        team_id: required("customer.apns.team_id", &p.team_id)?,
        key_id: required("customer.apns.key_id", &p.key_id)?,
        private_key_pem: p.private_key_pem.clone(),
        topic: required("customer.apns.topic", &p.topic)?,
    };
    if !settings.private_key_pem.is_empty() {
        apns::provider_token(&settings)
            .map_err(|e| Error::invalid("customer.apns.private_key_pem", e.to_string()))?;
    }
    Ok(settings)
}

fn email(p: &proto::EmailSettings) -> Result<EmailSettings, Error> {
    let tls = match proto::EmailTls::try_from(p.tls) {
        Ok(proto::EmailTls::Unspecified | proto::EmailTls::Starttls) => EmailTls::StartTls,
        Ok(proto::EmailTls::None) => EmailTls::None,
        Ok(proto::EmailTls::Tls) => EmailTls::Tls,
        Err(_) => return Err(Error::invalid("customer.email.tls", "unknown TLS mode")),
    };
    let smtp_port = match p.smtp_port {
        0 => match tls {
            EmailTls::None => 25,
            EmailTls::StartTls => 587,
            EmailTls::Tls => 465,
        },
        port => u16::try_from(port)
            .map_err(|_| Error::invalid("customer.email.smtp_port", "must be at most 65535"))?,
    };
    let smtp_host = required("customer.email.smtp_host", &p.smtp_host)?;
    if smtp_host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(Error::invalid(
            "customer.email.smtp_host",
            "is not a host name",
        ));
    }
    lettre::message::Mailbox::from_str(&p.from)
        .map_err(|e| Error::invalid("customer.email.from", format!("not a mailbox: {e}")))?;
    Ok(EmailSettings {
        smtp_host,
        smtp_port,
        username: p.username.clone(),
        password: p.password.clone(),
        from: p.from.clone(),
        tls,
    })
}

fn sms(p: &proto::SmsSettings) -> Result<SmsSettings, Error> {
    let account_sid = required("customer.sms.account_sid", &p.account_sid)?;
    if !account_sid.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::invalid(
            "customer.sms.account_sid",
            "may hold only letters and digits",
        ));
    }
    Ok(SmsSettings {
        base_url: base_url("customer.sms.base_url", &p.base_url, TWILIO_URL)?,
        account_sid,
        auth_token: p.auth_token.clone(),
        from: required("customer.sms.from", &p.from)?,
    })
}

/// Fills every secret the caller left empty from `stored` (the same channel's stored settings):
/// reads never return secrets, so a read-modify-write must not erase them. A stored secret is
/// kept only while it would go to the same endpoint: a changed base URL, SMTP host, port or TLS
/// mode, or SMS account, must come with the secret again (INVALID_ARGUMENT otherwise), so an
/// edit cannot send a stored credential to a host of the editor's choosing.
pub(super) fn keep_secrets(
    settings: &mut ChannelSettings,
    stored: &ChannelSettings,
) -> Result<(), Error> {
    if let (Some(new), Some(old)) = (settings.fcm.as_mut(), stored.fcm.as_ref())
        && new.service_account.private_key.is_empty()
    {
        same_endpoint(
            "customer.fcm.service_account_json",
            "customer.fcm.base_url",
            new.base_url == old.base_url,
        )?;
        new.service_account = old.service_account.clone();
    }
    if let (Some(new), Some(old)) = (settings.apns.as_mut(), stored.apns.as_ref())
        && new.private_key_pem.is_empty()
    {
        same_endpoint(
            "customer.apns.private_key_pem",
            "customer.apns.base_url",
            new.base_url == old.base_url,
        )?;
        new.private_key_pem = old.private_key_pem.clone();
    }
    if let (Some(new), Some(old)) = (settings.email.as_mut(), stored.email.as_ref())
        && new.password.is_empty()
        && !new.username.is_empty()
        && new.username == old.username
    {
        same_endpoint(
            "customer.email.password",
            "the SMTP host, port or TLS mode",
            (&new.smtp_host, new.smtp_port, new.tls) == (&old.smtp_host, old.smtp_port, old.tls),
        )?;
        new.password = old.password.clone();
    }
    if let (Some(new), Some(old)) = (settings.sms.as_mut(), stored.sms.as_ref())
        && new.auth_token.is_empty()
    {
        same_endpoint(
            "customer.sms.auth_token",
            "customer.sms.base_url or account_sid",
            (&new.base_url, &new.account_sid) == (&old.base_url, &old.account_sid),
        )?;
        new.auth_token = old.auth_token.clone();
    }
    Ok(())
}

/// Refuses to keep a stored secret (`field`) when `endpoint` changed.
fn same_endpoint(field: &'static str, endpoint: &str, same: bool) -> Result<(), Error> {
    if same {
        return Ok(());
    }
    Err(Error::invalid(
        field,
        format!(
            "must be sent again when {endpoint} changes: a stored secret never follows a new endpoint"
        ),
    ))
}

/// Refuses SMTP authentication over a plain-text connection (the password would cross the
/// network in clear) unless the operator allowed it (`--allow-plaintext-smtp-auth`).
pub(super) fn check_plaintext_auth(settings: &ChannelSettings, allowed: bool) -> Result<(), Error> {
    match &settings.email {
        Some(email) if email.tls == EmailTls::None && !email.username.is_empty() && !allowed => {
            Err(Error::invalid(
                "customer.email.tls",
                "NONE would send the SMTP password in clear: use STARTTLS or TLS (or the operator opts in with --allow-plaintext-smtp-auth)",
            ))
        }
        _ => Ok(()),
    }
}

/// Refuses settings still missing a secret after [`keep_secrets`] (a new channel given without
/// its credential).
pub(super) fn require_secrets(settings: &ChannelSettings) -> Result<(), Error> {
    let missing = [
        (
            settings
                .fcm
                .as_ref()
                .is_some_and(|s| s.service_account.private_key.is_empty()),
            "customer.fcm.service_account_json",
        ),
        (
            settings
                .apns
                .as_ref()
                .is_some_and(|s| s.private_key_pem.is_empty()),
            "customer.apns.private_key_pem",
        ),
        (
            settings
                .email
                .as_ref()
                .is_some_and(|s| !s.username.is_empty() && s.password.is_empty()),
            "customer.email.password",
        ),
        (
            settings
                .sms
                .as_ref()
                .is_some_and(|s| s.auth_token.is_empty()),
            "customer.sms.auth_token",
        ),
    ];
    match missing.into_iter().find(|(missing, _)| *missing) {
        Some((_, field)) => Err(Error::invalid(field, "is required (nothing is stored yet)")),
        None => Ok(()),
    }
}

/// The settings as reads return them: everything but the secrets.
pub(super) fn redacted(settings: ChannelSettings) -> ChannelBlocks {
    ChannelBlocks {
        fcm: settings.fcm.map(|s| proto::FcmSettings {
            base_url: s.base_url,
            service_account_json: String::new(),
        }),
        apns: settings.apns.map(|s| proto::ApnsSettings {
            base_url: s.base_url,
            team_id: s.team_id,
            key_id: s.key_id,
            private_key_pem: String::new(),
            topic: s.topic,
        }),
        email: settings.email.map(|s| proto::EmailSettings {
            smtp_host: s.smtp_host,
            smtp_port: u32::from(s.smtp_port),
            username: s.username,
            password: String::new(),
            from: s.from,
            tls: match s.tls {
                EmailTls::None => proto::EmailTls::None,
                EmailTls::StartTls => proto::EmailTls::Starttls,
                EmailTls::Tls => proto::EmailTls::Tls,
            } as i32,
        }),
        sms: settings.sms.map(|s| proto::SmsSettings {
            base_url: s.base_url,
            account_sid: s.account_sid,
            auth_token: String::new(),
            from: s.from,
        }),
    }
}

/// The proto `Customer` fields of the channel settings.
pub(super) struct ChannelBlocks {
    pub(super) fcm: Option<proto::FcmSettings>,
    pub(super) apns: Option<proto::ApnsSettings>,
    pub(super) email: Option<proto::EmailSettings>,
    pub(super) sms: Option<proto::SmsSettings>,
}

/// Checks a submitted notification's recipient and payload against its channel (the webhook
/// takes any).
pub(super) fn check_content(
    channel: Channel,
    recipient: &str,
    payload: &[u8],
) -> Result<(), Error> {
    let payload_ok = match channel {
        Channel::Webhook => Ok(()),
        Channel::Fcm | Channel::Apns => PushPayload::parse(payload).map(drop),
        Channel::Email => EmailPayload::parse(payload).map(drop),
        Channel::Sms => SmsPayload::parse(payload).map(drop),
    };
    payload_ok.map_err(|e| {
        Error::invalid("payload", format!("{e} (the {} channel)", channel.as_str()))
    })?;
    let recipient_ok = match channel {
        Channel::Webhook | Channel::Fcm => true,
        Channel::Apns => is_device_token(recipient),
        Channel::Email => lettre::Address::from_str(recipient).is_ok(),
        Channel::Sms => is_e164(recipient),
    };
    if recipient_ok {
        return Ok(());
    }
    let wanted = match channel {
        Channel::Apns => "an APNs device token (hex)",
        Channel::Email => "an e-mail address",
        _ => "an E.164 phone number such as +14155550100",
    };
    Err(Error::invalid(
        "recipient",
        format!("must be {wanted} on the {} channel", channel.as_str()),
    ))
}

/// Refuses a channel the customer has no settings for, saying what to configure.
pub(super) fn check_configured(customer: &Customer, channel: Channel) -> Result<(), Error> {
    if customer.channels.supports(channel) {
        return Ok(());
    }
    Err(Error::invalid(
        "channel",
        format!(
            "customer {:?} has no {} settings: set Customer.{} with UpsertCustomer first",
            customer.id,
            channel.as_str(),
            channel.as_str()
        ),
    ))
}

/// `+`, a non-zero digit, then up to 14 more digits.
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// APNs device tokens are hex strings (32 bytes today; Apple says not to assume the length).
fn is_device_token(token: &str) -> bool {
    (16..=200).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_hexdigit())
}

fn required(field: &'static str, value: &str) -> Result<String, Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    Ok(value.to_owned())
}

fn base_url(field: &'static str, value: &str, default: &str) -> Result<String, Error> {
    if value.is_empty() {
        return Ok(default.to_owned());
    }
    http_url(field, value)?;
    Ok(value.trim_end_matches('/').to_owned())
}

/// Checks an http:// or https:// URL with a host.
pub(super) fn http_url(field: &'static str, value: &str) -> Result<(), Error> {
    let url =
        reqwest::Url::parse(value).map_err(|e| Error::invalid(field, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid(
            field,
            "must be an http:// or https:// URL with a host",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<(), Error>) -> &'static str {
        match result {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn recipients_are_checked_per_channel() {
        let push = br#"{"title":"t","body":"b"}"#;
        assert!(check_content(Channel::Sms, "+14155550100", br#"{"body":"b"}"#).is_ok());
        assert_eq!(
            field_of(check_content(
                Channel::Sms,
                "14155550100",
                br#"{"body":"b"}"#
            )),
            "recipient"
        );
        assert_eq!(
            field_of(check_content(Channel::Sms, "+0123", br#"{"body":"b"}"#)),
            "recipient"
        );
        assert!(
            check_content(
                Channel::Email,
                "a@example.com",
                br#"{"subject":"s","body":"b"}"#
            )
            .is_ok()
        );
        assert_eq!(
            field_of(check_content(
                Channel::Email,
                "not-an-address",
                br#"{"body":"b"}"#
            )),
            "recipient"
        );
        assert!(check_content(Channel::Apns, &"ab".repeat(32), push).is_ok());
        assert_eq!(
            field_of(check_content(Channel::Apns, "user-1", push)),
            "recipient"
        );
        assert!(check_content(Channel::Fcm, "fcm-token:1", push).is_ok());
    }

    #[test]
    fn payloads_are_checked_per_channel() {
        assert!(check_content(Channel::Webhook, "u", b"\xff").is_ok());
        assert_eq!(field_of(check_content(Channel::Fcm, "t", b"{}")), "payload");
        assert_eq!(
            field_of(check_content(Channel::Sms, "+14155550100", b"hello")),
            "payload"
        );
        assert_eq!(
            field_of(check_content(Channel::Email, "a@b.c", br#"{"body":""}"#)),
            "payload"
        );
    }

    #[test]
    fn bad_settings_name_their_field() {
        let customer = |c: proto::Customer| settings(&c).map(drop);
        let fcm = proto::Customer {
            fcm: Some(proto::FcmSettings {
                base_url: String::new(),
                service_account_json: "{\"project_id\": 1}".into(),
            }),
            ..Default::default()
        };
        assert_eq!(field_of(customer(fcm)), "customer.fcm.service_account_json");
        let apns = proto::Customer {
            apns: Some(proto::ApnsSettings {
                team_id: "T".into(),
                key_id: "K".into(),
                topic: "com.example".into(),
                private_key_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
                    .into(),
                base_url: String::new(),
            }),
            ..Default::default()
        };
        assert_eq!(field_of(customer(apns)), "customer.apns.private_key_pem");
        let email = proto::Customer {
            email: Some(proto::EmailSettings {
                smtp_host: "smtp.example.com".into(),
                from: "no mailbox".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(field_of(customer(email)), "customer.email.from");
        let sms = proto::Customer {
            sms: Some(proto::SmsSettings {
                base_url: "ftp://x".into(),
                account_sid: "AC1".into(),
                auth_token: "t".into(),
                from: "+1".into(),
            }),
            ..Default::default()
        };
        assert_eq!(field_of(customer(sms)), "customer.sms.base_url");
    }

    #[test]
    fn secrets_are_kept_and_required() {
        let stored = ChannelSettings {
            sms: Some(SmsSettings {
                base_url: TWILIO_URL.into(),
                account_sid: "AC1".into(),
                auth_token: "secret".into(),
                from: "+14155550100".into(),
            }),
            ..Default::default()
        };
        let mut new = stored.clone();
        if let Some(sms) = new.sms.as_mut() {
            sms.auth_token.clear();
        }
        assert_eq!(field_of(require_secrets(&new)), "customer.sms.auth_token");
        keep_secrets(&mut new, &stored).unwrap();
        assert_eq!(new, stored);
        assert!(require_secrets(&new).is_ok());
        assert_eq!(redacted(new.clone()).sms.unwrap().auth_token, "");

        if let Some(sms) = new.sms.as_mut() {
            sms.auth_token.clear();
            sms.base_url = "https://elsewhere.example".into();
        }
        assert_eq!(
            field_of(keep_secrets(&mut new, &stored)),
            "customer.sms.auth_token"
        );
    }

    #[test]
    fn plaintext_smtp_auth_needs_the_opt_in() {
        let mut settings = ChannelSettings {
            email: Some(EmailSettings {
                smtp_host: "smtp.example.com".into(),
                smtp_port: 25,
                username: "u".into(),
                password: "p".into(),
                from: "a@example.com".into(),
                tls: EmailTls::None,
            }),
            ..Default::default()
        };
        assert_eq!(
            field_of(check_plaintext_auth(&settings, false)),
            "customer.email.tls"
        );
        assert!(check_plaintext_auth(&settings, true).is_ok());
        if let Some(email) = settings.email.as_mut() {
            email.username.clear();
        }
        assert!(check_plaintext_auth(&settings, false).is_ok());
    }
}
