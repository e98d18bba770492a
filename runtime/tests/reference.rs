//! Verdicts on the shipped demo bundle match a stored x86-64 reference within
//! 1e-4, on whatever machine runs the tests: this is how aarch64 (under
//! qemu in CI) and a real Pi or Jetson show they compute what x86 does.
//! `BADEXPERT_WRITE_REFERENCE=1 cargo test -p badexpert-runtime --test reference`
//! rewrites the reference (on x86-64 only).

use std::path::Path;

use badexpert_frames::FrameSource;
use badexpert_runtime::{Guard, GuardBundle, PixelLayout};

const FRAMES: usize = 40;

#[test]
fn verdicts_match_the_x86_reference() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist");
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/x86_64-reference.json");
    let bundle = GuardBundle::open(demo.join("bundle")).unwrap();
    let mut guard = Guard::new(&bundle).unwrap();
    let mut rows = Vec::new();
    for name in ["eval-clean", "eval-badnet"] {
        let set =
            FrameSource::detect(&demo.join(format!("{name}-images-idx3-ubyte.gz"))).load().unwrap().head(FRAMES / 2);
        for i in 0..set.len() {
            let v = guard.guard(set.frame(i), PixelLayout::Chw).unwrap();
            rows.push(serde_json::json!({ "class": v.class, "expert": v.confidences.expert, "auxiliary": v.confidences.auxiliary, "accepted": v.accepted }));
        }
    }
    if std::env::var_os("BADEXPERT_WRITE_REFERENCE").is_some() {
        assert_eq!(std::env::consts::ARCH, "x86_64", "the reference is written on x86-64");
        std::fs::create_dir_all(reference.parent().unwrap()).unwrap();
        std::fs::write(&reference, serde_json::to_string_pretty(&rows).unwrap() + "\n").unwrap();
        return;
    }
    let want: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    assert_eq!(want.len(), rows.len());
    let mut worst = 0f64;
    for (i, (got, want)) in rows.iter().zip(&want).enumerate() {
        assert_eq!(got["class"], want["class"], "frame {i}: class");
        for k in ["expert", "auxiliary"] {
            let d = (got[k].as_f64().unwrap() - want[k].as_f64().unwrap()).abs();
            worst = worst.max(d);
            assert!(d <= 1e-4, "frame {i}: {k} confidence differs by {d:e} from x86-64");
        }
    }
    eprintln!(
        "{} on {}: max |Δconfidence| vs the x86-64 reference {worst:.2e} over {} frames",
        std::env::consts::ARCH,
        std::env::consts::OS,
        rows.len()
    );
}
