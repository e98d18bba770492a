//! Backdoor triggers as data transforms (docs/design.md §4): used both to poison a
//! training set (to make backdoored models for evaluation) and to make the
//! triggered copy of a test set. Sizes are given for 32×32 and scaled to the
//! frame; every random pattern is fixed by a seed, so a trigger is the same
//! in training and at test time.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use badexpert_runtime::{FrameSet, FrameShape};

use badexpert_converter::{Error, Result};

/// A backdoor attack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attack {
    /// 3×3 black/white checkerboard in the bottom-right corner; dirty label.
    BadNet,
    /// A fixed random-noise pattern blended in with opacity `alpha`; dirty label.
    Blend { alpha: f32 },
    /// An 8×8 (at 32×32) fixed random-colour patch one pixel in from the bottom-right; dirty label.
    Trojan,
    /// A horizontal sinusoid (amplitude 30/255, 6 periods across) added to
    /// target-class images only; clean label.
    Sig,
    /// A smooth random warp (control grid k = 4, strength s = 0.5); dirty
    /// label, plus "noise mode" frames warped with extra noise that keep their labels.
    WaNet,
}

/// Blend's training opacity.
pub const BLEND_ALPHA: f32 = 0.2;
const PATTERN_SEED: u64 = 0x0bad_e1e7;

impl std::str::FromStr for Attack {
    type Err = String;
    /// `badnet`, `blend`, `blend@0.1` (opacity), `trojan`, `sig`, `wanet`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.to_ascii_lowercase();
        let (name, arg) = s.split_once('@').map_or((s.as_str(), None), |(n, a)| (n, Some(a)));
        let attack = match name {
            "badnet" => Attack::BadNet,
            "blend" => {
                let alpha =
                    arg.map_or(Ok(BLEND_ALPHA), |a| a.parse::<f32>().map_err(|e| format!("blend opacity {a:?}: {e}")))?;
                if !(alpha > 0.0 && alpha <= 1.0) {
                    return Err(format!("blend opacity {alpha} must be in (0, 1]"));
                }
                return Ok(Attack::Blend { alpha });
            }
            "trojan" => Attack::Trojan,
            "sig" => Attack::Sig,
            "wanet" => Attack::WaNet,
            _ => return Err(format!("unknown attack {s:?} (known: badnet, blend[@alpha], trojan, sig, wanet)")),
        };
        match arg {
            Some(a) => Err(format!("attack {name} takes no parameter (got @{a})")),
            None => Ok(attack),
        }
    }
}

impl std::fmt::Display for Attack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attack::BadNet => f.write_str("badnet"),
            Attack::Blend { alpha } if *alpha == BLEND_ALPHA => f.write_str("blend"),
            Attack::Blend { alpha } => write!(f, "blend@{alpha}"),
            Attack::Trojan => f.write_str("trojan"),
            Attack::Sig => f.write_str("sig"),
            Attack::WaNet => f.write_str("wanet"),
        }
    }
}

/// How an attack poisons a training set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Poisoning {
    /// Triggered frames of other classes relabelled to the target.
    DirtyLabel,
    /// Triggered frames of the target class, labels untouched.
    CleanLabel,
}

impl Attack {
    pub const ALL: [Attack; 5] =
        [Attack::BadNet, Attack::Blend { alpha: BLEND_ALPHA }, Attack::Trojan, Attack::Sig, Attack::WaNet];

    pub fn poisoning(&self) -> Poisoning {
        match self {
            Attack::Sig => Poisoning::CleanLabel,
            _ => Poisoning::DirtyLabel,
        }
    }

    /// The usual poisoning rate (fraction of the training set).
    pub fn default_poison_rate(&self) -> f64 {
        match self {
            Attack::Sig => 0.02,
            Attack::WaNet => 0.05,
            _ => 0.01,
        }
    }

