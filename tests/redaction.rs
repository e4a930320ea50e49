//! No secret reaches the logs: the real binary runs a full flow (a webhook, an SMS and an e-mail
//! delivered, with every token in use) at RUST_LOG=debug, and its whole output is searched for
//! every secret it was given or generated.

mod common;

use std::time::Duration;

use common::fakes::sms::{self as sms_fake, SmsFake};
use common::fakes::smtp::{self as smtp_fake, SmtpFake};
use common::process::Floodgate;
use common::{ADMIN_TOKEN, Backend, Receiver, SUBMIT_TOKEN, TestDb, connect};
use floodgate::api::proto::customers_client::CustomersClient;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use floodgate::api::proto::tokens_client::TokensClient;
use floodgate::api::proto::{self, Channel, State};

const METRICS_TOKEN: &str = "metrics-token-for-the-log-test";

fn request(channel: Channel, recipient: &str, key: &str, payload: &str) -> proto::SubmitRequest {
    proto::SubmitRequest {
        customer_id: "acme".into(),
        idempotency_key: key.into(),
        recipient: recipient.into(),
        lane: proto::Lane::Transactional as i32,
        payload: payload.as_bytes().to_vec(),
        channel: channel as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_debug_logs() {
    let db = TestDb::new(Backend::Sqlite).await;
    let log_path = db.dir.path().join("floodgate.log");
    let metrics_file = db.dir.path().join("metrics-token");
    std::fs::write(&metrics_file, METRICS_TOKEN).unwrap();
    let mut process = Floodgate::start_logging(
        &db,
        &[
            "--submit-token",
            SUBMIT_TOKEN,
            "--metrics-token-file",
            &metrics_file.display().to_string(),
            "--allow-plaintext-smtp-auth",
        ],
        &log_path,
    )
    .await;
    let (url, http) = (process.url(), process.http);
    let receiver = Receiver::start().await;
    let (sms, smtp) = (SmsFake::start().await, SmtpFake::start().await);
    let customer = proto::Customer {
        id: "acme".into(),
        webhook_url: receiver.url.clone(),
        sms: Some(proto::SmsSettings {
            base_url: sms.url.clone(),
            account_sid: sms_fake::ACCOUNT_SID.into(),
            auth_token: sms_fake::AUTH_TOKEN.into(),
            from: sms_fake::FROM.into(),
        }),
        email: Some(proto::EmailSettings {
            smtp_host: "127.0.0.1".into(),
            smtp_port: u32::from(smtp.port),
            username: smtp_fake::USERNAME.into(),
            password: smtp_fake::PASSWORD.into(),
            from: smtp_fake::FROM.into(),
            tls: proto::EmailTls::None as i32,
        }),
        ..Default::default()
    };
    let saved = CustomersClient::new(connect(&url, Some(ADMIN_TOKEN)).await)
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(customer),
        })
        .await
        .unwrap()
        .into_inner();
    // A scoped token, created and used.
    let scoped = TokensClient::new(connect(&url, Some(ADMIN_TOKEN)).await)
        .create_token(proto::CreateTokenRequest {
            name: "acme-svc".into(),
            customer_ids: vec!["acme".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    DispatcherClient::new(connect(&url, Some(&scoped)).await)
        .submit(request(Channel::Webhook, "user-2", "k4", "{}"))
        .await
        .unwrap();
    let mut client = DispatcherClient::new(connect(&url, Some(SUBMIT_TOKEN)).await);
    let mut ids = Vec::new();
    for request in [
        request(Channel::Webhook, "user-1", "k1", r#"{"a":1}"#),
        request(Channel::Sms, "+14155550100", "k2", r#"{"body":"code 1"}"#),
        request(
            Channel::Email,
            "a@example.com",
            "k3",
            r#"{"subject":"s","body":"b"}"#,
        ),
    ] {
        ids.push(
            client
                .submit(request)
                .await
                .unwrap()
                .into_inner()
                .notification_id,
        );
    }
    for id in &ids {
        common::wait_for_state(&mut client, id, State::Delivered, Duration::from_secs(15)).await;
    }
    let metrics = reqwest::Client::new()
        .get(format!("http://{http}/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let (status, _) = process.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status:?}");

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("DEBUG"), "the log ran at debug level:\n{log}");
    assert!(
        log.contains("customer saved"),
        "the log covers the flow:\n{log}"
    );
    assert!(
        saved.signing_secret.starts_with("whsec_"),
        "a new customer's answer shows it"
    );
    let signing_key = saved.signing_secret.trim_start_matches("whsec_");
    for (what, secret) in [
        ("signing secret", saved.signing_secret.as_str()),
        ("signing key", signing_key),
        ("admin token", ADMIN_TOKEN),
        ("submit token", SUBMIT_TOKEN),
        ("metrics token", METRICS_TOKEN),
        ("scoped token", scoped.as_str()),
        ("scoped token's secret", scoped.trim_start_matches("fgt_")),
        ("SMS auth token", sms_fake::AUTH_TOKEN),
        ("SMTP password", smtp_fake::PASSWORD),
    ] {
        assert!(!log.contains(secret), "the {what} appears in the log");
    }
}

/// `Debug` of every type holding a secret shows `<redacted>` instead.
#[test]
fn secret_types_redact_their_debug() {
    use floodgate::model::{
        ChannelSettings, Customer, EmailSettings, EmailTls, PreviousSecret, SmsSettings,
    };
    let customer = Customer {
        id: "acme".into(),
        webhook_url: "https://hooks.example.com".into(),
        signing_secret: "whsec_c2VjcmV0".into(),
        previous_secret: Some(PreviousSecret {
            secret: "whsec_b2xkLXNlY3JldA==".into(),
            until: 1,
        }),
        max_rate_per_sec: 0,
        paused: false,
        start_tier: None,
        channels: ChannelSettings {
            email: Some(EmailSettings {
                smtp_host: "smtp.example.com".into(),
                smtp_port: 587,
                username: "u".into(),
                password: "smtp-pass".into(),
                from: "a@example.com".into(),
                tls: EmailTls::StartTls,
            }),
            sms: Some(SmsSettings {
                base_url: "https://api.twilio.com".into(),
                account_sid: "AC1".into(),
                auth_token: "sms-tok".into(),
                from: "+1".into(),
            }),
            ..Default::default()
        },
    };
    let shown = format!("{customer:?}");
    for secret in ["c2VjcmV0", "b2xkLXNlY3JldA", "smtp-pass", "sms-tok"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("<redacted>"));
    let tokens = floodgate::api::Tokens::new("adm-1", Some("sub-1")).with_metrics("met-1");
    let shown = format!("{tokens:?}");
    assert!(!shown.contains("adm-1") && !shown.contains("sub-1") && !shown.contains("met-1"));
    let token = floodgate::scoped_tokens::generate();
    let created = floodgate::scoped_tokens::NewToken {
        record: floodgate::scoped_tokens::TokenRecord {
            name: "acme-svc".into(),
            hash: floodgate::scoped_tokens::digest(&token).unwrap(),
            customer_ids: vec!["acme".into()],
            created_at: 0,
            last_used_at: None,
        },
        token: token.clone().into(),
    };
    let shown = format!("{created:?}");
    assert!(
        !shown.contains(&token) && shown.contains("acme-svc"),
        "{shown}"
    );
    let mut cfg = floodgate::ServeConfig::defaults();
    cfg.admin_token = Some("adm-2".into());
    assert!(!format!("{cfg:?}").contains("adm-2"));
}
