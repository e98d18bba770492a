//! Stream-level evidence (docs/design.md §10): a camera's frames turned into
//! conformal p-values against the bundle's calibration scores and
//! accumulated by a CUSUM, so that a trigger that stays in view raises one
//! alarm even when it slips under the per-frame threshold on most frames.
//!
//! Each scored frame gets p = (1 + #{calibration scores ≤ s}) / (n + 1)
//! (low scores are suspicious); the CUSUM adds the log of the p-value
//! calibrator κ·p^(κ−1), whose mean is at most 1 for a clean frame's p,
//! and keeps the sum at or above 0. It raises an alarm when the sum reaches
//! h = ln(frames per false alarm): for independent clean frames, the mean
//! run to a false alarm is then at least e^h frames (Lorden's bound for a
//! CUSUM of likelihood ratios). After an alarm the sum starts again from 0.
//! A frame the guard could not score counts as the most suspicious p-value
//! (fail closed); a dropped frame adds nothing.

use crate::{Error, Result};

/// How the alarm is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlarmSettings {
    /// Clean-video false alarms allowed per hour (at most, for independent frames).
    pub false_alarms_per_hour: f64,
    /// Frames per second of the stream.
    pub frame_rate: f64,
    /// κ of the calibrator κ·p^(κ−1), in (0, 1): small κ weighs very small
    /// p-values more (strong triggers), κ near 1 many mildly small ones.
    pub kappa: f64,
}

impl Default for AlarmSettings {
    /// One false alarm per hour of 30 fps video, κ = 0.5.
    fn default() -> Self {
        AlarmSettings { false_alarms_per_hour: 1.0, frame_rate: 30.0, kappa: 0.5 }
    }
}

/// An alarm: where it was raised and the evidence that raised it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AlarmEvent {
    /// Frames observed before this one since the stream (or the alarm) began.
    pub frame: u64,
    /// The CUSUM statistic when it crossed the threshold.
    pub evidence: f64,
    pub threshold: f64,
    /// Frames since the statistic last left 0: how long the evidence built up.
    pub run_frames: u64,
}

/// The CUSUM over one stream's frames.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAlarm {
    reference: Vec<f32>,
    kappa: f64,
    threshold: f64,
    statistic: f64,
    frames: u64,
    run_start: u64,
    alarms: u64,
}

impl StreamAlarm {
    /// An alarm against `calibration_scores` (clean frames' guard scores, as
    /// the converter records them in `decision.calibration_scores`).
    pub fn new(calibration_scores: &[f32], settings: AlarmSettings) -> Result<StreamAlarm> {
        let AlarmSettings { false_alarms_per_hour, frame_rate, kappa } = settings;
        if calibration_scores.is_empty() {
            return Err(Error::Invalid("the stream alarm needs calibration scores; the bundle records none".into()));
        }
        if let Some(s) = calibration_scores.iter().find(|s| !s.is_finite()) {
            return Err(Error::Invalid(format!("calibration score {s} is not finite")));
        }
        let frames_per_alarm = frame_rate * 3600.0 / false_alarms_per_hour;
        if !(frame_rate > 0.0 && false_alarms_per_hour > 0.0 && frames_per_alarm.is_finite() && frames_per_alarm > 1.0)
        {
            return Err(Error::Invalid(format!(
                "stream alarm: {false_alarms_per_hour} false alarms per hour at {frame_rate} fps is not a rate below one per frame"
            )));
        }
        if !(kappa > 0.0 && kappa < 1.0) {
            return Err(Error::Invalid(format!("stream alarm: κ {kappa} must be in (0, 1)")));
        }
        let mut reference = calibration_scores.to_vec();
        reference.sort_by(f32::total_cmp);
        Ok(StreamAlarm {
            reference,
            kappa,
            threshold: frames_per_alarm.ln(),
            statistic: 0.0,
            frames: 0,
            run_start: 0,
            alarms: 0,
        })
    }

