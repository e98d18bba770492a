//! Raw camera frame bytes → geometry → frame → pipeline → model-size input,
//! through `badexpert_runtime::camera::check_camera_bytes`: any panic is a
//! bug (an `Err` is the expected answer to a bad frame).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = badexpert_runtime::camera::check_camera_bytes(data);
});
