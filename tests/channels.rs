//! The push, email and SMS channels end to end: real gRPC in, each provider's real wire format
//! out (to local fakes that check tokens, auth and fields), and each provider's error classes
//! mapped to retries, permanent failures and overload.

mod common;

use std::time::Duration;

use common::fakes::apns::{self as apns_fake, ApnsError, ApnsFake};
use common::fakes::fcm::{self as fcm_fake, FcmError, FcmFake};
use common::fakes::sms::{self as sms_fake, SmsError, SmsFake};
use common::fakes::smtp::{self as smtp_fake, SmtpFake, SmtpReply};
use common::{Authed, Backend, TestDb, TestServer, customer_stats, test_config, wait_for_state};
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use floodgate::api::proto::{self, Channel, Lane, State};
use serde_json::{Value, json};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(15);

/// A customer with no channel settings yet (a webhook URL is still required).
fn customer(id: &str) -> proto::Customer {
    proto::Customer {
        id: id.into(),
        webhook_url: "http://127.0.0.1:9/unused".into(),
        ..Default::default()
    }
}

async fn upsert(
    server: &TestServer,
    customer: proto::Customer,
) -> Result<proto::Customer, tonic::Status> {
    server
        .customers()
        .await
        .upsert_customer(proto::UpsertCustomerRequest {
            customer: Some(customer),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn fcm_customer(fake: &FcmFake) -> proto::Customer {
    proto::Customer {
        fcm: Some(proto::FcmSettings {
            base_url: fake.url.clone(),
            service_account_json: fake.service_account_json(),
        }),
        ..customer("acme")
    }
}

fn apns_customer(fake: &ApnsFake) -> proto::Customer {
    proto::Customer {
        apns: Some(proto::ApnsSettings {
            base_url: fake.url.clone(),
            team_id: apns_fake::TEAM_ID.into(),
            key_id: apns_fake::KEY_ID.into(),
            private_key_pem: ApnsFake::private_key_pem(),
            topic: apns_fake::TOPIC.into(),
        }),
        ..customer("acme")
    }
}

fn email_customer(fake: &SmtpFake) -> proto::Customer {
    proto::Customer {
        email: Some(proto::EmailSettings {
            smtp_host: "127.0.0.1".into(),
            smtp_port: u32::from(fake.port),
            username: smtp_fake::USERNAME.into(),
            password: smtp_fake::PASSWORD.into(),
            from: smtp_fake::FROM.into(),
            tls: proto::EmailTls::None as i32,
        }),
        ..customer("acme")
    }
}

fn sms_customer(fake: &SmsFake) -> proto::Customer {
    proto::Customer {
        sms: Some(proto::SmsSettings {
            base_url: fake.url.clone(),
            account_sid: sms_fake::ACCOUNT_SID.into(),
            auth_token: sms_fake::AUTH_TOKEN.into(),
            from: sms_fake::FROM.into(),
        }),
        ..customer("acme")
    }
}

fn request(channel: Channel, recipient: &str, key: &str, payload: &Value) -> proto::SubmitRequest {
    proto::SubmitRequest {
        customer_id: "acme".into(),
        idempotency_key: key.into(),
        recipient: recipient.into(),
        lane: Lane::Transactional as i32,
        payload: payload.to_string().into_bytes(),
        channel: channel as i32,
        ..Default::default()
    }
}

async fn submit(client: &mut DispatcherClient<Authed>, request: proto::SubmitRequest) -> String {
    client
        .submit(request)
        .await
        .unwrap()
        .into_inner()
        .notification_id
}

fn push_payload(key: &str) -> Value {
    json!({"title": "Your bill", "body": format!("Bill {key} is due"), "data": {"bill": key}})
}

/// Submits one notification per recipient (keyed `k-<recipient>`) and waits for each to reach its state.
async fn expect(
    client: &mut DispatcherClient<Authed>,
    channel: Channel,
    payload: fn(&str) -> Value,
    cases: &[(&str, State)],
) -> Vec<proto::Notification> {
    let mut ids = Vec::new();
    for (recipient, _) in cases {
        let key = format!("k-{recipient}");
        ids.push(submit(client, request(channel, recipient, &key, &payload(&key))).await);
    }
    let mut done = Vec::new();
    for (id, (_, state)) in ids.iter().zip(cases) {
        done.push(wait_for_state(client, id, *state, WAIT).await);
    }
    done
}

async fn error_rate(server: &TestServer) -> f64 {
    customer_stats(&mut server.customers().await, "acme")
        .await
        .error_rate
}

/// At least `wait` passed between the first two attempts the fake saw.
fn spaced(attempts: &[tokio::time::Instant], wait: Duration) -> bool {
    attempts.len() >= 2 && attempts[1] - attempts[0] >= wait
}

async fn fcm_delivers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = FcmFake::start().await;
    let saved = upsert(&server, fcm_customer(&fake)).await.unwrap();
    let fcm = saved.fcm.unwrap();
    assert_eq!(fcm.service_account_json, "", "secrets are write-only");
    assert_eq!(fcm.base_url, fake.url);

    let mut client = server.dispatcher().await;
    let done = expect(
        &mut client,
        Channel::Fcm,
        push_payload,
        &[
            ("fcm-token-1", State::Delivered),
            ("fcm-token-2", State::Delivered),
        ],
    )
    .await;
    let sent = fake
        .sent()
        .wait_for(WAIT, |m| m.message["token"] == "fcm-token-1")
        .await;
    assert_eq!(sent.project, fcm_fake::PROJECT);
    assert_eq!(sent.message["notification"]["title"], "Your bill");
    assert_eq!(
        sent.message["notification"]["body"],
        "Bill k-fcm-token-1 is due"
    );
    assert_eq!(sent.message["data"]["bill"], "k-fcm-token-1");
    assert_eq!(done[0].attempts, 1);
    assert_eq!(done[0].channel, Channel::Fcm as i32);
    assert_eq!(fake.token_requests(), 1, "the access token is cached");

    // A revoked token (401) is replaced once, within the same attempt.
    fake.revoke_tokens();
    let done = expect(
        &mut client,
        Channel::Fcm,
        push_payload,
        &[("fcm-token-3", State::Delivered)],
    )
    .await;
    assert_eq!(done[0].attempts, 1);
    assert_eq!(fake.token_requests(), 2);
    server.stop().await.unwrap();
}
on_both_backends!(fcm_delivers);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_errors_are_classified() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = FcmFake::start().await;
    upsert(&server, fcm_customer(&fake)).await.unwrap();
    let error = |status, code, retry_after| FcmError {
        status,
        code,
        retry_after,
    };
    fake.script()
        .answer("t-internal", [error(500, "INTERNAL", None)]);
    fake.script()
        .answer("t-unavailable", [error(503, "UNAVAILABLE", None)]);
    fake.script()
        .answer("t-gone", [error(404, "UNREGISTERED", None)]);
    fake.script()
        .answer("t-invalid", [error(400, "INVALID_ARGUMENT", None)]);
    fake.script()
        .answer("t-quota", [error(429, "QUOTA_EXCEEDED", Some(1))]);

    let mut client = server.dispatcher().await;
    let done = expect(
        &mut client,
        Channel::Fcm,
        push_payload,
        &[
            ("t-internal", State::Delivered),
            ("t-unavailable", State::Delivered),
            ("t-gone", State::Failed),
            ("t-invalid", State::Failed),
            ("t-quota", State::Delivered),
        ],
    )
    .await;
    assert_eq!(done[0].attempts, 2);
    assert_eq!(done[1].attempts, 2);
    assert!(
        done[2].last_error.contains("UNREGISTERED"),
        "{}",
        done[2].last_error
    );
    assert!(
        done[3].last_error.contains("INVALID_ARGUMENT"),
        "{}",
        done[3].last_error
    );
    assert_eq!(done[4].attempts, 2);
    assert!(
        spaced(
            &fake.script().attempts("t-quota"),
            Duration::from_millis(900)
        ),
        "Retry-After is honoured"
    );
    assert!(
        error_rate(&server).await > 0.0,
        "the controller saw the overload and errors"
    );
    server.stop().await.unwrap();
}

async fn apns_delivers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = ApnsFake::start().await;
    let saved = upsert(&server, apns_customer(&fake)).await.unwrap();
    assert_eq!(
        saved.apns.unwrap().private_key_pem,
        "",
        "secrets are write-only"
    );

    let mut client = server.dispatcher().await;
    let device = "a1".repeat(32);
    let id = submit(
        &mut client,
        request(Channel::Apns, &device, "k1", &push_payload("k1")),
    )
    .await;
    let n = wait_for_state(&mut client, &id, State::Delivered, WAIT).await;
    assert_eq!(n.attempts, 1);
    let sent = fake
        .sent()
        .wait_for(WAIT, |p| p.device_token == device)
        .await;
    assert_eq!(sent.priority, "10", "transactional goes at priority 10");
    assert_eq!(sent.body["aps"]["alert"]["title"], "Your bill");
    assert_eq!(sent.body["aps"]["alert"]["body"], "Bill k1 is due");
    assert_eq!(sent.body["bill"], "k1");

    let bulk_device = "b2".repeat(32);
    let mut bulk = request(Channel::Apns, &bulk_device, "k2", &push_payload("k2"));
    bulk.lane = Lane::Bulk as i32;
    let id = submit(&mut client, bulk).await;
    wait_for_state(&mut client, &id, State::Delivered, WAIT).await;
    let sent = fake
        .sent()
        .wait_for(WAIT, |p| p.device_token == bulk_device)
        .await;
    assert_eq!(sent.priority, "5", "bulk goes at priority 5");
    server.stop().await.unwrap();
}
on_both_backends!(apns_delivers);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_errors_are_classified() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = ApnsFake::start().await;
    upsert(&server, apns_customer(&fake)).await.unwrap();
    let device = |c: &str| c.repeat(64);
    let error = |status, reason| ApnsError { status, reason };
    fake.script()
        .answer(&device("1"), [error(429, "TooManyRequests")]);
    fake.script()
        .answer(&device("2"), [error(503, "ServiceUnavailable")]);
    fake.script()
        .answer(&device("3"), [error(410, "Unregistered")]);
    fake.script()
        .answer(&device("4"), [error(400, "BadDeviceToken")]);
    fake.script()
        .answer(&device("5"), [error(403, "ExpiredProviderToken")]);
    fake.script()
        .answer(&device("6"), [error(500, "InternalServerError")]);

    let mut client = server.dispatcher().await;
    let (d1, d2, d3, d4, d5, d6) = (
        device("1"),
        device("2"),
        device("3"),
        device("4"),
        device("5"),
        device("6"),
    );
    let done = expect(
        &mut client,
        Channel::Apns,
        push_payload,
        &[
            (&d1, State::Delivered),
            (&d2, State::Delivered),
            (&d3, State::Failed),
            (&d4, State::Failed),
            (&d5, State::Delivered),
            (&d6, State::Delivered),
        ],
    )
    .await;
    assert_eq!(done[0].attempts, 2);
    assert_eq!(done[1].attempts, 2);
    assert!(
        done[2].last_error.contains("Unregistered"),
        "{}",
        done[2].last_error
    );
    assert!(
        done[3].last_error.contains("BadDeviceToken"),
        "{}",
        done[3].last_error
    );
    assert_eq!(
        done[4].attempts, 1,
        "an expired provider token is replaced within the attempt"
    );
    assert_eq!(done[5].attempts, 2);
    assert!(
        error_rate(&server).await > 0.0,
        "the controller saw the overload and errors"
    );
    server.stop().await.unwrap();
}

