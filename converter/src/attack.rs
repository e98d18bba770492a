//! Backdoor triggers as data transforms (DESIGN.md §4): used both to poison a
//! training set (to make backdoored models for evaluation) and to make the
//! triggered copy of a test set.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use badexpert_runtime::{FrameSet, FrameShape};

use crate::{Error, Result};

/// A trigger that can be stamped on a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// 3×3 black/white checkerboard in the bottom-right corner.
    BadNet,
}

impl std::str::FromStr for Attack {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "badnet" => Ok(Attack::BadNet),
            _ => Err(format!("unknown attack {s:?} (known: badnet)")),
        }
    }
}

impl std::fmt::Display for Attack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attack::BadNet => "badnet",
        })
    }
}

impl Attack {
    /// Stamps the trigger on one planar frame.
    pub fn apply(&self, frame: &mut [u8], shape: FrameShape) {
        match self {
            Attack::BadNet => {
                let (h, w) = (shape.height, shape.width);
                let side = 3.min(h).min(w);
                for c in 0..shape.channels {
                    for dy in 0..side {
                        for dx in 0..side {
                            let (y, x) = (h - side + dy, w - side + dx);
                            frame[c * h * w + y * w + x] = if (dy + dx) % 2 == 0 { 255 } else { 0 };
                        }
                    }
                }
            }
        }
    }

    /// A triggered copy of every frame; labels stay the true ones.
    pub fn triggered(&self, set: &FrameSet) -> FrameSet {
        let mut out = set.clone();
        let shape = set.shape();
        for i in 0..out.len() {
            self.apply(out.frame_mut(i), shape);
        }
        out
    }

    /// A poisoned training set: a seeded `rate` fraction of the frames whose
    /// label is not `target` get the trigger and the label `target`
    /// (dirty-label poisoning). Returns the set and the poisoned indices.
    pub fn poison(&self, set: &FrameSet, rate: f64, target: u32, seed: u64) -> Result<(FrameSet, Vec<usize>)> {
        let labels = set.require_labels("poisoning").map_err(Error::Runtime)?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(Error::Invalid(format!("poison rate {rate} must be in [0, 1]")));
        }
        let mut candidates: Vec<usize> = (0..set.len()).filter(|&i| labels[i] != target).collect();
        candidates.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let count = (rate * set.len() as f64).round() as usize;
        let mut chosen: Vec<usize> = candidates.into_iter().take(count).collect();
        chosen.sort_unstable();
        let mut out = set.clone();
        let shape = set.shape();
        for &i in &chosen {
            self.apply(out.frame_mut(i), shape);
            out.labels_mut().expect("labelled")[i] = target;
        }
        Ok((out, chosen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badnet_stamps_a_checker_in_the_corner_of_every_channel() {
        let shape = FrameShape::new(3, 5, 5);
        let mut f = vec![7u8; shape.len()];
        Attack::BadNet.apply(&mut f, shape);
        for c in 0..3 {
            let plane = &f[c * 25..(c + 1) * 25];
            assert_eq!(plane[2 * 5 + 2], 255);
            assert_eq!(plane[2 * 5 + 3], 0);
            assert_eq!(plane[4 * 5 + 4], 255);
            assert_eq!(plane[1 * 5 + 4], 7);
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
}
