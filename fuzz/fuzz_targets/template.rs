//! A template and its variables from any bytes: the first byte picks the channel, the rest is
//! text split at NUL into subject, body and the variables' JSON.
#![no_main]

#[path = "../../tests/property_checks/mod.rs"]
mod checks;

use floodgate::model::Channel;
use floodgate::templates::Content;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let channel = Channel::ALL[usize::from(*first) % Channel::ALL.len()];
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(3, '\0');
    let subject = parts.next().unwrap_or_default().to_owned();
    let body = parts.next().unwrap_or_default().to_owned();
    let variables = serde_json::from_str(parts.next().unwrap_or_default())
        .unwrap_or_else(|_| serde_json::json!({ "name": "Ada", "n": 3, "flag": true }));
    checks::template(vec![Content { channel, subject, body }], &variables);
});
