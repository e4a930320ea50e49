//! The properties that hostile input must not break, each as one function that panics when the
//! property fails. `tests/properties.rs` drives them with proptest on every `cargo test`; the
//! cargo-fuzz targets in `fuzz/` include this same file and drive them with libFuzzer, so both
//! check exactly the same thing.

#![allow(dead_code, unreachable_pub)]

use floodgate::api::convert::{self, MAX_KEY_LEN};
use floodgate::api::proto::SubmitRequest;
use floodgate::error::Error;
use floodgate::model::{Channel, EpochMillis};
use floodgate::sink::payload::{ChannelPayload, EmailPayload, PushPayload, SmsPayload};
use floodgate::templates::{self, Content, RenderLimits, Template};

/// The payload limit the request property converts under: small, so both sides of it are hit.
pub const MAX_PAYLOAD_BYTES: usize = 1024;
/// "Now" for the request property (2023-11-14), so `expires_at` lands on both sides of it.
pub const NOW: EpochMillis = 1_700_000_000_000;

/// Every field of a `SubmitRequest` an INVALID_ARGUMENT may name.
const SUBMIT_FIELDS: [&str; 10] = [
    "customer_id",
    "idempotency_key",
    "recipient",
    "lane",
    "payload",
    "variables",
    "template_id",
    "send_at",
    "expires_at",
    "channel",
];

/// Limits that keep one render cheap while still letting loops overflow the output cap.
pub const RENDER_LIMITS: RenderLimits = RenderLimits {
    max_bytes: 4096,
    fuel: 50_000,
    timeout: std::time::Duration::from_secs(1),
};

/// Converting a submit request yields either a notification whose every field passes the same
/// checks again, or INVALID_ARGUMENT naming one of the request's fields; never anything else.
pub fn submit_request(request: SubmitRequest) {
    match convert::new_notification(request.clone(), MAX_PAYLOAD_BYTES, NOW) {
        Ok(n) => {
            assert!(convert::customer_id("customer_id", &n.customer_id).is_ok());
            assert!(convert::key("idempotency_key", &n.idempotency_key).is_ok());
            assert!(convert::key("recipient", &n.recipient).is_ok());
            assert!(n.recipient.len() <= MAX_KEY_LEN);
            assert!(n.payload.len() <= MAX_PAYLOAD_BYTES);
            assert_eq!(n.customer_id.as_str(), request.customer_id);
            if let Some(expires_at) = n.expires_at {
                assert!(expires_at > NOW);
                assert!(n.send_at.is_none_or(|send_at| send_at < expires_at));
            }
            match &n.template {
                Some(template) => {
                    assert_eq!(template.id, request.template_id);
                    let variables: serde_json::Value = serde_json::from_slice(&n.payload)
                        .expect("a templated notification's variables are JSON");
                    assert!(variables.is_object());
                }
                None => assert_eq!(n.payload, request.payload),
            }
        }
        Err(Error::InvalidArgument { field, .. }) => {
            assert!(SUBMIT_FIELDS.contains(&field), "unknown field {field:?}");
        }
        Err(other) => panic!("not INVALID_ARGUMENT: {other:?}"),
    }
}

/// A template that passes the save-time check renders, for every channel it has, into at most
/// the payload limit (the channel's JSON shape for non-webhook channels), or fails as a render
/// error; compile and render never panic and never report a store failure.
pub fn template(contents: Vec<Content>, variables: &serde_json::Value) {
    match templates::check(&contents) {
        Ok(()) => {}
        Err(templates::Error::Invalid(_)) => return,
        Err(other) => panic!("check failed with {other:?}"),
    }
    let template = Template {
        customer_id: "fuzz".into(),
        id: "t".into(),
        version: 1,
        contents: contents.clone(),
        created_at: 0,
    };
    for content in &contents {
        match templates::render(&template, content.channel, variables, &RENDER_LIMITS) {
            Ok(payload) => {
                assert!(payload.len() <= RENDER_LIMITS.max_bytes);
                match content.channel {
                    Channel::Webhook => {}
                    Channel::Sms => {
                        let _ = SmsPayload::parse(&payload);
                    }
                    Channel::Email => {
                        let _ = EmailPayload::parse(&payload);
                    }
                    Channel::Fcm | Channel::Apns => {
                        let _ = PushPayload::parse(&payload);
                    }
                }
                if content.channel != Channel::Webhook {
                    serde_json::from_slice::<serde_json::Value>(&payload)
                        .expect("a non-webhook render is JSON");
                }
            }
            Err(templates::Error::Render(_)) => {}
            Err(other) => panic!("render failed with {other:?}"),
        }
    }
}

/// Reading a stored or submitted payload as any channel's JSON never panics, and what it
/// accepts carries a non-blank body.
pub fn channel_payload(bytes: &[u8]) {
    if let Ok(p) = PushPayload::parse(bytes) {
        assert!(!p.body.trim().is_empty());
    }
    if let Ok(p) = EmailPayload::parse(bytes) {
        assert!(!p.body.trim().is_empty());
    }
    if let Ok(p) = SmsPayload::parse(bytes) {
        assert!(!p.body.trim().is_empty());
    }
}

/// Importing a CSV sheet never panics; what it accepts has a non-empty, trimmed id and at least
/// one content per template, and exporting it then importing the export gives it back.
pub fn template_sheet(sheet: &[u8]) {
    let Ok(imported) = templates::csv::import(sheet) else {
        return;
    };
    assert!(!imported.is_empty());
    let mut saved = Vec::new();
    for (id, contents) in &imported {
        assert!(!id.is_empty());
        assert_eq!(id.trim(), id);
        assert!(!contents.is_empty());
        saved.push(Template {
            customer_id: "fuzz".into(),
            id: id.clone(),
            version: 1,
            contents: contents.clone(),
            created_at: 0,
        });
    }
    let exported = templates::csv::export(&saved).expect("an imported sheet exports");
    let again = templates::csv::import(&exported).expect("an exported sheet imports");
    assert_eq!(again, imported);
}
