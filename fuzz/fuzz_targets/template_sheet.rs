//! Any bytes imported as a templates CSV sheet.
#![no_main]

#[path = "../../tests/property_checks/mod.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::template_sheet(data));