fn email_payload(key: &str) -> Value {
    json!({"subject": format!("Receipt {key}"), "body": format!("Thanks for order {key}.")})
}

async fn email_delivers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = SmtpFake::start().await;
    let saved = upsert(&server, email_customer(&fake)).await.unwrap();
    let email = saved.email.unwrap();
    assert_eq!(email.password, "", "secrets are write-only");
    assert_eq!(email.username, smtp_fake::USERNAME);

    let mut client = server.dispatcher().await;
    let id = submit(
        &mut client,
        request(
            Channel::Email,
            "ada@example.com",
            "k1",
            &email_payload("k1"),
        ),
    )
    .await;
    let html = json!({"subject": "Hi", "body": "plain text", "html": "<p>rich text</p>"});
    let html_id = submit(
        &mut client,
        request(Channel::Email, "bob@example.com", "k2", &html),
    )
    .await;
    for id in [&id, &html_id] {
        let n = wait_for_state(&mut client, id, State::Delivered, WAIT).await;
        assert_eq!(n.attempts, 1);
    }
    let mail = fake
        .sent()
        .wait_for(WAIT, |m| m.to == ["ada@example.com"])
        .await;
    assert_eq!(mail.from, "no-reply@acme.example");
    assert_eq!(mail.header("Subject").as_deref(), Some("Receipt k1"));
    assert_eq!(mail.header("Message-ID"), Some(format!("<{id}@floodgate>")));
    assert!(mail.data.contains("Thanks for order k1."), "{}", mail.data);
    let rich = fake
        .sent()
        .wait_for(WAIT, |m| m.to == ["bob@example.com"])
        .await;
    assert!(rich.data.contains("multipart/alternative"), "{}", rich.data);
    assert!(rich.data.contains("<p>rich text</p>"), "{}", rich.data);

    // A read-modify-write of the customer keeps the password it was not shown.
    upsert(
        &server,
        proto::Customer {
            email: Some(email),
            ..customer("acme")
        },
    )
    .await
    .unwrap();
    let id = submit(
        &mut client,
        request(Channel::Email, "cy@example.com", "k3", &email_payload("k3")),
    )
    .await;
    wait_for_state(&mut client, &id, State::Delivered, WAIT).await;
    server.stop().await.unwrap();
}
on_both_backends!(email_delivers);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_errors_are_classified() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = SmtpFake::start().await;
    upsert(&server, email_customer(&fake)).await.unwrap();
    let reply = |code, text| SmtpReply { code, text };
    fake.script()
        .answer("busy@example.com", [reply(421, "4.7.0 too busy, closing")]);
    fake.script().answer(
        "grey@example.com",
        [reply(451, "4.7.1 greylisted, try later")],
    );
    fake.script().answer(
        "full@example.com",
        [reply(452, "4.3.1 insufficient storage")],
    );
    fake.script()
        .answer("nobody@example.com", [reply(550, "5.1.1 no such user")]);

    let mut client = server.dispatcher().await;
    let done = expect(
        &mut client,
        Channel::Email,
        email_payload,
        &[
            ("busy@example.com", State::Delivered),
            ("grey@example.com", State::Delivered),
            ("full@example.com", State::Delivered),
            ("nobody@example.com", State::Failed),
        ],
    )
    .await;
    assert_eq!(done[0].attempts, 2);
    assert_eq!(done[1].attempts, 2);
    assert_eq!(done[2].attempts, 2);
    assert!(
        done[3].last_error.contains("no such user"),
        "{}",
        done[3].last_error
    );
    assert!(
        error_rate(&server).await > 0.0,
        "the controller saw the overload and errors"
    );
    server.stop().await.unwrap();
}

