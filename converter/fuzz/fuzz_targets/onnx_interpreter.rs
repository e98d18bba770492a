//! ONNX bytes → decode → `TchGraph` → forward passes, through
//! `badexpert_converter::onnx::check_bytes`: any panic or abort is a bug
//! (an `Err` is the expected answer to a malformed model).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = badexpert_converter::onnx::check_bytes(data);
});