    /// The conformal p-value of a guard score (small = unlike clean frames).
    pub fn p_value(&self, score: f32) -> f64 {
        let below = self.reference.partition_point(|&r| r <= score);
        (1 + below) as f64 / (self.reference.len() + 1) as f64
    }

    /// Adds one frame's guard score (`None`: the guard could not score it);
    /// returns the alarm it raises, if any.
    pub fn observe(&mut self, score: Option<f32>) -> Option<AlarmEvent> {
        let p = match score {
            Some(s) if s.is_finite() => self.p_value(s),
            _ => 1.0 / (self.reference.len() + 1) as f64,
        };
        let frame = self.frames;
        self.frames += 1;
        if self.statistic == 0.0 {
            self.run_start = frame;
        }
        self.statistic = (self.statistic + self.kappa.ln() + (self.kappa - 1.0) * p.ln()).max(0.0);
        if self.statistic < self.threshold {
            return None;
        }
        let event = AlarmEvent {
            frame,
            evidence: self.statistic,
            threshold: self.threshold,
            run_frames: frame + 1 - self.run_start,
        };
        self.statistic = 0.0;
        self.alarms += 1;
        Some(event)
    }

    /// The statistic now (0 after an alarm or while frames look clean).
    pub fn evidence(&self) -> f64 {
        self.statistic
    }

    /// h: the statistic an alarm needs.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Alarms raised so far.
    pub fn alarms(&self) -> u64 {
        self.alarms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(score: f32) -> Option<f32> {
        Some(score)
    }

    /// 999 calibration scores 1..=999: the p-value of score s is (1 + ⌊s⌋) / 1000.
    fn alarm() -> StreamAlarm {
        let reference: Vec<f32> = (1..1000).map(|i| i as f32).collect();
        StreamAlarm::new(&reference, AlarmSettings::default()).unwrap()
    }

    #[test]
    fn p_values_rank_a_score_among_the_calibration_scores() {
        let a = alarm();
        assert_eq!(a.p_value(0.5), 1.0 / 1000.0);
        assert_eq!(a.p_value(1.0), 2.0 / 1000.0);
        assert_eq!(a.p_value(5000.0), 1.0);
        // One false alarm per hour at 30 fps: h = ln 108 000.
        assert!((a.threshold() - 108_000f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn clean_frames_stay_silent_and_a_persistent_trigger_raises_one_alarm() {
        let mut a = alarm();
        // A clean stream: p-values spread evenly over (0, 1], 100 000 frames.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            assert_eq!(a.observe(frame((state % 1000) as f32)), None);
        }
        // A trigger in view: every frame at p = 2/1000 — each adds ln 0.5 + 0.5·ln 500 ≈ 2.41.
        let alarms: Vec<_> = (0..30).filter_map(|_| a.observe(frame(1.0))).collect();
        assert_eq!(alarms.len(), 6, "{alarms:?}");
        // ⌈11.59 / 2.41⌉ = 5 frames after the trigger appears (the run may have begun on a clean frame).
        assert_eq!(alarms[0].frame, 100_000 + 4);
        assert!(alarms[0].run_frames >= 5);
        assert!(alarms[0].evidence >= alarms[0].threshold);
        // A frame the guard cannot score counts as suspicious as can be.
        let mut b = alarm();
        assert!((0..5).filter_map(|_| b.observe(None)).next().is_some());
    }

    #[test]
    fn settings_and_scores_are_checked() {
        let ok = AlarmSettings::default();
        assert!(StreamAlarm::new(&[], ok).unwrap_err().to_string().contains("calibration scores"));
        assert!(StreamAlarm::new(&[f32::NAN], ok).is_err());
        assert!(StreamAlarm::new(&[1.0], AlarmSettings { kappa: 1.0, ..ok }).is_err());
        assert!(StreamAlarm::new(&[1.0], AlarmSettings { false_alarms_per_hour: 0.0, ..ok }).is_err());
        assert!(
            StreamAlarm::new(&[1.0], AlarmSettings { frame_rate: 1.0, false_alarms_per_hour: 7200.0, ..ok }).is_err()
        );
    }
}