fn sms_payload(key: &str) -> Value {
    json!({"body": format!("Your code is {key}")})
}

async fn sms_delivers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = SmsFake::start().await;
    let saved = upsert(&server, sms_customer(&fake)).await.unwrap();
    assert_eq!(saved.sms.unwrap().auth_token, "", "secrets are write-only");

    let mut client = server.dispatcher().await;
    let id = submit(
        &mut client,
        request(Channel::Sms, "+14155550100", "k1", &sms_payload("k1")),
    )
    .await;
    let n = wait_for_state(&mut client, &id, State::Delivered, WAIT).await;
    assert_eq!(n.attempts, 1);
    let sent = fake.sent().wait_for(WAIT, |m| m.to == "+14155550100").await;
    assert_eq!(sent.from, sms_fake::FROM);
    assert_eq!(sent.body, "Your code is k1");
    server.stop().await.unwrap();
}
on_both_backends!(sms_delivers);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_errors_are_classified() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = SmsFake::start().await;
    upsert(&server, sms_customer(&fake)).await.unwrap();
    let error = |status, code, retry_after| SmsError {
        status,
        code,
        retry_after,
    };
    fake.script()
        .answer("+14155550101", [error(429, 20429, Some(1))]);
    fake.script()
        .answer("+14155550102", [error(400, 30001, None)]);
    fake.script()
        .answer("+14155550103", [error(400, 21211, None)]);
    fake.script()
        .answer("+14155550104", [error(400, 21610, None)]);
    fake.script()
        .answer("+14155550105", [error(500, 20500, None)]);

    let mut client = server.dispatcher().await;
    let done = expect(
        &mut client,
        Channel::Sms,
        sms_payload,
        &[
            ("+14155550101", State::Delivered),
            ("+14155550102", State::Delivered),
            ("+14155550103", State::Failed),
            ("+14155550104", State::Failed),
            ("+14155550105", State::Delivered),
        ],
    )
    .await;
    assert_eq!(done[0].attempts, 2);
    assert!(
        spaced(
            &fake.script().attempts("+14155550101"),
            Duration::from_millis(900)
        ),
        "Retry-After is honoured"
    );
    assert_eq!(done[1].attempts, 2);
    assert!(
        done[2].last_error.contains("21211"),
        "{}",
        done[2].last_error
    );
    assert!(
        done[3].last_error.contains("21610"),
        "{}",
        done[3].last_error
    );
    assert_eq!(done[4].attempts, 2);
    assert!(
        error_rate(&server).await > 0.0,
        "the controller saw the overload and errors"
    );
    server.stop().await.unwrap();
}

