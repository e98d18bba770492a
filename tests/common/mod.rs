//! Shared set-up for the end-to-end tests: the shipped demo and one
//! conversion of it, made once per test binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use badexpert_converter::{convert, ConvertOptions, Conversion};
use badexpert_runtime::data::FrameSource;
use badexpert_runtime::FrameSet;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn demo_dir() -> PathBuf {
    root().join("models/badnet-fmnist")
}

pub fn load(path: &Path) -> FrameSet {
    FrameSource::detect(path).load().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn reserve() -> FrameSet {
    load(&demo_dir().join("reserve-images-idx3-ubyte.gz"))
}

/// Fashion-MNIST as Debian installs it (scripts/test.sh installs it).
pub fn fashion_mnist_dir() -> PathBuf {
    std::env::var_os("BADEXPERT_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"))
}

/// The demo model converted with the default options from its shipped reserve
/// (libtorch tensors are not Sync, hence the lock).
pub fn demo_conversion() -> MutexGuard<'static, Conversion> {
    static CONVERSION: OnceLock<Mutex<Conversion>> = OnceLock::new();
    let lock = CONVERSION.get_or_init(|| {
        tch::set_num_threads(2);
        let out = std::env::temp_dir().join(format!("badexpert-e2e-{}", std::process::id())).join("bundle");
        let model = demo_dir().join("model.onnx");
        let norm = badexpert_converter::onnx::normalization_metadata(&badexpert_converter::onnx::read_model(&model).unwrap())
            .unwrap()
            .expect("demo model records its normalisation");
        let mut opts = ConvertOptions::new(norm);
        opts.device = tch::Device::Cpu;
        opts.overwrite = true;
        opts.store_clean = 200;
        Mutex::new(convert(&model, &reserve(), &out, &opts, &()).expect("demo conversion"))
    });
    lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
