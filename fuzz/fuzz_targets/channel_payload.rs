//! Any bytes read as the push, e-mail and SMS payloads the provider sinks send.
#![no_main]

#[path = "../../tests/property_checks/mod.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::channel_payload(data));
