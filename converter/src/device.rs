//! Where the fine-tunes run: `--device auto|cpu|cuda`. `cuda` is refused
//! with the reason when this libtorch cannot reach a GPU; `auto` takes CUDA
//! when it can and says so either way — it never falls back silently.
//!
//! On CUDA the seeds still fix the split, the shuffles and the
//! augmentation, but cuDNN's convolution kernels and the atomic additions
//! of backward passes reorder float sums: B and M′ differ in their last bits
//! from run to run and from the CPU's, so bundles are reproducible in
//! quality, not bit for bit (cuDNN's autotuner is turned off so at least
//! the kernel choice does not vary). The CPU path is bit-reproducible for
//! a given libtorch kernel set (`ATEN_CPU_CAPABILITY`) and thread count.

use tch::Device;

use crate::{Error, Result};

/// The device asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA when available, else the CPU (logged).
    #[default]
    Auto,
    Cpu,
    /// CUDA device 0, or an error saying why not.
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            _ => Err(format!("unknown device {s:?} (auto, cpu or cuda)")),
        }
    }
}

/// Why CUDA cannot be used here, or `None` when it can.
pub fn cuda_unavailable() -> Option<String> {
    if !tch::utils::has_cuda() {
        return Some(
            "this libtorch has no CUDA support (a CPU build, libtorch_cuda not linked, or no NVIDIA \
             driver: set up a CUDA libtorch with BADEXPERT_TORCH=cuda, docs/gpu.md)"
                .into(),
        );
    }
    if !tch::Cuda::is_available() {
        return Some(
            "libtorch has CUDA support but finds no usable GPU (driver, device or CUDA_VISIBLE_DEVICES)".into(),
        );
    }
    None
}

impl DeviceChoice {
    /// The device to train on; logs what was chosen and why.
    pub fn resolve(self) -> Result<Device> {
        let device = match (self, cuda_unavailable()) {
            (DeviceChoice::Cpu, _) => Device::Cpu,
            (DeviceChoice::Cuda, Some(why)) => return Err(Error::Invalid(format!("--device cuda: {why}"))),
            (DeviceChoice::Cuda | DeviceChoice::Auto, None) => Device::Cuda(0),
            (DeviceChoice::Auto, Some(why)) => {
                log::warn!("training on the CPU: {why}");
                Device::Cpu
            }
        };
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(false);
            log::info!("training on CUDA device 0 ({} device(s) visible)", tch::Cuda::device_count());
        } else {
            log::info!("training on the CPU ({} libtorch threads)", tch::get_num_threads());
        }
        Ok(device)
    }
}