fn invalid_field(status: tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "{field} not named in {:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_checks_channel_settings_recipient_and_payload() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = SmsFake::start().await;
    upsert(&server, customer("acme")).await.unwrap();
    let mut client = server.dispatcher().await;

    let unconfigured = client
        .submit(request(
            Channel::Sms,
            "+14155550100",
            "k1",
            &sms_payload("k1"),
        ))
        .await
        .unwrap_err();
    invalid_field(unconfigured.clone(), "channel");
    assert!(
        unconfigured.message().contains("Customer.sms"),
        "{}",
        unconfigured.message()
    );

    upsert(&server, sms_customer(&fake)).await.unwrap();
    let bad_number = client
        .submit(request(Channel::Sms, "0155", "k2", &sms_payload("k2")))
        .await
        .unwrap_err();
    invalid_field(bad_number, "recipient");
    let no_body = client
        .submit(request(
            Channel::Sms,
            "+14155550100",
            "k3",
            &json!({"text": "x"}),
        ))
        .await
        .unwrap_err();
    invalid_field(no_body, "payload");

    // Settings are checked at upsert, naming the field.
    let mut bad_key = customer("other");
    bad_key.apns = Some(proto::ApnsSettings {
        team_id: "T".into(),
        key_id: "K".into(),
        topic: "com.example".into(),
        private_key_pem: "not a pem".into(),
        base_url: String::new(),
    });
    invalid_field(
        upsert(&server, bad_key).await.unwrap_err(),
        "customer.apns.private_key_pem",
    );
    let mut bad_json = customer("other");
    bad_json.fcm = Some(proto::FcmSettings {
        base_url: String::new(),
        service_account_json: "{".into(),
    });
    invalid_field(
        upsert(&server, bad_json).await.unwrap_err(),
        "customer.fcm.service_account_json",
    );
    let mut no_secret = sms_customer(&fake);
    no_secret.id = "fresh".into();
    if let Some(sms) = no_secret.sms.as_mut() {
        sms.auth_token.clear();
    }
    invalid_field(
        upsert(&server, no_secret).await.unwrap_err(),
        "customer.sms.auth_token",
    );
    server.stop().await.unwrap();
}

