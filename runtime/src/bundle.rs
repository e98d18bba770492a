//! A guard bundle on disk: `manifest.json`, its seal (`seal.json`) and three
//! tract NNEF plans; the seal and every file's sha256 are verified before
//! tract sees a byte of a plan.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_core::prelude::*;
use tract_onnx_opl::WithOnnx;

use crate::manifest::{FileDigest, Manifest, MANIFEST_FILE};
use crate::seal::{Seal, SealStatus, TrustedKey};
use crate::{Error, Result};

/// Name of the symbolic batch axis in every plan.
pub const BATCH_SYMBOL: &str = "N";

/// An optimized, runnable tract plan (shareable across threads).
pub type Plan = Arc<TypedRunnableModel>;

/// How a bundle's plans are built at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Frames per plan run.
    pub batch: usize,
    /// Replace the ops badexpert has faster kernels for (`badexpert-kernels`);
    /// off gives tract's plan as is, to measure what the kernels bring.
    pub own_kernels: bool,
    /// Load only bundles signed by this key ([`crate::seal`]); without one,
    /// the seal's digest is still checked, and a signature against its own key.
    pub trusted_key: Option<TrustedKey>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { batch: 1, own_kernels: true, trusted_key: None }
    }
}

/// The three models of a guard, ready to run.
#[derive(Debug, Clone)]
pub struct GuardBundle {
    dir: PathBuf,
    manifest: Manifest,
    seal: SealStatus,
    options: LoadOptions,
    model: Plan,
    expert: Plan,
    auxiliary: Plan,
}

impl GuardBundle {
    /// Opens a bundle directory with plans for one frame at a time.
    pub fn open(dir: impl AsRef<Path>) -> Result<GuardBundle> {
        Self::open_with(dir, LoadOptions::default())
    }

    /// Opens a bundle directory with plans that take `batch` frames per run.
    pub fn open_with_batch(dir: impl AsRef<Path>, batch: usize) -> Result<GuardBundle> {
        Self::open_with(dir, LoadOptions { batch, ..LoadOptions::default() })
    }

    /// Opens a bundle directory with plans built as `options` say.
    pub fn open_with(dir: impl AsRef<Path>, options: LoadOptions) -> Result<GuardBundle> {
        let dir = dir.as_ref().to_owned();
        if !dir.exists() {
            return Err(Error::format(&dir, "guard bundle", "no such directory"));
        }
        if !dir.is_dir() {
            return Err(Error::format(&dir, "guard bundle", "a file, not a bundle directory"));
        }
        if options.batch == 0 {
            return Err(Error::Invalid("batch size must be at least 1".into()));
        }
        let manifest = Manifest::read(&dir.join(MANIFEST_FILE))?;
        // Verify everything before loading anything: the seal covers the
        // manifest's values, the manifest every file's sha256.
        let seal = Seal::read(&dir)?.check(&dir, &manifest, options.trusted_key)?;
        verify_files(&dir, &manifest)?;
        let plans = &manifest.plans;
        if manifest.precision == crate::manifest::Precision::F16 && cfg!(target_arch = "x86_64") {
            log::warn!(
                "{}: f16 plans run through tract's generic kernels on x86-64, two orders of magnitude slower than f32; f16 is for ARMv8.2+ devices",
                dir.display()
            );
        }
        if manifest.precision == crate::manifest::Precision::Int8 && !options.own_kernels {
            log::warn!("{}: int8 runs in badexpert's kernels; without them the plans run in f32", dir.display());
        }
        let loader = PlanLoader::new(&manifest, options);
        let model = loader.load(&dir.join(&plans.model.file), Role::Model)?;
        let expert = loader.load(&dir.join(&plans.expert.file), Role::Expert)?;
        let auxiliary = loader.load(&dir.join(&plans.auxiliary.file), Role::Auxiliary)?;
        Ok(GuardBundle { dir, manifest, seal, options, model, expert, auxiliary })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the seal check at load established (digest, signer, trusted).
    pub fn seal(&self) -> &SealStatus {
        &self.seal
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Frames per plan run.
    pub fn batch(&self) -> usize {
        self.options.batch
    }

    /// One of the plans for another batch size (the file is verified again).
    pub(crate) fn plan_with_batch(&self, role: Role, batch: usize) -> Result<Plan> {
        let digest = match role {
            Role::Model => &self.manifest.plans.model,
            Role::Expert => &self.manifest.plans.expert,
            Role::Auxiliary => &self.manifest.plans.auxiliary,
        };
        verify(&self.dir, digest)?;
        PlanLoader::new(&self.manifest, LoadOptions { batch, ..self.options }).load(&self.dir.join(&digest.file), role)
    }

    /// The path of one of the bundle's files, after checking its sha256
    /// against `digest` (from the manifest).
    pub fn verified_file(&self, digest: &FileDigest) -> Result<PathBuf> {
        verify(&self.dir, digest)?;
        Ok(self.dir.join(&digest.file))
    }

    /// One of the three plans.
    pub(crate) fn plan(&self, role: Role) -> &Plan {
        match role {
            Role::Model => &self.model,
            Role::Expert => &self.expert,
            Role::Auxiliary => &self.auxiliary,
        }
    }

    /// A fresh tract state for one of the plans (one per thread that runs it).
    pub(crate) fn spawn(&self, role: Role) -> Result<TypedSimpleState> {
        self.plan(role).spawn().map_err(|e| Error::Inference { model: role.name(), reason: e.to_string() })
    }
}

/// The three models of a guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The suspect model M.
    Model,
    /// The backdoor expert B.
    Expert,
    /// The auxiliary model M′.
    Auxiliary,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Model, Role::Expert, Role::Auxiliary];

