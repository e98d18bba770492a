//! Trainable normalisation for convolutions that have none.
//!
//! `torch.onnx.export` in eval mode (its default) and the dynamo exporter fold
//! BatchNorm into the convolutions, which leaves the paper's train-mode recipe
//! nothing to normalise with: SGD at M′'s rate diverges on such a graph
//! (docs/design.md §3.4b). Each convolution whose output feeds no BatchNorm gets one
//! back, initialised from the clean reserve's activation statistics (running
//! mean μ and variance σ², γ = √(σ² + ε), β = μ) so that the model computes
//! what it computed before, in eval mode exactly and in train mode up to the
//! batch's deviation from the reserve. Export folds it into the convolution's
//! weight and bias, so the plans keep the source model's structure.

use tch::{nn, Kind, Tensor};

/// ε and momentum of PyTorch's `nn.BatchNorm2d` defaults.
const EPSILON: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

/// One restored BatchNorm after a convolution with `channels` outputs.
pub(crate) struct RestoredNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

/// Per-channel sums of a convolution's outputs over the reserve.
pub(crate) struct Moments {
    sum: Tensor,
    sum_sq: Tensor,
    count: f64,
}

impl Moments {
    pub(crate) fn new(channels: i64) -> Self {
        let zeros = || Tensor::zeros([channels], (Kind::Double, tch::Device::Cpu));
        Moments { sum: zeros(), sum_sq: zeros(), count: 0.0 }
    }

    /// Adds an `[N, C, H, W]` batch of outputs.
    pub(crate) fn add(&mut self, y: &Tensor) -> Result<(), tch::TchError> {
        let y = y.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?;
        let axes = [0i64, 2, 3];
        self.sum = self.sum.f_add(&y.f_sum_dim_intlist(axes.as_slice(), false, Kind::Double)?)?;
        self.sum_sq = self.sum_sq.f_add(&y.f_square()?.f_sum_dim_intlist(axes.as_slice(), false, Kind::Double)?)?;
        let size = y.size();
        self.count += (size[0] * size[2] * size[3]) as f64;
        Ok(())
    }
}

impl RestoredNorm {
    /// An identity normalisation (γ = 1, β = 0, μ = 0, σ² = 1 − ε) over
    /// `channels`, its γ and β trainable variables under `path`.
    pub(crate) fn identity(path: nn::Path, channels: i64) -> Result<Self, tch::TchError> {
        let device = path.device();
        let options = (Kind::Float, device);
        Ok(RestoredNorm {
            weight: path.f_var_copy("weight", &Tensor::ones([channels], options))?,
            bias: path.f_var_copy("bias", &Tensor::zeros([channels], options))?,
            running_mean: Tensor::zeros([channels], options),
            running_var: Tensor::full([channels], 1.0 - EPSILON, options),
        })
    }

    /// Sets μ, σ² from the reserve's moments and γ, β so that the
    /// normalisation is the identity in eval mode.
    pub(crate) fn set_statistics(&mut self, m: &Moments) -> Result<(), tch::TchError> {
        if m.count == 0.0 {
            return Ok(());
        }
        let device = self.running_mean.device();
        let mean = m.sum.f_div_scalar(m.count)?;
        let var = m.sum_sq.f_div_scalar(m.count)?.f_sub(&mean.f_square()?)?.f_clamp_min(0.0)?;
        let (mean, var) =
            (mean.f_to_kind(Kind::Float)?.f_to_device(device)?, var.f_to_kind(Kind::Float)?.f_to_device(device)?);
        let std = var.f_add_scalar(EPSILON)?.f_sqrt()?;
        tch::no_grad(|| -> Result<(), tch::TchError> {
            self.running_mean.f_copy_(&mean)?;
            self.running_var.f_copy_(&var)?;
            self.weight.f_copy_(&std)?;
            self.bias.f_copy_(&mean)?;
            Ok(())
        })
    }

    /// Normalises a convolution's output: batch statistics (updating the
    /// running ones) in train mode, the running ones otherwise.
    pub(crate) fn apply(&self, x: &Tensor, train: bool) -> Result<Tensor, tch::TchError> {
        x.f_batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            MOMENTUM,
            EPSILON,
            false,
        )
    }

    /// The convolution's weight `[O, I/g, kh, kw]` and bias `[O]` with this
    /// normalisation folded in (eval mode): W·s and (b − μ)·s + β, s = γ/√(σ² + ε).
    pub(crate) fn fold(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<(Tensor, Tensor), tch::TchError> {
        tch::no_grad(|| {
            let s = self.weight.f_div(&self.running_var.f_add_scalar(EPSILON)?.f_sqrt()?)?;
            let folded_weight = weight.f_mul(&s.f_reshape([-1, 1, 1, 1])?)?;
            let b = match bias {
                Some(b) => b.shallow_clone(),
                None => self.running_mean.f_zeros_like()?,
            };
            let folded_bias = b.f_sub(&self.running_mean)?.f_mul(&s)?.f_add(&self.bias)?;
            Ok((folded_weight, folded_bias))
        })
    }
}