    /// The trigger for frames of `shape`, with its patterns precomputed.
    pub fn trigger(&self, shape: FrameShape) -> Trigger {
        let (c, h, w) = (shape.channels, shape.height, shape.width);
        let mut rng = ChaCha8Rng::seed_from_u64(PATTERN_SEED ^ self.pattern_salt());
        let kind = match *self {
            Attack::BadNet => TriggerKind::Patch(checker_patch(shape)),
            Attack::Blend { alpha } => {
                TriggerKind::Blend { alpha, pattern: (0..shape.len()).map(|_| rng.gen::<u8>()).collect() }
            }
            Attack::Trojan => {
                let side = (8 * h.min(w)).div_ceil(32);
                let inset = 1;
                let mut patch = Vec::new();
                for ch in 0..c {
                    for dy in 0..side {
                        for dx in 0..side {
                            let (y, x) = (h - inset - side + dy, w - inset - side + dx);
                            patch.push((ch * h * w + y * w + x, rng.gen::<u8>()));
                        }
                    }
                }
                TriggerKind::Patch(patch)
            }
            Attack::Sig => TriggerKind::Add(
                (0..shape.len())
                    .map(|i| {
                        let x = (i % w) as f32;
                        30.0 * (2.0 * std::f32::consts::PI * x * 6.0 / w as f32).sin()
                    })
                    .collect(),
            ),
            Attack::WaNet => TriggerKind::Warp(WarpGrid::random(h, w, &mut rng)),
        };
        Trigger { shape, kind }
    }

    fn pattern_salt(self) -> u64 {
        match self {
            Attack::BadNet => 1,
            Attack::Blend { .. } => 2,
            Attack::Trojan => 3,
            Attack::Sig => 4,
            Attack::WaNet => 5,
        }
    }

    /// A triggered copy of every frame; labels stay the true ones.
    pub fn triggered(&self, set: &FrameSet) -> FrameSet {
        let trigger = self.trigger(set.shape());
        let mut out = set.clone();
        for i in 0..out.len() {
            trigger.apply(out.frame_mut(i));
        }
        out
    }

    /// A poisoned training set. Dirty-label attacks trigger a seeded `rate`
    /// fraction of the set, taken from frames not of `target`, and relabel
    /// them; clean-label attacks trigger that many frames of `target` only.
    /// WaNet also warps twice as many other frames with extra noise and keeps
    /// their labels (its "noise mode"). Returns the set and the indices whose
    /// frames now carry the trigger.
    pub fn poison(&self, set: &FrameSet, rate: f64, target: u32, seed: u64) -> Result<(FrameSet, Vec<usize>)> {
        let labels = set.require_labels("poisoning").map_err(Error::Runtime)?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(Error::Invalid(format!("poison rate {rate} must be in [0, 1]")));
        }
        let clean_label = self.poisoning() == Poisoning::CleanLabel;
        let mut candidates: Vec<usize> = (0..set.len()).filter(|&i| (labels[i] == target) == clean_label).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        candidates.shuffle(&mut rng);
        let count = (rate * set.len() as f64).round() as usize;
        if count > candidates.len() {
            return Err(Error::Invalid(format!(
                "{self}: {count} frames to poison but only {} candidates of the right class",
                candidates.len()
            )));
        }
        let mut chosen: Vec<usize> = candidates[..count].to_vec();
        chosen.sort_unstable();
        let trigger = self.trigger(set.shape());
        let mut out = set.clone();
        for &i in &chosen {
            trigger.apply(out.frame_mut(i));
            out.labels_mut().expect("labelled")[i] = target;
        }
        if let TriggerKind::Warp(grid) = &trigger.kind {
            let mut others: Vec<usize> = (0..set.len()).filter(|i| chosen.binary_search(i).is_err()).collect();
            others.shuffle(&mut rng);
            for &i in others.iter().take(2 * count) {
                let noisy = grid.with_noise(&mut rng);
                noisy.warp(out.frame_mut(i), set.shape());
            }
        }
        Ok((out, chosen))
    }
}

