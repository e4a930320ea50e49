//! Any bytes read as a provider's answer: a status, a `Retry-After` value and a body, classified
//! by every sink (the properties live in `floodgate::sink::provider_answer`, which cargo-fuzz's
//! `--cfg fuzzing` compiles in).
//!
//! Layout: two bytes of status (big-endian), one byte giving the `Retry-After` length, that many
//! bytes of `Retry-After`, and the rest as the body.
#![no_main]

use floodgate::sink::provider_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[high, low, len], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let (retry_after, body) = rest.split_at(usize::from(len).min(rest.len()));
    provider_answer::check(u16::from_be_bytes([high, low]), retry_after, body);
});
