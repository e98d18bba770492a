//! `badexpert-convert` answers bad input with a clear error and a non-zero
//! exit, never a panic (docs/design.md §6), and never loses an existing bundle.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use badexpert_converter::onnx::{builder, pb, set_normalization_metadata, write_model};
use badexpert_frames::{write_idx_images, write_idx_labels};
use badexpert_runtime::{FrameSet, FrameShape, Normalization};

#[path = "../../runtime/tests/support/elf.rs"]
mod elf;

#[test]
fn the_binary_has_no_executable_stack() {
    elf::assert_no_executable_stack(Path::new(env!("CARGO_BIN_EXE_badexpert-convert")));
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("badexpert-conv-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn shape() -> FrameShape {
    FrameShape::new(1, 8, 8)
}

/// A tiny valid classifier for 8×8 gray frames.
fn tiny_model() -> pb::ModelProto {
    let mut b = builder::GraphBuilder::new(shape(), 3);
    b.conv(4, 3).batch_norm().relu().max_pool(2).flatten().linear(10);
    let mut m = b.finish();
    set_normalization_metadata(&mut m, &Normalization::unit());
    m
}

fn write_set(dir: &Path, n: usize, label: impl Fn(usize) -> u32) -> PathBuf {
    let pixels = (0..n * 64).map(|i| (i * 37 % 256) as u8).collect();
    let set = FrameSet::new(shape(), pixels, Some((0..n).map(label).collect())).unwrap();
    let p = dir.join("r-images-idx3-ubyte.gz");
    write_idx_images(&p, &set).unwrap();
    write_idx_labels(&dir.join("r-labels-idx1-ubyte.gz"), set.labels().unwrap()).unwrap();
    p
}

/// A scratch directory holding the tiny model (`m.onnx`) and a 600-frame reserve of 10 classes.
fn tiny_conversion_inputs(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = scratch(name);
    let model = dir.join("m.onnx");
    write_model(&tiny_model(), &model).unwrap();
    let reserve = write_set(&dir, 600, |i| (i % 10) as u32);
    (dir, model, reserve)
}

fn convert_bin(model: &Path, reserve: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_badexpert-convert"))
        .args(["--quiet", "--cpu", "bundle", "--model"])
        .arg(model)
        .arg("--reserve")
        .arg(reserve)
        .arg("--out")
        .arg(out)
        // The tiny models here are untrained: at chance on any reserve.
        .args(["--min-accuracy-above-chance", "0"])
        .args(extra)
        .output()
        .expect("runs")
}

fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "should fail with exit 2: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
}

#[test]
fn corrupt_onnx_is_named() {
    let dir = scratch("corrupt");
    let model = dir.join("m.onnx");
    write_model(&tiny_model(), &model).unwrap();
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 3]).unwrap();
    let reserve = write_set(&dir, 600, |i| (i % 10) as u32);
    let o = convert_bin(&model, &reserve, &dir.join("out"), &[]);
    assert_clean_failure(&o, &["m.onnx", "not a valid ONNX model"]);
    assert!(!dir.join("out").exists());
}

#[test]
fn every_unsupported_operator_is_listed_with_its_nodes() {
    let dir = scratch("unsupported");
    let mut m = tiny_model();
    let g = m.graph.as_mut().unwrap();
    for (i, op) in ["FancyPool", "Swizzle", "FancyPool"].iter().enumerate() {
        let node = &mut g.node[i];
        node.op_type = op.to_string();
        node.name = format!("n{i}");
    }
    let model = dir.join("m.onnx");
    write_model(&m, &model).unwrap();
    let reserve = write_set(&dir, 600, |i| (i % 10) as u32);
    let o = convert_bin(&model, &reserve, &dir.join("out"), &[]);
    assert_clean_failure(&o, &["unsupported ONNX operator", "FancyPool (node n0, n2)", "Swizzle (node n1)"]);
}

