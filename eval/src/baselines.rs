//! The input-perturbation detectors BaDExpert is compared with (docs/design.md
//! §3.6), on the suspect model M alone, so a device can run them too. Both
//! batch their perturbed copies into one plan run. Scores follow one
//! convention: **higher means more suspicious**.

use std::sync::Arc;

use tract_core::internal::*;

use badexpert_runtime::advanced::{input_slice, output_f32};
use badexpert_runtime::score::argmax;
use badexpert_runtime::{Error, FrameSet, Result};
use badexpert_runtime::{GuardBundle, Preprocessor, Role};

/// A batch-N model runner with its input tensor.
struct BatchRunner {
    state: TypedSimpleState,
    input: Arc<Tensor>,
    batch: usize,
    classes: usize,
}

impl BatchRunner {
    fn new(bundle: &GuardBundle, batch: usize) -> Result<Self> {
        let plan = badexpert_runtime::advanced::plan_with_batch(bundle, Role::Model, batch)?;
        let s = bundle.manifest().input.shape;
        let fail = |e: TractError| Error::Inference { model: "model", reason: format!("{e:#}") };
        Ok(BatchRunner {
            state: plan.spawn().map_err(fail)?,
            input: badexpert_runtime::advanced::input_tensor(batch, s)?,
            batch,
            classes: bundle.manifest().classes.len(),
        })
    }

    fn input(&mut self) -> &mut [f32] {
        input_slice(&mut self.input)
    }

    /// Runs the batch and hands each copy's logits to `each`.
    fn run(&mut self, mut each: impl FnMut(usize, &[f32])) -> Result<()> {
        let fail = |reason: String| Error::Inference { model: "model", reason };
        let out = self.state.run(tvec![TValue::from_const(self.input.clone())]).map_err(|e| fail(format!("{e:#}")))?;
        let logits = output_f32(&out[0]).map_err(|e| fail(e.to_string()))?;
        if logits.len() != self.batch * self.classes {
            return Err(fail(format!("{} logits for batch {} × {} classes", logits.len(), self.batch, self.classes)));
        }
        for (i, l) in logits.chunks_exact(self.classes).enumerate() {
            each(i, l);
        }
        Ok(())
    }
}

/// Shannon entropy of softmax(logits), in nats.
fn softmax_entropy(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    logits
        .iter()
        .map(|&v| {
            let p = (v - max).exp() / sum;
            if p > 0.0 {
                -p * p.ln()
            } else {
                0.0
            }
        })
        .sum()
}

/// STRIP (Gao et al., 2019): superimpose the frame with N clean frames
/// (pixel sum, clamped); a trigger keeps the prediction fixed, so low mean
/// entropy means backdoor. Score = −mean entropy.
pub struct Strip {
    runner: BatchRunner,
    pre: Preprocessor,
    clean: FrameSet,
    next: usize,
    mix: Vec<u8>,
}

impl Strip {
    pub const DEFAULT_N: usize = 100;

    /// `clean` supplies the overlays, taken in turn.
    pub fn new(bundle: &GuardBundle, clean: FrameSet, n: usize) -> Result<Self> {
        let m = bundle.manifest();
        if clean.is_empty() || n == 0 {
            return Err(Error::Invalid("STRIP needs at least one clean frame and N ≥ 1".into()));
        }
        if clean.shape() != m.input.shape {
            return Err(Error::Frame(format!(
                "STRIP clean frames are {}, the bundle takes {}",
                clean.shape(),
                m.input.shape
            )));
        }
        Ok(Strip {
            runner: BatchRunner::new(bundle, n)?,
            pre: Preprocessor::new(&m.normalization, m.input.shape)?,
            mix: vec![0; m.input.shape.len()],
            clean,
            next: 0,
        })
    }

    pub fn score(&mut self, frame: &[u8]) -> Result<f32> {
        let len = self.mix.len();
        if frame.len() != len {
            return Err(Error::Frame(format!("{} pixel values, the bundle expects {len}", frame.len())));
        }
        let n = self.runner.batch;
        for k in 0..n {
            let overlay = self.clean.frame(self.next);
            self.next = (self.next + 1) % self.clean.len();
            for ((m, &a), &b) in self.mix.iter_mut().zip(frame).zip(overlay) {
                *m = a.saturating_add(b);
            }
            let input = self.runner.input();
            self.pre.planar_into(&self.mix, &mut input[k * len..(k + 1) * len])?;
        }
        let mut total = 0.0;
        self.runner.run(|_, logits| total += softmax_entropy(logits))?;
        Ok(-total / n as f32)
    }
}

/// SCALE-UP (Guo et al., 2023): amplify pixel values ×3, 5, 7, 9, 11
/// (clamped); triggered frames keep their prediction under amplification.
/// Score = fraction of amplified copies predicted as the original class.
pub struct ScaleUp {
    runner: BatchRunner,
    pre: Preprocessor,
    scaled: Vec<u8>,
}

impl ScaleUp {
    pub const FACTORS: [u16; 5] = [3, 5, 7, 9, 11];

    pub fn new(bundle: &GuardBundle) -> Result<Self> {
        let m = bundle.manifest();
        Ok(ScaleUp {
            runner: BatchRunner::new(bundle, Self::FACTORS.len() + 1)?,
            pre: Preprocessor::new(&m.normalization, m.input.shape)?,
            scaled: vec![0; m.input.shape.len()],
        })
    }

    pub fn score(&mut self, frame: &[u8]) -> Result<f32> {
        let len = self.scaled.len();
        if frame.len() != len {
            return Err(Error::Frame(format!("{} pixel values, the bundle expects {len}", frame.len())));
        }
        self.pre.planar_into(frame, &mut self.runner.input()[..len])?;
        for (k, &f) in Self::FACTORS.iter().enumerate() {
            for (s, &v) in self.scaled.iter_mut().zip(frame) {
                *s = (v as u16 * f).min(255) as u8;
            }
            let input = self.runner.input();
            self.pre.planar_into(&self.scaled, &mut input[(k + 1) * len..(k + 2) * len])?;
        }
        let (mut original, mut same) = (0, 0);
        self.runner.run(|i, logits| {
            let class = argmax(logits);
            if i == 0 {
                original = class;
            } else if class == original {
                same += 1;
            }
        })?;
        Ok(same as f32 / Self::FACTORS.len() as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::softmax_entropy;

    #[test]
    fn entropy_is_zero_for_certainty_and_ln_k_for_uniform() {
        assert!(softmax_entropy(&[1000.0, 0.0, 0.0]) < 1e-6);
        assert!((softmax_entropy(&[0.0; 10]) - 10f32.ln()).abs() < 1e-5);
    }
}
