//! The output: one JSON object per input frame, one per line, flushed as
//! each frame is guarded.
//!
//! - guarded: `{"index":0,"timestamp":0.033,"class":3,"label":"dress","score":4.21,"accepted":true,"latency_us":812}`
//! - dropped unguarded: `{"index":1,"timestamp":0.066,"dropped":true,"accepted":false}`
//! - not scorable (fail closed): `{"index":2,"timestamp":0.1,"accepted":false,"error":"…"}`
//! - a stream alarm, after the line of the frame that raised it:
//!   `{"event":"alarm","index":9,"timestamp":0.3,"evidence":11.9,"threshold":11.59,"run_frames":5}`
//!
//! `index` counts input frames from 0; `timestamp` is seconds since the
//! stream began, when the frame was read (`null` for a dropped frame too old
//! to be remembered). Written with `write!` into a buffer: no allocation.

use std::io::{BufWriter, Write};

use badexpert_runtime::alarm::AlarmEvent;
use badexpert_runtime::{Result as GuardResult, Verdict};

/// Writes the lines of one stream.
pub struct LineWriter<'c, W: Write> {
    out: BufWriter<W>,
    classes: &'c [String],
}

impl<'c, W: Write> LineWriter<'c, W> {
    pub fn new(out: W, classes: &'c [String]) -> Self {
        LineWriter { out: BufWriter::with_capacity(1 << 16, out), classes }
    }

    /// The line of a frame dropped unguarded.
    pub fn dropped(&mut self, index: u64, arrived: Option<f64>) -> std::io::Result<()> {
        write!(self.out, "{{\"index\":{index},\"timestamp\":")?;
        self.number(arrived)?;
        writeln!(self.out, ",\"dropped\":true,\"accepted\":false}}")
    }

    /// The line of a guarded frame (or of one the guard could not score),
    /// flushed.
    pub fn verdict(
        &mut self,
        index: u64,
        arrived: f64,
        verdict: &GuardResult<Verdict>,
        latency_us: u32,
    ) -> std::io::Result<()> {
        write!(self.out, "{{\"index\":{index},\"timestamp\":{arrived:.6}")?;
        match verdict {
            Ok(v) => {
                write!(self.out, ",\"class\":{},\"label\":", v.class)?;
                match self.classes.get(v.class) {
                    Some(name) => serde_json::to_writer(&mut self.out, name)?,
                    None => self.out.write_all(b"null")?,
                }
                write!(self.out, ",\"score\":")?;
                self.number(Some(v.score as f64))?;
                writeln!(self.out, ",\"accepted\":{},\"latency_us\":{latency_us}}}", v.accepted)?;
            }
            Err(e) => {
                write!(self.out, ",\"accepted\":false,\"error\":")?;
                serde_json::to_writer(&mut self.out, &e.to_string())?;
                writeln!(self.out, "}}")?;
            }
        }
        self.out.flush()
    }

    /// The line of a stream alarm raised by frame `index`, flushed.
    pub fn alarm(&mut self, index: u64, arrived: f64, event: &AlarmEvent) -> std::io::Result<()> {
        write!(self.out, "{{\"event\":\"alarm\",\"index\":{index},\"timestamp\":{arrived:.6},\"evidence\":")?;
        self.number(Some(event.evidence))?;
        write!(self.out, ",\"threshold\":")?;
        self.number(Some(event.threshold))?;
        writeln!(self.out, ",\"run_frames\":{}}}", event.run_frames)?;
        self.out.flush()
    }

    /// A JSON number, or `null` when absent or not finite.
    fn number(&mut self, value: Option<f64>) -> std::io::Result<()> {
        match value {
            Some(v) if v.is_finite() => write!(self.out, "{v}"),
            _ => self.out.write_all(b"null"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use badexpert_runtime::{Confidences, Error};

    #[test]
    fn every_kind_of_line_is_one_json_object() {
        let classes = vec!["cat \"tabby\"".to_string(), "dog".into()];
        let mut buf = Vec::new();
        {
            let mut w = LineWriter::new(&mut buf, &classes);
            let v = Verdict { class: 0, confidences: Confidences::default(), score: 0.25, accepted: false };
            w.verdict(0, 0.5, &Ok(v), 812).unwrap();
            w.dropped(1, Some(0.75)).unwrap();
            w.dropped(2, None).unwrap();
            w.verdict(3, 1.0, &Err(Error::Frame("bad \"frame\"".into())), 3).unwrap();
            w.alarm(3, 1.0, &AlarmEvent { frame: 3, evidence: 12.5, threshold: 11.6, run_frames: 4 }).unwrap();
        }
        let lines: Vec<serde_json::Value> =
            String::from_utf8(buf).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["label"], "cat \"tabby\"");
        assert_eq!(lines[0]["accepted"], false);
        assert_eq!(lines[0]["latency_us"], 812);
        assert_eq!(lines[1]["dropped"], true);
        assert_eq!(lines[2]["timestamp"], serde_json::Value::Null);
        assert!(lines[3]["error"].as_str().unwrap().contains("bad \"frame\""));
        assert_eq!((lines[4]["event"].as_str(), lines[4]["index"].as_u64()), (Some("alarm"), Some(3)));
        assert_eq!((lines[4]["evidence"].as_f64(), lines[4]["run_frames"].as_u64()), (Some(12.5), Some(4)));
        assert_eq!(lines.len(), 5);
    }
}