#[test]
fn empty_or_mislabelled_or_too_small_reserves_are_refused() {
    let dir = scratch("reserve");
    let model = dir.join("m.onnx");
    write_model(&tiny_model(), &model).unwrap();
    std::fs::write(dir.join("e-images-idx3-ubyte"), [0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 8]).unwrap();
    let o = convert_bin(&model, &dir.join("e-images-idx3-ubyte"), &dir.join("out"), &[]);
    assert_clean_failure(&o, &["e-images-idx3-ubyte", "holds no images"]);

    let reserve = write_set(&dir, 600, |i| if i == 5 { 12 } else { (i % 10) as u32 });
    let o = convert_bin(&model, &reserve, &dir.join("out"), &[]);
    assert_clean_failure(&o, &["label 12 of frame 5", "outside 0..10"]);

    let reserve = write_set(&dir, 200, |i| (i % 10) as u32);
    let o = convert_bin(&model, &reserve, &dir.join("out"), &[]);
    assert_clean_failure(&o, &["holds out 40", "too few for a 1.00% false-positive rate"]);

    let o = convert_bin(&model, &dir.join("missing-images-idx3-ubyte.gz"), &dir.join("out"), &[]);
    assert_clean_failure(&o, &["missing-images-idx3-ubyte.gz"]);
}

#[test]
fn wrong_frame_size_for_the_model_is_refused() {
    let dir = scratch("size");
    let model = dir.join("m.onnx");
    let mut b = builder::GraphBuilder::new(FrameShape::new(1, 9, 9), 3);
    b.flatten().linear(10);
    let mut m = b.finish();
    set_normalization_metadata(&mut m, &Normalization::unit());
    write_model(&m, &model).unwrap();
    let reserve = write_set(&dir, 600, |i| (i % 10) as u32);
    let o = convert_bin(&model, &reserve, &dir.join("out"), &[]);
    assert_clean_failure(&o, &["frames are 1x8x8", "[None, Some(1), Some(9), Some(9)]"]);
}

#[test]
fn existing_bundle_is_kept_unless_overwrite() {
    let (dir, model, reserve) = tiny_conversion_inputs("keep");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("precious"), b"x").unwrap();
    let o = convert_bin(&model, &reserve, &out, &[]);
    assert_clean_failure(&o, &["already exists", "--overwrite"]);
    assert!(out.join("precious").exists());
    // --overwrite replaces only a bundle or an empty directory: other files are never deleted.
    let o = convert_bin(&model, &reserve, &out, &["--overwrite"]);
    assert_clean_failure(&o, &["replaces only a bundle", "precious", "not deleting them"]);
    assert!(out.join("precious").exists());
    // Nor beside a bundle's own files.
    let bundle = dir.join("bundle");
    let fast = ["--aux-epochs", "1", "--fpr", "0.2", "--expert-lr", "1e-4", "--aux-lr", "0.1"];
    let o = convert_bin(&model, &reserve, &bundle, &fast);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(bundle.join("notes.txt"), b"mine").unwrap();
    let o = convert_bin(&model, &reserve, &bundle, &[&fast[..], &["--overwrite"]].concat());
    assert_clean_failure(&o, &["this bundle's files", "notes.txt"]);
    std::fs::remove_file(bundle.join("notes.txt")).unwrap();
    // An empty directory and a bundle are replaced.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for target in [&empty, &bundle] {
        let o = convert_bin(&model, &reserve, target, &[&fast[..], &["--overwrite", "--seed", "3"]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(badexpert_runtime::GuardBundle::open(target).unwrap().manifest().fine_tune.seed, 3);
    }
}

