//! Where a bundle goes: `--overwrite` replaces only a bundle (or an empty
//! directory), and the new bundle is assembled beside the destination and
//! moved into place whole, so a crash or a kill mid-conversion leaves the
//! old bundle as it was and never deletes a user's files. [`BundleWriter`]
//! is the one way the converter and the lab write a bundle.

use std::path::{Path, PathBuf};

use badexpert_runtime::camera::CameraPreprocessing;
use badexpert_runtime::manifest::{
    Decision, FileDigest, FineTuneRecord, InputSpec, Plans, Precision, FORMAT_VERSION, MANIFEST_FILE,
};
use badexpert_runtime::seal::SEAL_FILE;
use badexpert_runtime::{sha256_file, FrameShape, Manifest, Normalization};

use crate::signing::{write_seal, SecretKey};
use crate::{Error, Result};

/// A bundle being written: files go into a staging directory beside the
/// destination; [`BundleWriter::finish`] writes the manifest and its seal
/// last and moves the whole directory into place. Dropped unfinished (an
/// error on the way), it removes the staging directory.
pub struct BundleWriter {
    staging: PathBuf,
    out: PathBuf,
    overwrite: bool,
    finished: bool,
}

impl BundleWriter {
    /// Checks that `out` may be written ([`check_destination`]) and makes
    /// the staging directory.
    pub fn new(out: &Path, overwrite: bool) -> Result<BundleWriter> {
        check_destination(out, overwrite)?;
        let staging = staging_dir(out)?;
        Ok(BundleWriter { staging, out: out.to_owned(), overwrite, finished: false })
    }

    /// The staging directory, for steps that read the bundle as written so far.
    pub fn dir(&self) -> &Path {
        &self.staging
    }

    /// Copies `from` into the bundle as `file` and returns its digest.
    pub fn copy(&self, from: &Path, file: &str) -> Result<FileDigest> {
        std::fs::copy(from, self.staging.join(file)).map_err(|e| Error::io(self.staging.join(file), e))?;
        self.digest(file)
    }

    /// The digest of a file already written into the bundle.
    pub fn digest(&self, file: &str) -> Result<FileDigest> {
        Ok(FileDigest { file: file.into(), sha256: sha256_file(&self.staging.join(file))? })
    }

    /// Writes `manifest` (sealed) into the staging directory, so that the
    /// runtime can open the bundle before it is finished (calibration).
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        Ok(manifest.write(&self.staging.join(MANIFEST_FILE))?)
    }

    /// Writes `manifest` and its seal (signed with `key` when given) and
    /// moves the bundle into place.
    pub fn finish(mut self, manifest: &Manifest, key: Option<&SecretKey>) -> Result<PathBuf> {
        self.write_manifest(manifest)?;
        if key.is_some() {
            write_seal(&self.staging, manifest, key)?;
        }
        move_into_place(&self.staging, &self.out, self.overwrite)?;
        self.finished = true;
        Ok(self.out.clone())
    }
}

/// What every bundle's manifest states: the one place a manifest for
/// writing is built ([`NewManifest::build`]). The other fields start at
/// their plain values — NCHW input, the default camera preprocessing, f32
/// plans, no int8 scales, no stored frames, no scan — for the caller to set.
pub struct NewManifest<'a> {
    pub shape: FrameShape,
    pub normalization: Normalization,
    pub classes: Vec<String>,
    pub decision: Decision,
    pub plans: Plans,
    /// The model the plans were made from (its name and sha256 are recorded).
    pub source_model: &'a Path,
    pub fine_tune: FineTuneRecord,
    /// The tool and version that wrote the bundle.
    pub created_by: String,
}

