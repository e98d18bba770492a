//! The `bundle_dir` fuzz target's harness and corpus (docs/fuzzing.md):
//! the demo bundle's own JSON opens and guards through it, edits are
//! refused, and every committed corpus input replays without a panic.

#[path = "support/bundle_bytes.rs"]
mod bundle_bytes;

use std::path::Path;

use bundle_bytes::{check_bundle_bytes, demo_bundle, encode, GUARD_FRAMES, HONEST_SEAL, TRUSTED_KEY};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/bundle_dir");

fn demo_json() -> (String, Vec<u8>) {
    let dir = demo_bundle();
    (std::fs::read_to_string(dir.join("manifest.json")).unwrap(), std::fs::read(dir.join("seal.json")).unwrap())
}

/// Named inputs: the demo bundle as sealed, honestly re-sealed and signed,
/// with τ, γ and the normalisation edited, and broken JSON.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (manifest, seal) = demo_json();
    let tau = manifest.replacen("\"threshold\": 0.1882989", "\"threshold\": 1e9", 1);
    let gamma = manifest.replacen("\"gamma\": 0.5", "\"gamma\": -3.0", 1);
    let std = manifest.replacen("\"std\": [\n      0.353\n    ]", "\"std\": [\n      0.0\n    ]", 1);
    let shape = manifest.replacen("\"height\": 28", "\"height\": 4096", 1);
    assert!(tau != manifest && gamma != manifest && shape != manifest, "the demo manifest's layout changed");
    let m = manifest.as_bytes();
    vec![
        ("seed-demo-as-sealed", encode(0, m, &seal)),
        ("seed-demo-guard", encode(GUARD_FRAMES, m, &seal)),
        ("seed-demo-honest-signed-guard", encode(HONEST_SEAL | TRUSTED_KEY | GUARD_FRAMES, m, &[])),
        ("seed-demo-unsigned-trusted-key", encode(TRUSTED_KEY, m, &seal)),
        ("seed-tau-edited", encode(GUARD_FRAMES, tau.as_bytes(), &seal)),
        ("seed-tau-resealed-guard", encode(HONEST_SEAL | GUARD_FRAMES, tau.as_bytes(), &[])),
        ("seed-gamma-resealed-guard", encode(HONEST_SEAL | GUARD_FRAMES, gamma.as_bytes(), &[])),
        ("seed-std-resealed-guard", encode(HONEST_SEAL | GUARD_FRAMES, std.as_bytes(), &[])),
        ("seed-shape-resealed-guard", encode(HONEST_SEAL | GUARD_FRAMES, shape.as_bytes(), &[])),
        ("seed-truncated-manifest", encode(0, &m[..m.len() / 2], &seal)),
        ("seed-truncated-seal", encode(0, m, &seal[..seal.len() / 2])),
        ("seed-empty", vec![]),
    ]
}

#[test]
#[ignore]
fn write_seed_corpus() {
    std::fs::create_dir_all(CORPUS).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(Path::new(CORPUS).join(name), bytes).unwrap();
    }
}

#[test]
fn the_harness_opens_and_guards_the_demo_and_refuses_its_edits() {
    let seeds: std::collections::HashMap<_, _> = seeds().into_iter().collect();
    for ok in ["seed-demo-as-sealed", "seed-demo-guard", "seed-demo-honest-signed-guard", "seed-tau-resealed-guard"] {
        check_bundle_bytes(&seeds[ok]).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (refused, why) in [
        ("seed-demo-unsigned-trusted-key", "not signed"),
        ("seed-tau-edited", "decision"),
        ("seed-gamma-resealed-guard", "gamma"),
        ("seed-std-resealed-guard", "std"),
        ("seed-shape-resealed-guard", ""),
        ("seed-truncated-manifest", "manifest"),
        ("seed-truncated-seal", "seal"),
        ("seed-empty", "flags"),
    ] {
        let e = check_bundle_bytes(&seeds[refused]).expect_err(refused).to_string();
        assert!(e.contains(why), "{refused}: {e}");
    }
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let files: Vec<_> = std::fs::read_dir(CORPUS).expect("committed corpus").map(|e| e.unwrap().path()).collect();
    assert!(files.len() >= 12, "corpus {CORPUS} has only {} files", files.len());
    let opened = files.iter().filter(|f| check_bundle_bytes(&std::fs::read(f).unwrap()).is_ok()).count();
    assert!(opened > 0, "no corpus input opens a bundle");
}