#[test]
fn a_conversion_killed_mid_write_leaves_the_old_bundle_whole() {
    let (dir, model, reserve) = tiny_conversion_inputs("kill");
    let out = dir.join("bundle");
    let fast = ["--aux-epochs", "1", "--fpr", "0.2", "--expert-lr", "1e-4", "--aux-lr", "0.1"];
    let o = convert_bin(&model, &reserve, &out, &fast);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    // Kill replacements at several points of their run (fine-tuning, writing plans, calibrating).
    for delay_ms in [50u64, 300, 800, 1500] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_badexpert-convert"))
            .args(["--quiet", "--cpu", "bundle", "--model"])
            .arg(&model)
            .arg("--reserve")
            .arg(&reserve)
            .arg("--out")
            .arg(&out)
            .args([
                "--overwrite",
                "--aux-epochs",
                "20",
                "--seed",
                "9",
                "--fpr",
                "0.2",
                "--min-accuracy-above-chance",
                "0",
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let bundle = badexpert_runtime::GuardBundle::open(&out)
            .unwrap_or_else(|e| panic!("after a kill at {delay_ms} ms ({status}): {e}"));
        if !status.success() {
            // Killed before the move: the old bundle, untouched.
            assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before, "killed at {delay_ms} ms");
            assert_eq!(bundle.manifest().fine_tune.seed, 0);
        }
    }
}

