//! Shared set-up for the end-to-end tests: the shipped demo and one
//! conversion of it, made once per test binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use badexpert_converter::{convert, Conversion, ConvertOptions};
use badexpert_frames::FrameSource;
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
        let norm =
            badexpert_converter::onnx::normalization_metadata(&badexpert_converter::onnx::read_model(&model).unwrap())
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

/// The range the realised clean FPR of a conformal threshold falls in with
/// probability 99.8 %: τ is the j-th smallest of `n` calibration scores, j =
/// ⌊target·(n+1)⌋, so a new clean frame's rejection probability is
/// Beta(j, n + 1 − j) distributed (its 0.1 % and 99.9 % quantiles).
/// A bound from the method, not from one machine's figure.
pub fn conformal_fpr_range(n: usize, target: f64) -> (f64, f64) {
    let j = (target * (n + 1) as f64).floor().max(1.0);
    let (a, b) = (j, (n + 1) as f64 - j);
    let ln_norm = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b);
    // The CDF on a fine grid (midpoint rule) over [0, 0.2], where all the mass lies.
    let steps = 200_000;
    let h = 0.2 / steps as f64;
    let (mut cdf, mut lo, mut hi) = (0.0, 0.0, 0.2);
    for i in 0..steps {
        let x = (i as f64 + 0.5) * h;
        let before = cdf;
        cdf += (ln_norm + (a - 1.0) * x.ln() + (b - 1.0) * (1.0 - x).ln()).exp() * h;
        if before < 0.001 && cdf >= 0.001 {
            lo = x;
        }
        if before < 0.999 && cdf >= 0.999 {
            hi = x;
        }
    }
    (lo, hi)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + 7.5;
    let series: f64 = C[0] + C[1..].iter().enumerate().map(|(i, c)| c / (x + i as f64 + 1.0)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}