impl NewManifest<'_> {
    pub fn build(self) -> Result<Manifest> {
        let source = self.source_model;
        Ok(Manifest {
            format_version: FORMAT_VERSION,
            input: InputSpec { shape: self.shape, layout: "NCHW".into() },
            normalization: self.normalization,
            camera: CameraPreprocessing::default(),
            classes: self.classes,
            precision: Precision::F32,
            int8: None,
            decision: self.decision,
            plans: self.plans,
            clean_frames: None,
            scan: None,
            source_model: FileDigest {
                file: source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                sha256: sha256_file(source)?,
            },
            fine_tune: self.fine_tune,
            created_by: self.created_by,
        })
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Files a bundle may hold besides the ones its manifest names.
const BUNDLE_FILES: &[&str] = &[MANIFEST_FILE, SEAL_FILE];

/// Checks, before any work, that `out` may be written: absent, or (with
/// `overwrite`) an empty directory or a bundle holding nothing but the files
/// its manifest names.
pub fn check_destination(out: &Path, overwrite: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !overwrite {
        return Err(Error::Invalid(format!("{} already exists; pass --overwrite to replace it", out.display())));
    }
    if !out.is_dir() {
        return Err(Error::Invalid(format!("{} is a file, not a bundle; not replacing it", out.display())));
    }
    let strangers = foreign_files(out)?;
    if !strangers.is_empty() {
        let shown: Vec<_> = strangers.iter().take(5).map(|p| p.display().to_string()).collect();
        let what = if out.join(MANIFEST_FILE).is_file() { "this bundle's files" } else { "a bundle's files" };
        return Err(Error::Invalid(format!(
            "--overwrite replaces only a bundle or an empty directory, and {} holds files that are not {what}: {}{}; not deleting them",
            out.display(),
            shown.join(", "),
            if strangers.len() > shown.len() { format!(" and {} more", strangers.len() - shown.len()) } else { String::new() }
        )));
    }
    Ok(())
}

/// The entries of `dir` that are not files of the bundle its manifest
/// describes (all of them when it has no readable manifest).
fn foreign_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut known: Vec<String> = BUNDLE_FILES.iter().map(|s| s.to_string()).collect();
    if let Ok(text) = std::fs::read_to_string(dir.join(MANIFEST_FILE)) {
        // Read leniently: a bundle of another version is still ours to replace.
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let mut files = Vec::new();
        collect_files(&value, &mut files);
        known.extend(files);
    } else {
        known.clear();
    }
    let mut strangers = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map_err(|e| Error::io(entry.path(), e))?.is_file();
        if !(is_file && known.contains(&name)) {
            strangers.push(entry.path());
        }
    }
    strangers.sort();
    Ok(strangers)
}

/// Every `"file"` string in a manifest (plans, stored frames, source model).
fn collect_files(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("file", serde_json::Value::String(s)) if !s.contains('/') => out.push(s.clone()),
                    _ => collect_files(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_files(v, out)),
        _ => {}
    }
}

/// A fresh staging directory beside `out` (hidden, named after it and this process).
pub fn staging_dir(out: &Path) -> Result<PathBuf> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let staging = parent.join(format!(
        ".{}.partial-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("bundle"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    Ok(staging)
}

/// Moves the finished `staging` directory to `out`. An existing `out` (checked
/// replaceable again: it may have changed during the conversion) is first
/// renamed aside and deleted only once the new bundle is in place, so at
/// every instant `out` is the old bundle or the new one, whole.
pub fn move_into_place(staging: &Path, out: &Path, overwrite: bool) -> Result<()> {
    if let Err(e) = check_destination(out, overwrite) {
        let _ = std::fs::remove_dir_all(staging);
        return Err(e);
    }
    if !out.exists() {
        return std::fs::rename(staging, out).map_err(|e| Error::io(out, e));
    }
    let mut aside = staging.as_os_str().to_owned();
    aside.push(".old");
    let aside = PathBuf::from(aside);
    let _ = std::fs::remove_dir_all(&aside);
    std::fs::rename(out, &aside).map_err(|e| Error::io(out, e))?;
    if let Err(e) = std::fs::rename(staging, out) {
        // Put the old bundle back rather than leave nothing.
        let _ = std::fs::rename(&aside, out);
        return Err(Error::io(out, e));
    }
    let _ = std::fs::remove_dir_all(&aside);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("badexpert-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn an_unfinished_bundle_leaves_nothing_and_a_finished_one_lands_whole() {
        let dir = scratch("writer");
        let out = dir.join("bundle");
        let writer = BundleWriter::new(&out, false).unwrap();
        let staging = writer.dir().to_owned();
        std::fs::write(staging.join("x.bin"), b"plan").unwrap();
        assert_eq!(writer.digest("x.bin").unwrap().sha256.len(), 64);
        drop(writer);
        assert!(!staging.exists() && !out.exists(), "dropped unfinished: nothing left");

        let manifest: Manifest =
            serde_json::from_str(include_str!("../../models/badnet-fmnist/bundle/manifest.json")).unwrap();
        let writer = BundleWriter::new(&out, false).unwrap();
        std::fs::write(writer.dir().join("x.bin"), b"plan").unwrap();
        assert_eq!(writer.finish(&manifest, None).unwrap(), out);
        assert!(out.join(MANIFEST_FILE).is_file() && out.join(SEAL_FILE).is_file() && out.join("x.bin").is_file());
        assert!(BundleWriter::new(&out, false).is_err(), "an existing bundle needs overwrite");
    }
}
