//! `badexpert-guard` answers bad input with a clear error and a non-zero
//! exit, never a panic (docs/design.md §6). Uses the prebuilt demo bundle.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use badexpert_runtime::{Guard, GuardBundle, PixelLayout};

#[path = "../../runtime/tests/support/tamper.rs"]
mod tamper;

#[path = "../../runtime/tests/support/elf.rs"]
mod elf;

#[test]
fn the_binary_has_no_executable_stack() {
    elf::assert_no_executable_stack(Path::new(env!("CARGO_BIN_EXE_badexpert-guard")));
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist")
}

/// Runs the binary; cross-built tests run it under the same emulator as
/// themselves (`scripts/test-arm.sh` sets `BADEXPERT_TEST_RUNNER`).
fn guard_bin(args: &[&str]) -> Output {
    let exe = env!("CARGO_BIN_EXE_badexpert-guard");
    let runner = std::env::var("BADEXPERT_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(emulator) => {
            let mut c = Command::new(emulator);
            c.args(words).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(args).output().expect("runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A private copy of the shipped bundle to damage.
fn bundle_copy(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("badexpert-bad-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(demo().join("bundle")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
}

#[test]
fn tampered_plan_is_refused_naming_the_file() {
    let dir = bundle_copy("tamper");
    let plan = dir.join("expert.nnef.tar");
    let mut bytes = std::fs::read(&plan).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&plan, bytes).unwrap();
    let o = guard_bin(&["info", "--bundle", dir.to_str().unwrap()]);
    assert_clean_failure(&o, &["expert.nnef.tar", "sha256 mismatch"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn manifest_with_a_missing_field_is_refused() {
    let dir = bundle_copy("manifest");
    let path = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["decision"].as_object_mut().unwrap().remove("threshold");
    std::fs::write(&path, m.to_string()).unwrap();
    let o = guard_bin(&["info", "--bundle", dir.to_str().unwrap()]);
    assert_clean_failure(&o, &["manifest.json", "missing field `threshold`"]);
    std::fs::write(&path, "{ truncated").unwrap();
    assert_clean_failure(&guard_bin(&["info", "--bundle", dir.to_str().unwrap()]), &["manifest.json"]);
}

#[test]
fn corrupt_plan_with_matching_hash_is_refused() {
    let dir = bundle_copy("corrupt");
    let path = dir.join("auxiliary.nnef.tar");
    std::fs::write(&path, b"not a tar archive at all").unwrap();
    let mpath = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    m["plans"]["auxiliary"]["sha256"] = badexpert_runtime::sha256_file(&path).unwrap().into();
    std::fs::write(&mpath, m.to_string()).unwrap();
    // The seal names the manifest field that changed...
    let o = guard_bin(&["info", "--bundle", dir.to_str().unwrap()]);
    assert_clean_failure(&o, &["changed after the bundle was sealed", "plans differs"]);
    assert_eq!(o.status.code(), Some(2));
    // ...and with the seal "fixed" too, the plan itself is refused.
    tamper::reseal(&dir, None);
    assert_clean_failure(&guard_bin(&["info", "--bundle", dir.to_str().unwrap()]), &["auxiliary.nnef.tar", "NNEF"]);
}

#[test]
fn an_unreadable_frame_is_rejected_with_its_reason_and_others_still_scored() {
    let dir = std::env::temp_dir().join(format!("badexpert-frames-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    image::GrayImage::from_pixel(28, 28, image::Luma([30])).save(dir.join("a_ok.png")).unwrap();
    // Another size is resized (docs/camera.md); a file that is no image cannot be scored.
    image::RgbImage::from_pixel(32, 32, image::Rgb([1, 2, 3])).save(dir.join("b_other_size.png")).unwrap();
    std::fs::write(dir.join("c_broken.png"), b"\x89PNG but not really").unwrap();
    let o = guard_bin(&["run", "--bundle", demo().join("bundle").to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(o.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[..2].iter().all(|l| l["class"].is_u64() && l["error"].is_null()), "{lines:?}");
    assert_eq!(lines[2]["accepted"], false);
    let err = lines[2]["error"].as_str().unwrap();
    assert!(err.contains("c_broken.png") && err.contains("not a valid image"), "{err}");
}

#[test]
fn library_rejects_wrong_sizes_and_non_finite_values() {
    let bundle = GuardBundle::open(demo().join("bundle")).unwrap();
    let mut guard = Guard::new(&bundle).unwrap();
    let err = guard.guard(&[0u8; 100], PixelLayout::Chw).unwrap_err().to_string();
    assert!(err.contains("100 pixel values") && err.contains("784"), "{err}");
    let mut frame = vec![0.0f32; 784];
    frame[17] = f32::NAN;
    let err = guard.guard_normalized(&frame).unwrap_err().to_string();
    assert!(err.contains("value 17") && err.contains("NaN"), "{err}");
    // The guard still works after refusing bad frames.
    assert!(guard.guard(&[0u8; 784], PixelLayout::Chw).is_ok());
}

#[test]
fn eval_refuses_labels_outside_the_classes_and_missing_files() {
    let dir = std::env::temp_dir().join(format!("badexpert-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let set = badexpert_runtime::FrameSet::new(
        badexpert_runtime::FrameShape::new(1, 28, 28),
        vec![0; 2 * 784],
        Some(vec![1, 12]),
    )
    .unwrap();
    let images = dir.join("x-images-idx3-ubyte.gz");
    badexpert_frames::write_idx_images(&images, &set).unwrap();
    badexpert_frames::write_idx_labels(&dir.join("x-labels-idx1-ubyte.gz"), set.labels().unwrap()).unwrap();
    let bundle = demo().join("bundle");
    let o = guard_bin(&[
        "eval",
        "--bundle",
        bundle.to_str().unwrap(),
        "--clean",
        images.to_str().unwrap(),
        "--triggered",
        images.to_str().unwrap(),
        "--target",
        "0",
    ]);
    assert_clean_failure(&o, &["label 12", "outside 0..10"]);
    let o = guard_bin(&[
        "eval",
        "--bundle",
        bundle.to_str().unwrap(),
        "--clean",
        "/nonexistent/x-images-idx3-ubyte",
        "--triggered",
        images.to_str().unwrap(),
        "--target",
        "0",
    ]);
    assert_clean_failure(&o, &["/nonexistent/x-images-idx3-ubyte"]);
}

#[test]
fn eval_writes_its_report_to_json_alone_and_shows_both_clean_rates() {
    let dir = std::env::temp_dir().join(format!("badexpert-eval-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("eval.json");
    let (clean, triggered) =
        (demo().join("eval-clean-images-idx3-ubyte.gz"), demo().join("eval-badnet-images-idx3-ubyte.gz"));
    let bundle = demo().join("bundle");
    let args = ["eval", "--bundle", bundle.to_str().unwrap(), "--clean", clean.to_str().unwrap()];
    let more = ["--triggered", triggered.to_str().unwrap(), "--target", "0", "--max-frames", "200"];
    let o = guard_bin(&[&args[..], &more, &["--json", report.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&o.stdout));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(json["clean_fpr"].is_number() && json["clean_rejection_rate"].is_number(), "{json}");
    let table = stderr(&o);
    assert!(table.contains("of correctly classified clean frames") && table.contains("of all clean frames"), "{table}");
    // Without --json the report is stdout's.
    let o = guard_bin(&[&args[..], &more].concat());
    assert!(serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_parallel_prints_the_same_lines_as_sequential() {
    let bundle = demo().join("bundle");
    // 100 frames: enough to compare, short under an emulator.
    let frames = badexpert_frames::FrameSource::detect(&demo().join("eval-badnet-images-idx3-ubyte.gz"))
        .load()
        .unwrap()
        .head(100);
    let set = std::env::temp_dir().join(format!("badexpert-run-parallel-{}-images-idx3-ubyte.gz", std::process::id()));
    badexpert_frames::write_idx_images(&set, &frames).unwrap();
    let seq = guard_bin(&["run", "--bundle", bundle.to_str().unwrap(), set.to_str().unwrap()]);
    let par = guard_bin(&["run", "--parallel", "--bundle", bundle.to_str().unwrap(), set.to_str().unwrap()]);
    assert!(seq.status.success() && par.status.success(), "{}", stderr(&par));
    assert_eq!(String::from_utf8_lossy(&seq.stdout).lines().count(), 100);
    assert_eq!(seq.stdout, par.stdout);
}

#[test]
fn info_says_what_the_backdoor_scan_found_or_that_there_was_none() {
    let bundle = demo().join("bundle");
    let o = guard_bin(&["info", "--bundle", bundle.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("scan: none recorded"), "{}", stderr(&o));
    // A copy whose manifest records a scan that found nothing.
    let dir = std::env::temp_dir().join(format!("badexpert-info-scan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&bundle).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let run = serde_json::json!({"seed": 1, "outcome": "unexposed", "steps": 26, "start_accuracy": 0.9,
        "stop_accuracy": 0.8, "histogram": [40, 40, 40, 40, 40, 40, 40, 40, 40, 40], "top": 0, "top_share": 0.1,
        "snapshots": []});
    let histogram = vec![0.1f64; 10];
    manifest["scan"] = serde_json::json!({"backdoored": false, "target": null, "consensus": 0, "target_share": 0.1,
        "agreement": 1.0, "score": 0.1, "threshold": 0.835, "score_rule": "share", "histogram": histogram,
        "exposed_runs": 0, "runs": [run], "learning_rate": 1e-4, "floor": 0.2, "max_steps": 26, "read_after": 1.0,
        "fit_size": 1600, "holdout_size": 400, "seconds": 3.0});
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    tamper::reseal(&dir, None);
    let o = guard_bin(&["info", "--bundle", dir.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("scan: no backdoor found — no run unlearned the clean task within 26 steps"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn every_tampering_is_refused_by_info_run_and_stream_naming_its_cause() {
    let scratch = bundle_copy("seal-scratch");
    let key = tamper::trusted_key_file(&scratch).display().to_string();
    let frame = scratch.join("frame.gray");
    std::fs::write(&frame, vec![0u8; 28 * 28]).unwrap();
    let png = scratch.join("frame.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([90])).save(&png).unwrap();
    // info, run and stream on bundle `b`, with the trusted key or without.
    let commands = |b: &Path, trusted: bool| -> Vec<Vec<String>> {
        let b = b.display().to_string();
        let (png, frame) = (png.display().to_string(), frame.display().to_string());
        let key: Vec<&str> = if trusted { vec!["--trusted-key", &key] } else { vec![] };
        [
            vec!["info", "--bundle", &b],
            vec!["run", "--bundle", &b, &png],
            vec!["stream", "--bundle", &b, "--format", "gray8", "--width", "28", "--height", "28", "--input", &frame],
        ]
        .into_iter()
        .map(|args| key.iter().chain(&args).map(|s| s.to_string()).collect())
        .collect()
    };
    let guard = |args: &[String]| guard_bin(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // The untouched signed copy runs everywhere with the trusted key.
    let ok = tamper::signed_copy(&demo().join("bundle"), "cli-ok");
    for args in commands(&ok, true) {
        let o = guard(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        if args[2] == "info" {
            assert!(stderr(&o).contains("signed by the trusted key"), "{}", stderr(&o));
        }
    }
    for case in tamper::CASES {
        let dir = tamper::signed_copy(&demo().join("bundle"), "cli");
        tamper::apply(case.name, &dir);
        for args in commands(&dir, true) {
            let o = guard(&args);
            assert_clean_failure(&o, &[case.expect, "refusing to guard"]);
            assert_eq!(o.status.code(), Some(2), "{} {args:?}", case.name);
        }
        for args in commands(&dir, false) {
            let o = guard(&args);
            if case.needs_key {
                assert!(o.status.success(), "{} {args:?} without a key: {}", case.name, stderr(&o));
            } else {
                assert_clean_failure(&o, &[case.expect]);
                assert_eq!(o.status.code(), Some(2), "{} {args:?}", case.name);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    // A key file that is no key names itself.
    let bad = scratch.join("bad.pub");
    std::fs::write(&bad, "not a key\n").unwrap();
    let o = guard_bin(&["--trusted-key", bad.to_str().unwrap(), "info", "--bundle", ok.to_str().unwrap()]);
    assert_clean_failure(&o, &["--trusted-key", "bad.pub", "64 hex digits"]);
    let _ = std::fs::remove_dir_all(&ok);
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn a_reader_that_goes_away_is_not_a_bundle_problem() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_badexpert-guard"))
        .args(["run", "--bundle"])
        .arg(demo().join("bundle"))
        .arg(demo().join("eval-clean-images-idx3-ubyte.gz"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("\"class\""), "{first}");
    // The reader is dropped here, as `| head -1` closes the pipe.
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn bench_reads_what_run_reads_and_sets_of_another_size_are_resized() {
    let dir = std::env::temp_dir().join(format!("badexpert-other-sizes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 10])).save(dir.join("camera.png")).unwrap();
    // A CIFAR-10 batch of two 32×32 colour frames (label byte, then R, G and B planes).
    let mut cifar = Vec::new();
    for (label, value) in [(3u8, 20u8), (7, 230)] {
        cifar.push(label);
        cifar.extend(std::iter::repeat_n(value, 3 * 32 * 32));
    }
    std::fs::write(dir.join("batch.bin"), cifar).unwrap();
    let bundle = demo().join("bundle");
    let b = bundle.to_str().unwrap();
    for input in ["camera.png", "batch.bin"] {
        let path = dir.join(input);
        let o = guard_bin(&["bench", "--bundle", b, "--frames", path.to_str().unwrap(), "--runs", "2"]);
        assert!(o.status.success(), "bench --frames {input}: {}", stderr(&o));
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(rows["modes"].as_array().is_some_and(|m| !m.is_empty()), "{rows}");
    }
    let o = guard_bin(&["run", "--bundle", b, dir.join("batch.bin").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(o.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l["class"].is_u64() && l["error"].is_null()), "{lines:?}");
    // The same frames resized by the library score as `run` scored them.
    let set = badexpert_frames::FrameSource::detect(&dir.join("batch.bin")).load().unwrap();
    let manifest = GuardBundle::open(&bundle).unwrap().manifest().clone();
    let small = badexpert_frames::to_shape(set, manifest.input.shape, &manifest.camera).unwrap();
    let mut guard = Guard::new(&GuardBundle::open(&bundle).unwrap()).unwrap();
    for (i, line) in lines.iter().enumerate() {
        let v = guard.guard(small.frame(i), PixelLayout::Chw).unwrap();
        assert_eq!(line["class"], v.class as u64);
        assert!((line["score"].as_f64().unwrap() - v.score as f64).abs() < 1e-6, "{line} vs {v:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