/// Each provider is paced on its own: an SMS provider answering 429 with a long Retry-After
/// pauses that customer's SMS, while its webhook keeps delivering at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_slowdown_does_not_slow_the_webhook() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = SmsFake::start().await;
    let receiver = common::Receiver::start().await;
    let mut settings = sms_customer(&fake);
    settings.webhook_url = receiver.url.clone();
    upsert(&server, settings).await.unwrap();
    let overload = SmsError {
        status: 429,
        code: 20429,
        retry_after: Some(5),
    };
    fake.script().answer("+14155550199", [overload]);

    let mut client = server.dispatcher().await;
    let sms = submit(
        &mut client,
        request(Channel::Sms, "+14155550199", "s1", &sms_payload("s1")),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while fake.script().attempts("+14155550199").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SMS was never attempted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let paused_at = tokio::time::Instant::now();
    let mut webhooks = Vec::new();
    for i in 0..5 {
        let webhook = request(
            Channel::Webhook,
            "user-1",
            &format!("w{i}"),
            &json!({"n": i}),
        );
        webhooks.push(submit(&mut client, webhook).await);
    }
    receiver.wait_for(5, Duration::from_secs(3)).await;
    assert!(
        paused_at.elapsed() < Duration::from_secs(4),
        "the webhook waited for the SMS provider's Retry-After"
    );
    let n = wait_for_state(&mut client, &sms, State::Delivered, WAIT).await;
    assert_eq!(n.attempts, 2);
    assert!(spaced(
        &fake.script().attempts("+14155550199"),
        Duration::from_millis(4900)
    ));
    server.stop().await.unwrap();
}