    /// The name errors and reports use for this model.
    pub fn name(self) -> &'static str {
        match self {
            Role::Model => "model",
            Role::Expert => "expert",
            Role::Auxiliary => "auxiliary",
        }
    }
}

/// Checks every file the manifest names (plans, stored clean frames)
/// against its sha256.
pub fn verify_files(dir: &Path, manifest: &Manifest) -> Result<()> {
    let plans = &manifest.plans;
    let clean = manifest.clean_frames.iter().flat_map(|c| [&c.images, &c.labels]);
    for digest in [&plans.model, &plans.expert, &plans.auxiliary].into_iter().chain(clean) {
        verify(dir, digest)?;
    }
    Ok(())
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn verify(dir: &Path, digest: &FileDigest) -> Result<()> {
    let path = dir.join(&digest.file);
    let actual = sha256_file(&path)?;
    if !actual.eq_ignore_ascii_case(&digest.sha256) {
        return Err(Error::HashMismatch { path, expected: digest.sha256.clone(), actual });
    }
    Ok(())
}

/// Loads NNEF archives into optimized plans for the manifest's input shape.
pub(crate) struct PlanLoader<'m> {
    nnef: tract_nnef::internal::Nnef,
    input: [usize; 4],
    classes: usize,
    own_kernels: bool,
    int8: Option<&'m crate::manifest::Int8Scales>,
}

impl<'m> PlanLoader<'m> {
    pub(crate) fn new(manifest: &'m Manifest, options: LoadOptions) -> Self {
        let s = manifest.input.shape;
        PlanLoader {
            nnef: tract_nnef::nnef().with_onnx(),
            input: [options.batch, s.channels, s.height, s.width],
            classes: manifest.classes.len(),
            own_kernels: options.own_kernels,
            int8: manifest.int8.as_ref(),
        }
    }

    /// The plan of `role` at `path`, optimized (with its int8 scales, if any).
    fn load(&self, path: &Path, role: Role) -> Result<Plan> {
        let fail = |reason: String| Error::Plan { path: path.to_owned(), reason };
        let model = self.typed(path)?;
        let int8 = self.int8.map(|scales| match role {
            Role::Model => &scales.model,
            Role::Expert => &scales.expert,
            Role::Auxiliary => &scales.auxiliary,
        });
        let model =
            if self.own_kernels { badexpert_kernels::optimize_with(model, int8) } else { model.into_optimized() };
        let model = model.map_err(|e| fail(format!("cannot optimize: {e:#}")))?;
        model.into_runnable().map_err(|e| fail(format!("cannot plan: {e:#}")))
    }

    /// The plan at `path` as read, checked against the manifest, for the batch size.
    pub(crate) fn typed(&self, path: &Path) -> Result<TypedModel> {
        let fail = |reason: String| Error::Plan { path: path.to_owned(), reason };
        let model = self.nnef.model_for_path(path).map_err(|e| fail(format!("cannot read NNEF: {e:#}")))?;
        let subs = HashMap::from([(model.sym(BATCH_SYMBOL), TDim::Val(self.input[0] as i64))]);
        let model = model.set_symbols(&subs).map_err(|e| fail(format!("cannot fix the batch size: {e:#}")))?;
        if model.inputs.len() != 1 || model.outputs.len() != 1 {
            return Err(fail(format!(
                "{} inputs and {} outputs; a classifier plan has one of each",
                model.inputs.len(),
                model.outputs.len()
            )));
        }
        let shape_of = |fact: TypedFact| fact.shape.as_concrete().map(|s| s.to_vec());
        let input = model.input_fact(0).map_err(|e| fail(e.to_string()))?.clone();
        if input.datum_type != f32::datum_type() || shape_of(input.clone()).as_deref() != Some(&self.input[..]) {
            return Err(fail(format!("input is {input:?}, the manifest says f32 {:?}", self.input)));
        }
        let output = model.output_fact(0).map_err(|e| fail(e.to_string()))?.clone();
        if shape_of(output.clone()).as_deref() != Some(&[self.input[0], self.classes][..]) {
            return Err(fail(format!(
                "output is {output:?}, the manifest lists {} classes for batch {}",
                self.classes, self.input[0]
            )));
        }
        Ok(model)
    }
}
