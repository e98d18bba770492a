//! A copy of a bundle written before bundles recorded their calibration
//! scores (the shipped demo's), given them as `stream` would take them: the
//! guard's scores of its stored clean frames that M classifies correctly,
//! sealed again. Shared by the stream-alarm tests of the GStreamer element
//! and the C ABI (included with `#[path]`; needs `badexpert-frames`).

use std::path::{Path, PathBuf};

use badexpert_runtime::manifest::MANIFEST_FILE;
use badexpert_runtime::{Guard, GuardBundle, PixelLayout};

pub fn copy_with_calibration_scores(bundle: &Path, name: &str) -> PathBuf {
    let copy = std::env::temp_dir().join(format!("badexpert-calibrated-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(bundle).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let opened = GuardBundle::open(&copy).unwrap();
    let stored = badexpert_frames::clean_frames(&opened).unwrap().expect("the bundle stores clean frames");
    let mut guard = Guard::new(&opened).unwrap();
    let mut manifest = opened.manifest().clone();
    manifest.decision.calibration_scores = (0..stored.len())
        .map(|i| guard.guard(stored.frame(i), PixelLayout::Chw).unwrap())
        .zip(stored.labels().unwrap())
        .filter(|(v, &label)| v.class as u32 == label)
        .map(|(v, _)| v.score)
        .collect();
    manifest.write(&copy.join(MANIFEST_FILE)).unwrap();
    copy
}