/// A template renders into the channel's payload shape: an e-mail template's subject becomes
/// the Subject header and its body the text, with the submit's variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templated_email_is_rendered_at_send_time() {
    use floodgate::api::proto::templates_client::TemplatesClient;
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = SmtpFake::start().await;
    upsert(&server, email_customer(&fake)).await.unwrap();
    let mut templates =
        TemplatesClient::new(common::connect(&server.grpc_url, Some(common::ADMIN_TOKEN)).await);
    templates
        .upsert_template(proto::UpsertTemplateRequest {
            template: Some(proto::Template {
                customer_id: "acme".into(),
                template_id: "receipt".into(),
                contents: vec![proto::TemplateContent {
                    channel: Channel::Email as i32,
                    subject: "Receipt {{ order }}".into(),
                    body: "Thanks, {{ name }}: {{ items | length }} items.".into(),
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let variables = prost_types::Struct {
        fields: [
            ("order", prost_types::value::Kind::StringValue("A-7".into())),
            ("name", prost_types::value::Kind::StringValue("Ada".into())),
            (
                "items",
                prost_types::value::Kind::ListValue(prost_types::ListValue {
                    values: vec![prost_types::Value::default(); 3],
                }),
            ),
        ]
        .into_iter()
        .map(|(k, kind)| (k.to_owned(), prost_types::Value { kind: Some(kind) }))
        .collect(),
    };
    let mut client = server.dispatcher().await;
    let id = submit(
        &mut client,
        proto::SubmitRequest {
            customer_id: "acme".into(),
            idempotency_key: "t1".into(),
            recipient: "ada@example.com".into(),
            channel: Channel::Email as i32,
            template_id: "receipt".into(),
            variables: Some(variables),
            ..Default::default()
        },
    )
    .await;
    wait_for_state(&mut client, &id, State::Delivered, WAIT).await;
    let mail = fake
        .sent()
        .wait_for(WAIT, |m| m.to == ["ada@example.com"])
        .await;
    assert_eq!(mail.header("Subject").as_deref(), Some("Receipt A-7"));
    assert!(mail.data.contains("Thanks, Ada: 3 items."), "{}", mail.data);
    server.stop().await.unwrap();
}

/// `floodgate customer add` (which has no channel flags) keeps a customer's channel settings:
/// changing the webhook URL from the command line must not switch its SMS off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_keeps_channel_settings() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let fake = SmsFake::start().await;
    upsert(&server, sms_customer(&fake)).await.unwrap();

    let grpc_url = server.grpc_url.clone();
    let cli = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
            .args([
                "customer",
                "add",
                "acme",
                "--webhook-url",
                "http://127.0.0.1:9/moved",
            ])
            .args(["--server", &grpc_url, "--token", common::ADMIN_TOKEN])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );

    let stored = server
        .customers()
        .await
        .get_customer(proto::GetCustomerRequest {
            customer_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.webhook_url, "http://127.0.0.1:9/moved");
    assert_eq!(stored.sms.unwrap().account_sid, sms_fake::ACCOUNT_SID);
    let mut client = server.dispatcher().await;
    let id = submit(
        &mut client,
        request(Channel::Sms, "+14155550100", "k1", &sms_payload("k1")),
    )
    .await;
    wait_for_state(&mut client, &id, State::Delivered, WAIT).await;
    server.stop().await.unwrap();
}
