//! `badexpert.h` is what cbindgen makes of `src/lib.rs` today: a changed call
//! without a regenerated header fails here (`BADEXPERT_BLESS=1` rewrites it).

use std::path::Path;

#[test]
fn the_header_is_what_cbindgen_generates_from_the_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("ffi/cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_src(dir.join("src/lib.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen reads src/lib.rs");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = dir.join("badexpert.h");
    if std::env::var_os("BADEXPERT_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "ffi/badexpert.h is out of date with ffi/src/lib.rs; regenerate it with \
         BADEXPERT_BLESS=1 cargo test -p badexpert-ffi --test header"
    );
}