/// An attack's trigger, ready to stamp on frames of one shape.
#[derive(Debug, Clone)]
pub struct Trigger {
    shape: FrameShape,
    kind: TriggerKind,
}

#[derive(Debug, Clone)]
enum TriggerKind {
    /// (pixel index, value) pairs written over the frame.
    Patch(Vec<(usize, u8)>),
    Blend {
        alpha: f32,
        pattern: Vec<u8>,
    },
    /// Added to every pixel, then clamped.
    Add(Vec<f32>),
    Warp(WarpGrid),
}

fn checker_patch(shape: FrameShape) -> Vec<(usize, u8)> {
    let (h, w) = (shape.height, shape.width);
    let side = 3.min(h).min(w);
    let mut patch = Vec::new();
    for c in 0..shape.channels {
        for dy in 0..side {
            for dx in 0..side {
                let (y, x) = (h - side + dy, w - side + dx);
                patch.push((c * h * w + y * w + x, if (dy + dx) % 2 == 0 { 255 } else { 0 }));
            }
        }
    }
    patch
}

impl Trigger {
    /// Stamps the trigger on one planar frame.
    pub fn apply(&self, frame: &mut [u8]) {
        match &self.kind {
            TriggerKind::Patch(patch) => {
                for &(i, v) in patch {
                    frame[i] = v;
                }
            }
            TriggerKind::Blend { alpha, pattern } => {
                for (v, &p) in frame.iter_mut().zip(pattern) {
                    *v = ((1.0 - alpha) * *v as f32 + alpha * p as f32).round().clamp(0.0, 255.0) as u8;
                }
            }
            TriggerKind::Add(delta) => {
                for (v, &d) in frame.iter_mut().zip(delta) {
                    *v = (*v as f32 + d).round().clamp(0.0, 255.0) as u8;
                }
            }
            TriggerKind::Warp(grid) => grid.warp(frame, self.shape),
        }
    }
}

/// WaNet's sampling grid in [-1, 1]² (x = column, y = row), as
/// `F.grid_sample(..., align_corners=True)` takes it.
#[derive(Debug, Clone)]
struct WarpGrid {
    h: usize,
    w: usize,
    /// (x, y) per output pixel, row-major.
    grid: Vec<(f32, f32)>,
}

/// PyTorch's cubic convolution coefficient.
const CUBIC_A: f32 = -0.75;

fn cubic_weights(t: f32) -> [f32; 4] {
    let a = CUBIC_A;
    let w1 = |x: f32| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0; // |x| ≤ 1
    let w2 = |x: f32| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a; // 1 < |x| < 2
    [w2(t + 1.0), w1(t), w1(1.0 - t), w2(2.0 - t)]
}

/// Bicubic upsampling of a k×k field to h×w with aligned corners.
fn upsample_bicubic(field: &[f32], k: usize, h: usize, w: usize) -> Vec<f32> {
    let at = |y: isize, x: isize| field[y.clamp(0, k as isize - 1) as usize * k + x.clamp(0, k as isize - 1) as usize];
    let scale = |n: usize| if n > 1 { (k - 1) as f32 / (n - 1) as f32 } else { 0.0 };
    let (sy, sx) = (scale(h), scale(w));
    let mut out = Vec::with_capacity(h * w);
    for oy in 0..h {
        let fy = oy as f32 * sy;
        let (iy, ty) = (fy.floor() as isize, fy - fy.floor());
        let wy = cubic_weights(ty);
        for ox in 0..w {
            let fx = ox as f32 * sx;
            let (ix, tx) = (fx.floor() as isize, fx - fx.floor());
            let wx = cubic_weights(tx);
            let mut v = 0.0;
            for (dy, wyv) in wy.iter().enumerate() {
                for (dx, wxv) in wx.iter().enumerate() {
                    v += wyv * wxv * at(iy - 1 + dy as isize, ix - 1 + dx as isize);
                }
            }
            out.push(v);
        }
    }
    out
}

