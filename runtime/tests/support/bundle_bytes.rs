//! Arbitrary bytes as a bundle directory's `manifest.json` and `seal.json`,
//! opened as every entry point opens a bundle (`GuardBundle::open_with`:
//! seal, manifest, file hashes, plans) and, once it opens, guarding frames.
//! An `Err` is the expected answer to a bad bundle; a panic is a bug.
//!
//! Shared by the `bundle_dir` fuzz target (runtime/fuzz, included with
//! `#[path]`) and the replay of its corpus (runtime/tests/bundle_fuzz.rs).
//! The plans and stored frames are the demo bundle's, copied once per
//! thread into a scratch directory; only the two JSON files change per
//! input.
//!
//! Layout: byte 0 holds flags, bytes 1..5 the manifest's length (u32 LE,
//! clamped to what follows), then the manifest bytes, then the seal bytes.
//! - bit 0: seal the manifest honestly (the seal bytes are ignored), so that
//!   validation, the file checks and plan loading see the fuzzed values;
//! - bit 1: give a trusted key; an honest seal is then signed with it;
//! - bit 2: guard a black and a white frame once the bundle opens.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use badexpert_runtime::seal::{Seal, TrustedKey};
use badexpert_runtime::{Error, Guard, GuardBundle, LoadOptions, Manifest, PixelLayout};

/// The key an honest seal is signed with under bit 1 (a fixed seed: tests only).
pub const FUZZ_SIGNER: [u8; 32] = [7; 32];
pub const HONEST_SEAL: u8 = 1;
pub const TRUSTED_KEY: u8 = 2;
pub const GUARD_FRAMES: u8 = 4;

/// The shipped demo bundle, found from the including crate's directory.
pub fn demo_bundle() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let bundle = dir.join("models/badnet-fmnist/bundle");
        if bundle.join("manifest.json").exists() {
            return bundle;
        }
        assert!(dir.pop(), "no models/badnet-fmnist/bundle above {}", env!("CARGO_MANIFEST_DIR"));
    }
}

/// One input in the layout above.
pub fn encode(flags: u8, manifest: &[u8], seal: &[u8]) -> Vec<u8> {
    let mut data = vec![flags];
    data.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    data.extend_from_slice(manifest);
    data.extend_from_slice(seal);
    data
}

/// A scratch directory holding the demo bundle's files but its JSON ones,
/// one per thread (tests run in parallel threads of one process).
fn scratch() -> PathBuf {
    thread_local! {
        static DIR: PathBuf = {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("badexpert-bundle-bytes-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch directory");
            for entry in std::fs::read_dir(demo_bundle()).expect("demo bundle") {
                let path = entry.expect("demo bundle entry").path();
                let name = path.file_name().expect("file name").to_owned();
                if name != "manifest.json" && name != "seal.json" {
                    std::fs::copy(&path, dir.join(name)).expect("copy a demo bundle file");
                }
            }
            dir
        };
    }
    DIR.with(Clone::clone)
}

/// Opens the bundle the bytes describe and, under bit 2, guards two frames.
pub fn check_bundle_bytes(data: &[u8]) -> Result<(), Error> {
    let Some((&flags, rest)) = data.split_first() else {
        return Err(Error::Invalid("no flags byte".into()));
    };
    let Some((len, rest)) = rest.split_first_chunk::<4>() else {
        return Err(Error::Invalid("no manifest length".into()));
    };
    let split = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (manifest, seal) = rest.split_at(split);
    let dir = &scratch();
    std::fs::write(dir.join("manifest.json"), manifest).expect("write manifest");
    let trusted = (flags & TRUSTED_KEY != 0).then(|| TrustedKey::of_secret(&FUZZ_SIGNER));
    if flags & HONEST_SEAL != 0 {
        let parsed = Manifest::read(&dir.join("manifest.json"))?;
        let mut honest = Seal::of(&parsed)?;
        if trusted.is_some() {
            honest.sign(&FUZZ_SIGNER);
        }
        honest.write(dir)?;
    } else {
        std::fs::write(dir.join("seal.json"), seal).expect("write seal");
    }
    let bundle = GuardBundle::open_with(dir, LoadOptions { trusted_key: trusted, ..LoadOptions::default() })?;
    if flags & GUARD_FRAMES != 0 {
        let mut guard = Guard::new(&bundle)?;
        let n = bundle.manifest().input.shape.len();
        if n > 1 << 24 {
            return Err(Error::Invalid(format!("{n} values per frame: too many to guard here")));
        }
        for value in [0u8, 255] {
            guard.guard(&vec![value; n], PixelLayout::Chw)?;
        }
    }
    Ok(())
}
