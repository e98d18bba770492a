//! Arbitrary manifest and seal bytes in a bundle directory beside the demo
//! bundle's plans, opened as every entry point opens a bundle and, once it
//! opens, guarding frames (the harness and its layout:
//! runtime/tests/support/bundle_bytes.rs). Any panic is a bug; an `Err` is
//! the expected answer to a bad bundle.
#![no_main]

#[path = "../../tests/support/bundle_bytes.rs"]
mod bundle_bytes;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bundle_bytes::check_bundle_bytes(data);
});
