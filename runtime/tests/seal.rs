//! The bundle's seal through the Rust API: every tampering of
//! `support/tamper.rs` is refused with its cause named, with the trusted key;
//! those that need no key are refused without one too; the untouched signed
//! bundle loads either way.

#[path = "support/tamper.rs"]
mod tamper;

use std::path::{Path, PathBuf};

use badexpert_runtime::{GuardBundle, LoadOptions};

fn demo_bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist/bundle")
}

fn open(dir: &Path, trusted: bool) -> Result<GuardBundle, badexpert_runtime::Error> {
    let trusted_key = trusted.then(tamper::trusted);
    GuardBundle::open_with(dir, LoadOptions { trusted_key, ..LoadOptions::default() })
}

#[test]
fn a_signed_bundle_loads_and_says_who_signed_it() {
    let dir = tamper::signed_copy(&demo_bundle(), "api-ok");
    let with_key = open(&dir, true).unwrap();
    assert!(with_key.seal().trusted);
    assert_eq!(with_key.seal().signer.as_deref(), Some(tamper::trusted().fingerprint().as_str()));
    let without = open(&dir, false).unwrap();
    assert!(!without.seal().trusted && without.seal().signer.is_some());
    // The shipped demo is sealed, unsigned: it loads without a key and is refused with one.
    assert!(open(&demo_bundle(), false).unwrap().seal().signer.is_none());
    let e = open(&demo_bundle(), true).unwrap_err().to_string();
    assert!(e.contains("is not signed"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_tampering_is_refused_naming_its_cause() {
    for case in tamper::CASES {
        let dir = tamper::signed_copy(&demo_bundle(), "api");
        tamper::apply(case.name, &dir);
        let e = open(&dir, true).err().unwrap_or_else(|| panic!("{}: loaded with the trusted key", case.name));
        let message = e.to_string();
        assert!(message.contains(case.expect), "{}: {message}", case.name);
        assert!(message.contains("refusing to guard"), "{}: {message}", case.name);
        match open(&dir, false) {
            Ok(_) => assert!(case.needs_key, "{}: loaded without a key", case.name),
            Err(e) => assert!(!case.needs_key && e.to_string().contains(case.expect), "{}: {e}", case.name),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_removed_seal_is_refused_with_the_way_to_reseal() {
    let dir = tamper::signed_copy(&demo_bundle(), "api-noseal");
    std::fs::remove_file(dir.join("seal.json")).unwrap();
    let e = open(&dir, false).expect_err("refused").to_string();
    assert!(e.contains("no seal.json") && e.contains("badexpert-convert seal"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_manifest_read_back_is_the_one_sealed_bit_for_bit() {
    // serde_json parses some floats 1 ULP off without float_roundtrip (14/120 was one).
    let dir = tamper::signed_copy(&demo_bundle(), "api-floats");
    let path = dir.join("manifest.json");
    let mut manifest = badexpert_runtime::Manifest::read(&path).unwrap();
    for k in 1..200 {
        manifest.fine_tune.auxiliary.holdout_accuracy = k as f64 / 120.0;
        manifest.fine_tune.expert.learning_rate = 1e-4 * k as f64 / 7.0;
        manifest.decision.threshold = (k as f32).recip() * 0.3;
        manifest.write(&path).unwrap();
        let read = badexpert_runtime::Manifest::read(&path).unwrap();
        badexpert_runtime::seal::Seal::read(&dir).unwrap().check(&dir, &read, None).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
