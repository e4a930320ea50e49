//! Templates: versions saved per customer, rendered at send time with the submit's variables;
//! bad templates refused when saved, missing variables refused at intake; the CSV round trip;
//! and cancelling a notification that is not in flight yet.

mod common;

use std::time::Duration;

use common::{
    ADMIN_TOKEN, Authed, Backend, Receiver, TestDb, TestServer, add_customer, connect,
    customer_stats, submit_request, test_config, wait_for_state,
};
use floodgate::api::proto;
use floodgate::api::proto::templates_client::TemplatesClient;
use prost_types::value::Kind;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

async fn templates(server: &TestServer) -> TemplatesClient<Authed> {
    TemplatesClient::new(connect(&server.grpc_url, Some(ADMIN_TOKEN)).await)
}

fn webhook_content(body: &str) -> proto::TemplateContent {
    proto::TemplateContent {
        channel: proto::Channel::Webhook as i32,
        subject: String::new(),
        body: body.into(),
    }
}

async fn upsert(
    client: &mut TemplatesClient<Authed>,
    id: &str,
    body: &str,
) -> Result<proto::Template, tonic::Status> {
    client
        .upsert_template(proto::UpsertTemplateRequest {
            template: Some(proto::Template {
                customer_id: "shop".into(),
                template_id: id.into(),
                contents: vec![webhook_content(body)],
                ..Default::default()
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn variables(pairs: &[(&str, Kind)]) -> prost_types::Struct {
    prost_types::Struct {
        fields: pairs
            .iter()
            .map(|(name, kind)| {
                let value = prost_types::Value {
                    kind: Some(kind.clone()),
                };
                ((*name).to_owned(), value)
            })
            .collect(),
    }
}

fn templated(key: &str, template_id: &str, vars: prost_types::Struct) -> proto::SubmitRequest {
    proto::SubmitRequest {
        payload: Vec::new(),
        template_id: template_id.into(),
        variables: Some(vars),
        ..submit_request("shop", key, "alice")
    }
}

async fn templates_render_at_send_time(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "shop", &receiver.url).await;
    let mut admin = templates(&server).await;
    let mut client = server.dispatcher().await;

    let v1 = upsert(
        &mut admin,
        "bill",
        r#"{"text": "Hello {{ name }}, you owe {{ amount }}"}"#,
    )
    .await
    .unwrap();
    assert_eq!(v1.version, 1);
    let vars = variables(&[
        ("name", Kind::StringValue("Ann".into())),
        ("amount", Kind::NumberValue(12.0)),
    ]);
    let first = client
        .submit(templated("k1", "bill", vars.clone()))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    let stored = wait_for_state(&mut client, &first, proto::State::Delivered, WAIT).await;
    assert_eq!(
        (stored.template_id.as_str(), stored.template_version),
        ("bill", 1)
    );

    // A new version is used by later submits only.
    let v2 = upsert(
        &mut admin,
        "bill",
        r#"{"text": "Dear {{ name }}: {{ amount }} due"}"#,
    )
    .await
    .unwrap();
    assert_eq!(v2.version, 2);
    let second = client
        .submit(templated("k2", "bill", vars.clone()))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    wait_for_state(&mut client, &second, proto::State::Delivered, WAIT).await;

    let deliveries = receiver.wait_for(2, WAIT).await;
    let text_of = |id: &str| {
        let d = deliveries.iter().find(|d| d.webhook_id == id).unwrap();
        d.json()["payload"]["text"].as_str().unwrap().to_owned()
    };
    assert_eq!(text_of(&first), "Hello Ann, you owe 12");
    assert_eq!(text_of(&second), "Dear Ann: 12 due");

    // Version 1 stays readable; the latest is version 2.
    let old = admin
        .get_template(proto::GetTemplateRequest {
            customer_id: "shop".into(),
            template_id: "bill".into(),
            version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(old.contents[0].body.contains("Hello"));
    server.stop().await.unwrap();
}
on_both_backends!(templates_render_at_send_time);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_templates_and_missing_variables_are_invalid_arguments() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "shop", &receiver.url).await;
    let mut admin = templates(&server).await;
    let mut client = server.dispatcher().await;

    let err = upsert(&mut admin, "broken", "Hi {{ name")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("does not compile"), "{err:?}");

    upsert(&mut admin, "hello", r#""Hi {{ name }}""#)
        .await
        .unwrap();
    let missing = client
        .submit(templated("k1", "hello", variables(&[])))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().starts_with("variables:"), "{missing:?}");
    assert!(
        missing.message().ends_with("not given: name"),
        "{missing:?}"
    );

    let unknown = client
        .submit(templated("k2", "nope", variables(&[])))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(unknown.message().starts_with("template_id:"), "{unknown:?}");

    let both = client
        .submit(proto::SubmitRequest {
            template_id: "hello".into(),
            ..submit_request("shop", "k3", "alice")
        })
        .await
        .unwrap_err();
    assert!(both.message().starts_with("payload:"), "{both:?}");

    // In a batch only the bad item is refused, and nothing bad was stored or sent.
    let results = client
        .submit_batch(proto::SubmitBatchRequest {
            requests: vec![
                templated(
                    "k4",
                    "hello",
                    variables(&[("name", Kind::StringValue("Bo".into()))]),
                ),
                templated("k5", "hello", variables(&[])),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(matches!(
        results[0].outcome,
        Some(proto::submit_result::Outcome::Accepted(_))
    ));
    match &results[1].outcome {
        Some(proto::submit_result::Outcome::Error(e)) => {
            assert_eq!(e.code, Code::InvalidArgument as i32, "{e:?}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let delivered = receiver.wait_for(1, WAIT).await;
    assert_eq!(delivered[0].json()["payload"], "Hi Bo");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_export_and_import_as_csv() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "shop", &receiver.url).await;
    let mut admin = templates(&server).await;
    upsert(&mut admin, "welcome", "Welcome, {{ name }}!")
        .await
        .unwrap();

    let sheet = admin
        .export_templates(proto::ExportTemplatesRequest {
            customer_id: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .csv;
    let text = String::from_utf8(sheet).unwrap();
    assert_eq!(
        text,
        "template_id,channel,subject,body\nwelcome,webhook,,\"Welcome, {{ name }}!\"\n"
    );

    // The team edits the sheet: changes welcome, adds an e-mail template.
    let edited = "template_id,channel,subject,body\n\
                  welcome,webhook,,\"Hello again, {{ name }}!\"\n\
                  receipt,email,Receipt {{ n }},Thanks for order {{ n }}\n";
    let imported = admin
        .import_templates(proto::ImportTemplatesRequest {
            customer_id: "shop".into(),
            csv: edited.as_bytes().to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .templates;
    let versions: Vec<(&str, u32)> = imported
        .iter()
        .map(|t| (t.template_id.as_str(), t.version))
        .collect();
    assert_eq!(versions, [("receipt", 1), ("welcome", 2)]);

    // A sheet with one bad row saves nothing.
    let bad = "template_id,channel,subject,body\nwelcome,webhook,,fine\nother,sms,,{{ oops\n";
    let err = admin
        .import_templates(proto::ImportTemplatesRequest {
            customer_id: "shop".into(),
            csv: bad.as_bytes().to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("other"), "{err:?}");
    let listed = admin
        .list_templates(proto::ListTemplatesRequest {
            customer_id: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .templates;
    let welcome = listed.iter().find(|t| t.template_id == "welcome").unwrap();
    assert_eq!(welcome.version, 2);
    assert!(welcome.contents[0].body.contains("Hello again"));
    server.stop().await.unwrap();
}

async fn cancel_stops_what_is_not_in_flight(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "shop", &receiver.url).await;
    let mut client = server.dispatcher().await;

    // Scheduled an hour ahead: pending until then, so it can be cancelled.
    let later = prost_types::Timestamp {
        seconds: floodgate::model::now_millis() / 1000 + 3600,
        nanos: 0,
    };
    let scheduled = client
        .submit(proto::SubmitRequest {
            send_at: Some(later),
            ..submit_request("shop", "later", "alice")
        })
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    let cancelled = client
        .cancel_notification(proto::CancelNotificationRequest {
            notification_id: scheduled.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, proto::State::Cancelled as i32);

    // Cancelling again, or cancelling a delivered one, is a failed precondition.
    let again = client
        .cancel_notification(proto::CancelNotificationRequest {
            notification_id: scheduled,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let now = client
        .submit(submit_request("shop", "now", "alice"))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    wait_for_state(&mut client, &now, proto::State::Delivered, WAIT).await;
    let late = client
        .cancel_notification(proto::CancelNotificationRequest {
            notification_id: now.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert!(late.message().contains("delivered"), "{late:?}");
    let missing = client
        .cancel_notification(proto::CancelNotificationRequest {
            notification_id: "999999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(receiver.received().len(), 1);
    server.stop().await.unwrap();
}
on_both_backends!(cancel_stops_what_is_not_in_flight);

/// A notification whose template version cannot be read at send time fails with the reason,
/// and is never held against the customer system: nothing was sent, so its error rate and
/// RTT figures do not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrenderable_notification_fails_without_blaming_the_customer() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(test_config(&db)).await;
    let receiver = Receiver::start().await;
    add_customer(&server.grpc_url, "shop", &receiver.url).await;
    let mut customers = server.customers().await;
    customers
        .pause_customer(proto::PauseCustomerRequest {
            customer_id: "shop".into(),
        })
        .await
        .unwrap();
    let mut admin = templates(&server).await;
    upsert(&mut admin, "hello", r#""Hi {{ name }}""#)
        .await
        .unwrap();
    let mut client = server.dispatcher().await;
    let vars = variables(&[("name", Kind::StringValue("Ann".into()))]);
    let id = client
        .submit(templated("k1", "hello", vars))
        .await
        .unwrap()
        .into_inner()
        .notification_id;
    // Point it at a version that does not exist, as if the row were damaged (found by its key:
    // the id callers see is not the row id).
    let changed = db
        .execute(
            "UPDATE notifications SET template_version = 99 \
             WHERE customer_id = 'shop' AND idempotency_key = 'k1'",
        )
        .await;
    assert_eq!(changed, 1);
    customers
        .resume_customer(proto::ResumeCustomerRequest {
            customer_id: "shop".into(),
        })
        .await
        .unwrap();

    let failed = wait_for_state(&mut client, &id, proto::State::Failed, WAIT).await;
    assert!(
        failed.last_error.contains("version 99 not found"),
        "{failed:?}"
    );
    assert!(receiver.received().is_empty());
    let stats = customer_stats(&mut customers, "shop").await;
    assert_eq!(stats.error_rate, 0.0, "{stats:?}");
    assert_eq!(
        stats.rtt_p50_ms, 0.0,
        "no round trip was measured: {stats:?}"
    );
    let page = common::metrics_page(server.http_addr).await;
    let rtt_samples = page.lines().find_map(|line| {
        line.strip_prefix("floodgate_customer_rtt_seconds_count{customer=\"shop\"} ")
    });
    assert_eq!(
        rtt_samples.unwrap_or("0"),
        "0",
        "an unsent attempt has no RTT"
    );
    server.stop().await.unwrap();
}