#[test]
fn tiny_model_converts_end_to_end() {
    let (dir, model, reserve) = tiny_conversion_inputs("tiny");
    let out = dir.join("bundle");
    let o = convert_bin(
        &model,
        &reserve,
        &out,
        &["--aux-epochs", "2", "--seed", "4", "--fpr", "0.2", "--selection", "0.1"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bundle = badexpert_runtime::GuardBundle::open(&out).unwrap();
    let m = bundle.manifest();
    let ft = &m.fine_tune;
    assert_eq!(ft.fit_size + ft.selection_size + ft.holdout_size, 600);
    // Automatic rates: chosen on 60 frames, τ on 120 others.
    assert_eq!((ft.selection_size, ft.holdout_size), (60, 120));
    assert_eq!(m.normalization, Normalization::unit());
    assert!(m.decision.threshold.is_finite());
    // The stream alarm's reference: the scores τ was taken over, ascending.
    let scores = &m.decision.calibration_scores;
    assert_eq!(scores.len(), m.decision.calibration_size);
    assert!(scores.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn refit_trains_the_chosen_rates_afresh_unless_a_selection_part_chose_them() {
    let (dir, model, reserve) = tiny_conversion_inputs("refit");
    let common = ["--aux-epochs", "2", "--seed", "4", "--fpr", "0.2", "--overwrite", "--refit", "true"];
    let out = dir.join("bundle");
    let o = convert_bin(&model, &reserve, &out, &common);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ft = badexpert_runtime::GuardBundle::open(&out).unwrap().manifest().fine_tune.clone();
    for record in [&ft.expert, &ft.auxiliary] {
        let (last, searched) = record.rate_search.split_last().expect("an automatic search was recorded");
        assert!(last.outcome.starts_with("kept: the chosen rate trained afresh"), "{last:?}");
        assert_eq!(last.learning_rate, record.learning_rate);
        assert_eq!(last.holdout_accuracy, Some(record.holdout_accuracy));
        let chosen: Vec<_> = searched.iter().filter(|t| t.outcome.starts_with("chosen")).collect();
        assert_eq!(chosen.len(), 1, "{searched:?}");
        assert_eq!(chosen[0].learning_rate, record.learning_rate);
        assert!(searched.iter().all(|t| !t.outcome.starts_with("kept")), "{searched:?}");
    }
    // With a selection part the rates were not chosen on the calibration frames: nothing is refit.
    let o = convert_bin(&model, &reserve, &out, &[&common[..], &["--selection", "0.1"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ft = badexpert_runtime::GuardBundle::open(&out).unwrap().manifest().fine_tune.clone();
    for record in [&ft.expert, &ft.auxiliary] {
        assert!(record.rate_search.iter().any(|t| t.outcome.starts_with("kept")), "{:?}", record.rate_search);
        assert!(record.rate_search.iter().all(|t| !t.outcome.contains("afresh")), "{:?}", record.rate_search);
    }
}

/// `badexpert-convert --device <device> bundle …` on `model`, logging at the default level.
fn convert_on(device: &str, model: &Path, reserve: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_badexpert-convert"))
        .args(["--device", device, "bundle", "--min-accuracy-above-chance", "0", "--model"])
        .arg(model)
        .arg("--reserve")
        .arg(reserve)
        .arg("--out")
        .arg(out)
        .output()
        .expect("runs")
}

#[test]
fn cuda_is_refused_with_its_reason_and_auto_says_it_falls_back() {
    if tch::utils::has_cuda() {
        eprintln!("skipped: this libtorch has CUDA support (scripts/gpu-check.sh checks that path)");
        return;
    }
    let (dir, model, reserve) = tiny_conversion_inputs("device");
    let out = dir.join("out");
    let o = convert_on("cuda", &model, &reserve, &out);
    assert_clean_failure(&o, &["--device cuda", "no CUDA support", "BADEXPERT_TORCH=cuda"]);
    assert!(!out.exists());
    // auto logs the fallback before anything else happens (here: the model
    // is corrupt, so nothing is trained).
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 3]).unwrap();
    let o = convert_on("auto", &model, &reserve, &out);
    assert_clean_failure(&o, &["training on the CPU: this libtorch has no CUDA support", "not a valid ONNX model"]);
    let o = convert_on("gpu", &model, &reserve, &out);
    assert_clean_failure(&o, &["unknown device \"gpu\" (auto, cpu or cuda)"]);
}

/// `badexpert-convert --quiet --cpu scan …`.
fn scan_bin(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_badexpert-convert"))
        .args(["--quiet", "--cpu", "scan"])
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn scan_writes_its_verdict_and_bundle_records_it_when_asked() {
    let (dir, model, reserve) = tiny_conversion_inputs("scan");
    let json = dir.join("scan.json");
    let o = scan_bin(&[
        "--model".as_ref(),
        model.as_os_str(),
        "--reserve".as_ref(),
        reserve.as_os_str(),
        "--scan-runs".as_ref(),
        "2".as_ref(),
        "--scan-inversion-steps".as_ref(),
        "20".as_ref(),
        "--json".as_ref(),
        json.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("scan: "), "a verdict line on stderr: {stderr}");
    let record: badexpert_runtime::ScanRecord = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    record.validate(10).unwrap();
    let inversion = record.inversion.as_ref().expect("the scan inverted triggers");
    assert_eq!((inversion.mask_norms.len(), inversion.steps), (10, 20));
    assert_eq!(record.score, inversion.anomaly);
    // The runs ran only where they would name the target.
    let needed = inversion.anomaly >= record.threshold && inversion.anomaly < 3.4;
    assert_eq!(record.runs.len(), if needed { 2 } else { 0 }, "anomaly {}", inversion.anomaly);
    assert_eq!((record.fit_size, record.holdout_size), (480, 120));
    assert_eq!(record.target.is_some(), record.backdoored);
    // Without --scan-runs a bundle has no scan; with it, the manifest records one.
    let out = dir.join("bundle");
    let common = ["--aux-epochs", "2", "--fpr", "0.2", "--overwrite"];
    let o = convert_bin(&model, &reserve, &out, &common);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(badexpert_runtime::GuardBundle::open(&out).unwrap().manifest().scan.is_none());
    // (Without the inversion the runs always run: the runs-only scan.)
    let runs_only = ["--scan-runs", "2", "--scan-inversion-steps", "0"];
    let o = convert_bin(&model, &reserve, &out, &[&common[..], &runs_only].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let scan = badexpert_runtime::GuardBundle::open(&out).unwrap().manifest().scan.clone().expect("recorded");
    assert_eq!((scan.runs.len(), scan.inversion.is_none()), (2, true));
    assert!(String::from_utf8_lossy(&o.stderr).contains("scan: "));
}

#[test]
fn scan_refuses_bad_input_with_a_clear_error() {
    let (dir, model, reserve) = tiny_conversion_inputs("scan-bad");
    let missing = dir.join("missing.onnx");
    let cases: [(Vec<&std::ffi::OsStr>, &str); 3] = [
        (vec!["--model".as_ref(), missing.as_os_str(), "--reserve".as_ref(), reserve.as_os_str()], "missing.onnx"),
        (
            vec![
                "--model".as_ref(),
                model.as_os_str(),
                "--reserve".as_ref(),
                reserve.as_os_str(),
                "--scan-runs".as_ref(),
                "0".as_ref(),
            ],
            "--scan-runs 0",
        ),
        (
            vec![
                "--model".as_ref(),
                model.as_os_str(),
                "--reserve".as_ref(),
                reserve.as_os_str(),
                "--scan-floor".as_ref(),
                "1.5".as_ref(),
            ],
            "floor 1.5",
        ),
    ];
    for (args, names) in cases {
        let o = scan_bin(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(names) && !stderr.contains("panicked"), "{names:?} not in: {stderr}");
    }
}

fn convert_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_badexpert-convert")).args(args).output().expect("runs")
}

#[test]
fn keygen_bundle_sign_key_and_seal_make_bundles_only_the_key_holder_could() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, model, reserve) = tiny_conversion_inputs("sign");
    let key = dir.join("release.key");
    let o = convert_cmd(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let public = badexpert_runtime::TrustedKey::read(&dir.join("release.key.pub")).unwrap();
    // keygen never overwrites a key.
    assert_clean_failure(&convert_cmd(&["keygen", "--out", key.to_str().unwrap()]), &["already exists"]);
    let trusted = badexpert_runtime::LoadOptions { trusted_key: Some(public), ..Default::default() };

    // bundle --sign-key: signed before it is moved into place.
    let out = dir.join("bundle");
    let o = convert_bin(
        &model,
        &reserve,
        &out,
        &["--aux-epochs", "1", "--fpr", "0.2", "--sign-key", key.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = badexpert_runtime::GuardBundle::open_with(&out, trusted).unwrap();
    assert!(b.seal().trusted && b.seal().signer == Some(public.fingerprint()));

    // A bundle written unsigned is refused with the key until `seal --sign-key` signs it.
    let plain = dir.join("plain");
    let o = convert_bin(&model, &reserve, &plain, &["--aux-epochs", "1", "--fpr", "0.2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = badexpert_runtime::GuardBundle::open_with(&plain, trusted).expect_err("unsigned refused").to_string();
    assert!(e.contains("is not signed"), "{e}");
    let o = convert_cmd(&["seal", "--bundle", plain.to_str().unwrap(), "--sign-key", key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(badexpert_runtime::GuardBundle::open_with(&plain, trusted).is_ok());

    // seal refuses a bundle whose files do not match its manifest.
    std::fs::write(plain.join("expert.nnef.tar"), b"swapped").unwrap();
    let o = convert_cmd(&["seal", "--bundle", plain.to_str().unwrap(), "--sign-key", key.to_str().unwrap()]);
    assert_clean_failure(&o, &["expert.nnef.tar", "not sealing"]);

    // A key others can read is refused before any fine-tuning, with the fix.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = convert_bin(&model, &reserve, &dir.join("never"), &["--sign-key", key.to_str().unwrap()]);
    assert_clean_failure(&o, &["permissions 644", "chmod 600"]);
    assert!(!dir.join("never").exists());
    // So is a file that holds no key.
    std::fs::write(dir.join("junk.key"), "hello\n").unwrap();
    std::fs::set_permissions(dir.join("junk.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let o =
        convert_cmd(&["seal", "--bundle", out.to_str().unwrap(), "--sign-key", dir.join("junk.key").to_str().unwrap()]);
    assert_clean_failure(&o, &["junk.key", "64 hex digits"]);
}

#[test]
fn a_reserve_that_cannot_support_a_guard_is_refused_with_the_reason() {
    let dir = scratch("degenerate");
    let model = dir.join("m.onnx");
    write_model(&tiny_model(), &model).unwrap();
    // One class (the reviewer's 1,092 frames of one class reported 0.5 % FPR and rejected 88.7 %).
    let one = write_set(&dir, 600, |_| 3);
    let o = convert_bin(&model, &one, &dir.join("out"), &[]);
    assert_clean_failure(&o, &["holds frames of 1 class of the model's 10", "every class"]);
    // One class far below a tenth of an even share (600 / 10 = 60: at least 6 frames).
    let thin = write_set(&dir, 600, |i| if i < 5 { 9 } else { (i % 9) as u32 });
    let o = convert_bin(&model, &thin, &dir.join("out"), &[]);
    assert_clean_failure(&o, &["too thin in 1 of the model's 10 classes", "class 9: 5", "at least 6 frames"]);
    assert_clean_failure(
        &convert_bin(&model, &thin, &dir.join("out"), &["--min-class-share", "0.5"]),
        &["at least 30 frames"],
    );
    // A missing class counts as thin.
    let missing = write_set(&dir, 600, |i| (i % 9) as u32);
    let o = convert_bin(&model, &missing, &dir.join("out"), &[]);
    assert_clean_failure(&o, &["class 9: 0"]);
    assert!(!dir.join("out").exists());
}

/// A tar archive with every header's mtime and checksum blanked.
fn tar_without_times(tar: &[u8]) -> Vec<u8> {
    let mut out = tar.to_vec();
    let mut at = 0;
    while at + 512 <= out.len() && out[at] != 0 {
        let size = std::str::from_utf8(&out[at + 124..at + 136]).unwrap().trim_matches(|c: char| c == '\0' || c == ' ');
        let size = usize::from_str_radix(size, 8).unwrap();
        out[at + 136..at + 156].fill(b' ');
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

#[test]
fn a_users_own_auxiliary_model_stands_in_for_the_fine_tuned_one_when_it_fits() {
    let (dir, model, reserve) = tiny_conversion_inputs("aux");
    let out = dir.join("bundle");
    let fast = ["--fpr", "0.2", "--expert-lr", "1e-4"];
    // Here M itself plays the repaired model: it takes the same frames and gives the same classes.
    let o = convert_bin(&model, &reserve, &out, &[&fast[..], &["--auxiliary", model.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bundle = badexpert_runtime::GuardBundle::open(&out).unwrap();
    let aux = &bundle.manifest().fine_tune.auxiliary;
    assert!(aux.labels.starts_with("none: supplied by the user (m.onnx, sha256 "), "{}", aux.labels);
    assert_eq!((aux.epochs, aux.rate_search.len()), (0, 0));
    // Its plan is the supplied model, not a fine-tune: the same plan as M's
    // (the same tar but for the write times in its headers).
    let plans = &bundle.manifest().plans;
    let plan = |f: &str| tar_without_times(&std::fs::read(out.join(f)).unwrap());
    assert_eq!(plan(&plans.auxiliary.file), plan(&plans.model.file));

    // Another class count or another input is refused, naming the file.
    let mut b = builder::GraphBuilder::new(shape(), 3);
    b.conv(4, 3).relu().max_pool(2).flatten().linear(5);
    let five = dir.join("five.onnx");
    write_model(&b.finish(), &five).unwrap();
    let o =
        convert_bin(&model, &reserve, &dir.join("x"), &[&fast[..], &["--auxiliary", five.to_str().unwrap()]].concat());
    assert_clean_failure(&o, &["auxiliary model", "five.onnx", "gives 5 classes, the model 10"]);
    let mut b = builder::GraphBuilder::new(FrameShape::new(1, 9, 9), 3);
    b.flatten().linear(10);
    let wide = dir.join("wide.onnx");
    write_model(&b.finish(), &wide).unwrap();
    let o =
        convert_bin(&model, &reserve, &dir.join("x"), &[&fast[..], &["--auxiliary", wide.to_str().unwrap()]].concat());
    assert_clean_failure(&o, &["auxiliary model", "wide.onnx", "axis"]);
    let o = convert_bin(&model, &reserve, &dir.join("x"), &[&fast[..], &["--auxiliary", "/no/such.onnx"]].concat());
    assert_clean_failure(&o, &["auxiliary model", "/no/such.onnx"]);
    assert!(!dir.join("x").exists());
}

#[test]
fn a_reserve_whose_labels_do_not_match_the_model_is_refused() {
    let dir = scratch("mislabelled");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist");
    // The demo's own reserve frames, labelled at random: the trained model is at chance on them.
    let labels = dir.join("random-labels-idx1-ubyte.gz");
    write_idx_labels(&labels, &(0..2000u32).map(|i| (i * 7 + i / 10) % 10).collect::<Vec<_>>()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_badexpert-convert"))
        .args(["--quiet", "--cpu", "bundle", "--model"])
        .arg(demo.join("model.onnx"))
        .arg("--reserve")
        .arg(demo.join("reserve-images-idx3-ubyte.gz"))
        .arg("--reserve-labels")
        .arg(&labels)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert_clean_failure(&o, &["near chance (10.0% for 10 classes; at least 19.0% needed)", "do not match the model"]);
    assert!(!dir.join("out").exists());
}

#[test]
fn the_product_binary_has_no_research_commands() {
    for research in ["make-demo", "trigger", "report", "ablate", "timing-bundle"] {
        let o = Command::new(env!("CARGO_BIN_EXE_badexpert-convert")).arg(research).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{research}: {err}");
        assert!(err.contains("unrecognized subcommand"), "{research}: {err}");
    }
}

#[test]
fn a_target_label_outside_the_model_or_a_share_outside_its_range_is_refused() {
    let (dir, model, reserve) = tiny_conversion_inputs("target-label");
    let out = dir.join("bundle");
    let o = convert_bin(&model, &reserve, &out, &["--target-label", "10"]);
    assert_clean_failure(&o, &["target label 10", "10 classes"]);
    let o = convert_bin(&model, &reserve, &out, &["--target-label", "3", "--target-fpr-share", "1"]);
    assert_clean_failure(&o, &["target FPR share 1", "[0, 1)"]);
    assert!(!out.exists());
}

#[test]
fn the_auxiliary_schedule_is_recorded_and_a_bad_one_is_refused() {
    let (dir, model, reserve) = tiny_conversion_inputs("aux-schedule");
    let out = dir.join("bundle");
    let o = convert_bin(&model, &reserve, &out, &["--aux-schedule", "linear"]);
    assert_clean_failure(&o, &["linear", "cosine"]);
    assert!(!out.exists());
    let fast = ["--aux-epochs", "2", "--fpr", "0.2", "--expert-lr", "1e-4", "--aux-lr", "0.1"];
    let o = convert_bin(&model, &reserve, &out, &[&fast[..], &["--aux-schedule", "cosine"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bundle = badexpert_runtime::GuardBundle::open(&out).unwrap();
    let aux = &bundle.manifest().fine_tune.auxiliary;
    assert_eq!((aux.lr_schedule.as_deref(), aux.epochs), (Some("cosine"), 2));
    assert!(aux.lr_milestones.is_empty());
    assert!(bundle.manifest().fine_tune.expert.lr_schedule.is_none());
    assert_eq!(aux.soup, None);
    // A soup of two fine-tunes is recorded as one.
    let o = convert_bin(&model, &reserve, &out, &[&fast[..], &["--aux-soup", "2", "--overwrite"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bundle = badexpert_runtime::GuardBundle::open(&out).unwrap();
    assert_eq!(bundle.manifest().fine_tune.auxiliary.soup, Some(2));
    let o = convert_bin(&model, &reserve, &out, &["--aux-soup", "0"]);
    assert_clean_failure(&o, &["--aux-soup", "0"]);
}