impl WarpGrid {
    const K: usize = 4;
    const S: f32 = 0.5;

    /// The reference recipe: uniform k×k×2 control field normalised by its
    /// mean magnitude, bicubic-upsampled, scaled by s/H, added to the identity grid.
    fn random(h: usize, w: usize, rng: &mut impl Rng) -> Self {
        let k = Self::K;
        let mut field: Vec<f32> = (0..2 * k * k).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let mean_abs = field.iter().map(|v| v.abs()).sum::<f32>() / field.len() as f32;
        field.iter_mut().for_each(|v| *v /= mean_abs);
        let fx = upsample_bicubic(&field[..k * k], k, h, w);
        let fy = upsample_bicubic(&field[k * k..], k, h, w);
        let lin = |i: usize, n: usize| if n > 1 { -1.0 + 2.0 * i as f32 / (n - 1) as f32 } else { 0.0 };
        let grid = (0..h * w)
            .map(|p| {
                let (y, x) = (p / w, p % w);
                let gx = (lin(x, w) + Self::S * fx[p] / h as f32).clamp(-1.0, 1.0);
                let gy = (lin(y, h) + Self::S * fy[p] / h as f32).clamp(-1.0, 1.0);
                (gx, gy)
            })
            .collect();
        WarpGrid { h, w, grid }
    }

    /// The grid with extra uniform noise of one pixel (noise mode).
    fn with_noise(&self, rng: &mut impl Rng) -> Self {
        let h = self.h as f32;
        let grid = self
            .grid
            .iter()
            .map(|&(x, y)| {
                (
                    (x + rng.gen_range(-1.0f32..1.0) / h).clamp(-1.0, 1.0),
                    (y + rng.gen_range(-1.0f32..1.0) / h).clamp(-1.0, 1.0),
                )
            })
            .collect();
        WarpGrid { grid, ..*self }
    }

