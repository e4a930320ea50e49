//! Any bytes decoded as a `SubmitRequest` (what a gRPC caller can send), then converted.
#![no_main]

#[path = "../../tests/property_checks/mod.rs"]
mod checks;

use floodgate::api::proto::SubmitRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = SubmitRequest::decode(data) {
        checks::submit_request(request);
    }
});
