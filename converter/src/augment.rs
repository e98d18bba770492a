//! Light training augmentation (docs/design.md §3.1–3.2): random crop with zero
//! padding and, where it suits the data, horizontal flip — applied to u8
//! frames before normalisation, as torchvision does.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which augmentation a fine-tune applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Pixels of zero padding before a random crop back to size (0 = none).
    pub crop_padding: usize,
    pub horizontal_flip: bool,
}

impl Augmentation {
    pub const NONE: Augmentation = Augmentation { crop_padding: 0, horizontal_flip: false };

    /// Padding of one eighth of the side (4 px at 32, 3 px at 28) and flips.
    pub fn standard(height: usize, horizontal_flip: bool) -> Self {
        Augmentation { crop_padding: (height / 8).max(1), horizontal_flip }
    }

    pub fn describe(&self) -> String {
        match (self.crop_padding, self.horizontal_flip) {
            (0, false) => "none".into(),
            (p, f) => format!("random crop (padding {p}){}", if f { " + horizontal flip" } else { "" }),
        }
    }

    /// Writes an augmented copy of a planar frame (c × h × w) into `out`.
    pub fn apply(&self, frame: &[u8], (c, h, w): (usize, usize, usize), rng: &mut impl Rng, out: &mut [u8]) {
        let p = self.crop_padding as isize;
        let (dy, dx) = if p > 0 { (rng.gen_range(-p..=p), rng.gen_range(-p..=p)) } else { (0, 0) };
        let flip = self.horizontal_flip && rng.gen_bool(0.5);
        for ch in 0..c {
            let (src, dst) = (&frame[ch * h * w..(ch + 1) * h * w], &mut out[ch * h * w..(ch + 1) * h * w]);
            for y in 0..h {
                let sy = y as isize + dy;
                for x in 0..w {
                    let fx = if flip { w - 1 - x } else { x };
                    let sx = fx as isize + dx;
                    dst[y * w + x] = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                        src[sy as usize * w + sx as usize]
                    } else {
                        0
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn none_is_identity_and_crops_shift_content() {
        let frame: Vec<u8> = (1..=16).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut out = vec![0; 16];
        Augmentation::NONE.apply(&frame, (1, 4, 4), &mut rng, &mut out);
        assert_eq!(out, frame);
        let aug = Augmentation { crop_padding: 1, horizontal_flip: true };
        let mut seen_change = false;
        for _ in 0..20 {
            aug.apply(&frame, (1, 4, 4), &mut rng, &mut out);
            // Every output pixel is either padding or some input pixel.
            assert!(out.iter().all(|&v| v == 0 || frame.contains(&v)));
            seen_change |= out != frame;
        }
        assert!(seen_change);
    }
}