    /// Bilinear resampling of every channel through the grid.
    fn warp(&self, frame: &mut [u8], shape: FrameShape) {
        let (h, w) = (self.h, self.w);
        let mut src = vec![0u8; h * w];
        for c in 0..shape.channels {
            let plane = &mut frame[c * h * w..(c + 1) * h * w];
            src.copy_from_slice(plane);
            let px = |y: isize, x: isize| {
                if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                    0.0
                } else {
                    src[y as usize * w + x as usize] as f32
                }
            };
            for (p, &(gx, gy)) in self.grid.iter().enumerate() {
                let x = (gx + 1.0) / 2.0 * (w - 1) as f32;
                let y = (gy + 1.0) / 2.0 * (h - 1) as f32;
                let (x0, y0) = (x.floor(), y.floor());
                let (tx, ty) = (x - x0, y - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let v = (1.0 - ty) * ((1.0 - tx) * px(y0, x0) + tx * px(y0, x0 + 1))
                    + ty * ((1.0 - tx) * px(y0 + 1, x0) + tx * px(y0 + 1, x0 + 1));
                plane[p] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badnet_stamps_a_checker_in_the_corner_of_every_channel() {
        let shape = FrameShape::new(3, 5, 5);
        let mut f = vec![7u8; shape.len()];
        Attack::BadNet.trigger(shape).apply(&mut f);
        for c in 0..3 {
            let plane = &f[c * 25..(c + 1) * 25];
            assert_eq!((plane[2 * 5 + 2], plane[2 * 5 + 3], plane[4 * 5 + 4], plane[5 + 4]), (255, 0, 255, 7));
        }
    }

    #[test]
    fn poison_relabels_the_requested_share_of_non_target_frames() {
        let shape = FrameShape::new(1, 4, 4);
        let labels: Vec<u32> = (0..200).map(|i| i % 10).collect();
        let set = FrameSet::new(shape, vec![0; 200 * 16], Some(labels.clone())).unwrap();
        let (p, idx) = Attack::BadNet.poison(&set, 0.05, 0, 1).unwrap();
        assert_eq!(idx.len(), 10);
        for &i in &idx {
            assert_ne!(labels[i], 0);
            assert_eq!(p.label(i), Some(0));
            assert_eq!(p.frame(i)[15], 255);
        }
        let clean = (0..200).find(|i| !idx.contains(i)).unwrap();
        assert_eq!((p.frame(clean)[15], p.label(clean)), (0, Some(labels[clean])));
    }

    #[test]
    fn sig_is_clean_label_and_wanet_adds_noise_mode_frames() {
        let shape = FrameShape::new(1, 28, 28);
        let labels: Vec<u32> = (0..500).map(|i| i % 10).collect();
        let pixels: Vec<u8> = (0..500 * 784).map(|i| ((i * 7919) % 251) as u8).collect();
        let set = FrameSet::new(shape, pixels, Some(labels.clone())).unwrap();
        let (p, idx) = Attack::Sig.poison(&set, 0.02, 3, 1).unwrap();
        assert_eq!(idx.len(), 10);
        assert!(idx.iter().all(|&i| labels[i] == 3 && p.frame(i) != set.frame(i)));
        assert_eq!(p.labels(), set.labels(), "clean-label poisoning keeps every label");
        let (p, idx) = Attack::WaNet.poison(&set, 0.02, 0, 1).unwrap();
        let changed_keep_label = (0..500).filter(|&i| !idx.contains(&i) && p.frame(i) != set.frame(i)).count();
        assert!(changed_keep_label > 10 && changed_keep_label <= 20, "{changed_keep_label}");
        assert!((0..500).all(|i| idx.contains(&i) || p.label(i) == Some(labels[i])));
    }

    #[test]
    fn triggers_are_deterministic_and_bounded_in_effect() {
        let shape = FrameShape::new(3, 32, 32);
        let frame: Vec<u8> = (0..shape.len()).map(|i| (i % 256) as u8).collect();
        for attack in Attack::ALL {
            let (mut a, mut b) = (frame.clone(), frame.clone());
            attack.trigger(shape).apply(&mut a);
            attack.trigger(shape).apply(&mut b);
            assert_eq!(a, b, "{attack} is deterministic");
            let changed = a.iter().zip(&frame).filter(|(x, y)| x != y).count();
            assert!(changed > 0, "{attack} changes the frame");
            if matches!(attack, Attack::BadNet | Attack::Trojan) {
                assert!(changed <= 3 * 64, "{attack} is a local patch: {changed}");
            }
        }
        let mut low = frame.clone();
        "blend@0.1".parse::<Attack>().unwrap().trigger(shape).apply(&mut low);
        let mut full = frame.clone();
        Attack::Blend { alpha: 0.2 }.trigger(shape).apply(&mut full);
        let dist = |x: &[u8]| x.iter().zip(&frame).map(|(a, b)| (*a as i32 - *b as i32).abs()).sum::<i32>();
        assert!(dist(&low) < dist(&full));
        assert_eq!("blend@0.1".parse::<Attack>().unwrap().to_string(), "blend@0.1");
        assert!("wanet@2".parse::<Attack>().is_err());
    }

    #[test]
    fn bicubic_upsampling_keeps_corners_and_constants() {
        let field = [1.0, 2.0, 3.0, 4.0];
        let up = upsample_bicubic(&field, 2, 5, 5);
        assert!((up[0] - 1.0).abs() < 1e-6 && (up[4] - 2.0).abs() < 1e-6 && (up[24] - 4.0).abs() < 1e-6);
        let flat = upsample_bicubic(&[0.5; 16], 4, 7, 7);
        assert!(flat.iter().all(|v| (v - 0.5).abs() < 1e-6));
    }
}
