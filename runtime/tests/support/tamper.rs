//! Tampered copies of the demo bundle, one per way to weaken or swap a guard,
//! shared by the seal tests of every entry point (Rust API, CLI, C ABI,
//! GStreamer element): included with `#[path]` so each case is written once.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use badexpert_runtime::seal::{hex, Seal, TrustedKey};
use badexpert_runtime::Manifest;
use serde_json::Value;

/// The deployer's signing key (a fixed seed: tests only).
pub const SIGNER: [u8; 32] = [7; 32];
/// Somebody else's.
pub const STRANGER: [u8; 32] = [9; 32];

pub fn trusted() -> TrustedKey {
    TrustedKey::of_secret(&SIGNER)
}

/// The trusted public key as a key file in `dir` (as `badexpert-convert keygen` writes it).
pub fn trusted_key_file(dir: &Path) -> PathBuf {
    let path = dir.join("trusted.pub");
    std::fs::write(&path, format!("# test key\n{}\n", hex(trusted().as_bytes()))).unwrap();
    path
}

/// A copy of `bundle` in a fresh scratch directory, sealed and signed by [`SIGNER`].
pub fn signed_copy(bundle: &Path, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("badexpert-seal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(bundle).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    reseal(&dir, Some(&SIGNER));
    dir
}

/// Seals `dir` anew from its manifest, signed by `key` when given.
pub fn reseal(dir: &Path, key: Option<&[u8; 32]>) {
    let manifest = Manifest::read(&dir.join("manifest.json")).unwrap();
    let mut seal = Seal::of(&manifest).unwrap();
    if let Some(k) = key {
        seal.sign(k);
    }
    seal.write(dir).unwrap();
}

/// One tampering of a signed bundle.
pub struct Case {
    pub name: &'static str,
    /// Refused only when the runtime is given the trusted key (the rest always).
    pub needs_key: bool,
    /// Words the refusal must hold.
    pub expect: &'static str,
}

pub const CASES: &[Case] = &[
    Case { name: "threshold", needs_key: false, expect: "decision differs" },
    Case { name: "gamma", needs_key: false, expect: "decision differs" },
    Case { name: "normalization", needs_key: false, expect: "normalization differs" },
    Case { name: "class name", needs_key: false, expect: "classes differs" },
    Case { name: "camera", needs_key: false, expect: "camera differs" },
    Case { name: "swapped plan, hash fixed", needs_key: false, expect: "plans differs" },
    Case { name: "seal digest edited", needs_key: false, expect: "digest does not match" },
    Case { name: "signature forged", needs_key: false, expect: "does not verify" },
    Case { name: "threshold, resealed unsigned", needs_key: true, expect: "is not signed" },
    Case { name: "signature removed", needs_key: true, expect: "is not signed" },
    Case { name: "threshold, signed by another key", needs_key: true, expect: "not by the trusted key" },
];

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

fn edit_seal(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("seal.json");
    let mut s: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut s);
    std::fs::write(&path, serde_json::to_string_pretty(&s).unwrap()).unwrap();
}

/// Applies the case named `name` to the signed bundle in `dir`, as an attacker would.
pub fn apply(name: &str, dir: &Path) {
    let switch_off = |m: &mut Value| m["decision"]["threshold"] = (-1e30).into();
    match name {
        "threshold" => edit_manifest(dir, switch_off),
        "gamma" => edit_manifest(dir, |m| m["decision"]["gamma"] = 50.0.into()),
        "normalization" => edit_manifest(dir, |m| m["normalization"]["std"][0] = 1.0.into()),
        "class name" => edit_manifest(dir, |m| m["classes"][0] = "stop sign".into()),
        "camera" => edit_manifest(dir, |m| {
            m["camera"] = serde_json::json!({ "resize": "exact", "channel_order": "bgr", "yuv": "bt709_full" })
        }),
        "swapped plan, hash fixed" => {
            let (model, expert) = (dir.join("model.nnef.tar"), dir.join("expert.nnef.tar"));
            std::fs::copy(&model, &expert).unwrap();
            let sha = badexpert_runtime::sha256_file(&expert).unwrap();
            edit_manifest(dir, |m| m["plans"]["expert"]["sha256"] = sha.into());
        }
        "seal digest edited" => edit_seal(dir, |s| s["digest"] = "0".repeat(64).into()),
        "signature forged" => edit_seal(dir, |s| {
            let sig = s["signature"]["signature"].as_str().unwrap();
            let flipped = if sig.starts_with('0') { "1" } else { "0" };
            s["signature"]["signature"] = format!("{flipped}{}", &sig[1..]).into();
        }),
        "threshold, resealed unsigned" => {
            edit_manifest(dir, switch_off);
            reseal(dir, None);
        }
        "signature removed" => edit_seal(dir, |s| {
            s.as_object_mut().unwrap().remove("signature");
        }),
        "threshold, signed by another key" => {
            edit_manifest(dir, switch_off);
            reseal(dir, Some(&STRANGER));
        }
        other => panic!("no tampering case {other:?}"),
    }
}
