//! Property tests over the inputs callers and providers control: submit requests, templates and
//! their variables, channel payloads and CSV sheets. The properties live in `property_checks`,
//! shared with the cargo-fuzz targets in `fuzz/`; here proptest feeds them structured cases
//! (256 per property, so `cargo test` stays fast).

#[path = "property_checks/mod.rs"]
mod checks;

use floodgate::api::proto::SubmitRequest;
use floodgate::model::Channel;
use floodgate::templates::Content;
use prop::collection::{btree_map, vec};
use proptest::prelude::*;
use prost_types::value::Kind;
use prost_types::{Struct, Timestamp, Value};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings near the checks' edges: valid ids, ids one past the length limit, control
/// characters, and anything at all.
fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._-]{1,8}",
        "[a-zA-Z0-9._-]{126,130}",
        "[a-z]{0,3}[\\x00-\\x1f /é][a-z]{0,3}",
        ".{0,300}",
    ]
}

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    let seconds = prop_oneof![
        (checks::NOW / 1000 - 100..checks::NOW / 1000 + 100),
        any::<i64>(),
    ];
    let nanos = prop_oneof![0..1_000_000_000i32, any::<i32>()];
    prop::option::of((seconds, nanos).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }))
}

fn proto_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Kind::NullValue(0)),
        any::<bool>().prop_map(Kind::BoolValue),
        any::<f64>().prop_map(Kind::NumberValue),
        ".{0,20}".prop_map(Kind::StringValue),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|values| Kind::ListValue(prost_types::ListValue {
                values: values
                    .into_iter()
                    .map(|kind| Value { kind: Some(kind) })
                    .collect(),
            })),
            btree_map(".{0,6}", inner, 0..4).prop_map(|fields| Kind::StructValue(Struct {
                fields: fields
                    .into_iter()
                    .map(|(k, kind)| (k, Value { kind: Some(kind) }))
                    .collect(),
            })),
        ]
    })
    .prop_map(|kind| Value { kind: Some(kind) })
}

fn variables() -> impl Strategy<Value = Option<Struct>> {
    prop::option::of(
        btree_map(".{0,8}", proto_value(), 0..6).prop_map(|fields| Struct {
            fields: fields.into_iter().collect(),
        }),
    )
}

fn submit_request() -> impl Strategy<Value = SubmitRequest> {
    (
        (id_like(), id_like(), id_like(), -1..4i32),
        (
            vec(any::<u8>(), 0..1200),
            prop_oneof![Just(String::new()), id_like()],
        ),
        (variables(), timestamp(), timestamp(), -1..7i32),
    )
        .prop_map(
            |(
                (customer_id, idempotency_key, recipient, lane),
                (payload, template_id),
                (variables, send_at, expires_at, channel),
            )| SubmitRequest {
                customer_id,
                idempotency_key,
                recipient,
                lane,
                payload,
                send_at,
                expires_at,
                channel,
                template_id,
                variables,
            },
        )
}

/// Template source built from pieces of minijinja syntax (balanced or not), so most cases
/// compile and some loop far past the output cap.
fn template_source() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{ name }}".to_owned()),
        Just("{{ missing }}".to_owned()),
        Just("{{ n * n }}".to_owned()),
        Just("{{ name | upper }}".to_owned()),
        Just("{% for i in range(n) %}{{ name }}{% endfor %}".to_owned()),
        Just("{% for i in range(n) %}{% for j in range(n) %}x{% endfor %}{% endfor %}".to_owned()),
        Just("{% if flag %}".to_owned()),
        Just("{% endif %}".to_owned()),
        Just("{{".to_owned()),
        Just("}}".to_owned()),
        Just("{{ 1 / 0 }}".to_owned()),
        "[a-z \"\\\\{}%]{0,10}",
        ".{0,10}",
    ];
    vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

fn contents() -> impl Strategy<Value = Vec<Content>> {
    vec(
        (
            prop::sample::select(Channel::ALL.to_vec()),
            template_source(),
            template_source(),
        )
            .prop_map(|(channel, subject, body)| Content {
                channel,
                subject,
                body,
            }),
        0..4,
    )
}

fn template_variables() -> impl Strategy<Value = serde_json::Value> {
    (".{0,40}", 0..5_000i64, any::<bool>(), any::<bool>()).prop_map(|(name, n, flag, with_name)| {
        let mut vars = serde_json::json!({ "n": n, "flag": flag });
        if with_name {
            vars["name"] = name.into();
        }
        vars
    })
}

/// A CSV sheet: usually the right header, rows from cells with separators, quotes, line breaks
/// and channel names; sometimes any bytes at all.
fn sheet() -> impl Strategy<Value = Vec<u8>> {
    let cell = prop_oneof![
        Just("webhook".to_owned()),
        Just("sms".to_owned()),
        Just(" email ".to_owned()),
        Just("\"quoted, \"\"cell\"\"\"".to_owned()),
        Just("\"line\r\nbreak\"".to_owned()),
        "[a-z ,\"\r\n]{0,8}",
        ".{0,8}",
    ];
    let row = vec(cell, 0..6).prop_map(|cells| cells.join(","));
    let header = prop_oneof![
        Just("template_id,channel,subject,body".to_owned()),
        Just(" template_id , channel,subject,body".to_owned()),
        ".{0,20}",
    ];
    prop_oneof![
        4 => (header, vec(row, 0..6)).prop_map(|(header, rows)| {
            let mut sheet = header;
            for row in rows {
                sheet.push('\n');
                sheet.push_str(&row);
            }
            sheet.into_bytes()
        }),
        1 => vec(any::<u8>(), 0..200),
    ]
}

/// Bytes that are often JSON objects with the payload fields, sometimes not JSON at all.
fn payload_bytes() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![Just(String::new()), Just("  ".to_owned()), ".{0,12}"];
    let object = (
        prop::option::of(text.clone()),
        prop::option::of(text.clone()),
        prop::option::of(text),
        prop::option::of(btree_map(".{0,4}", ".{0,4}", 0..3)),
    )
        .prop_map(|(title, body, html, data)| {
            let mut object = serde_json::Map::new();
            for (key, value) in [("title", title), ("body", body), ("html", html)] {
                if let Some(value) = value {
                    object.insert(key.into(), value.into());
                }
            }
            if let Some(data) = data {
                object.insert("data".into(), serde_json::json!(data));
            }
            serde_json::Value::Object(object).to_string().into_bytes()
        });
    prop_oneof![3 => object, 1 => vec(any::<u8>(), 0..64)]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn submit_requests_convert_or_name_the_bad_field(request in submit_request()) {
        checks::submit_request(request);
    }

    #[test]
    fn templates_compile_and_render_within_the_cap(
        contents in contents(),
        variables in template_variables(),
    ) {
        checks::template(contents, &variables);
    }

    #[test]
    fn channel_payloads_parse_or_are_refused(bytes in payload_bytes()) {
        checks::channel_payload(&bytes);
    }

    #[test]
    fn template_sheets_import_or_are_refused(sheet in sheet()) {
        checks::template_sheet(&sheet);
    }
}
