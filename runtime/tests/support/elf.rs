//! No artefact may give its process an executable stack: `readelf -lW`'s
//! GNU_STACK segment must not be RWE. Shared by the tests of the binaries,
//! the C library and the GStreamer plugin (included with `#[path]`).

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub fn assert_no_executable_stack(artefact: &Path) {
    let out = Command::new("readelf")
        .args(["-lW"])
        .arg(artefact)
        .output()
        .expect("readelf runs (binutils, as the linker needs)");
    assert!(out.status.success(), "readelf {}: {}", artefact.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let stack = text.lines().find(|l| l.trim_start().starts_with("GNU_STACK"));
    let stack = stack.unwrap_or_else(|| panic!("{} has no GNU_STACK segment:\n{text}", artefact.display()));
    assert!(!stack.contains("RWE"), "{} has an executable stack: {stack}", artefact.display());
}
