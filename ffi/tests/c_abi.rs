//! The C ABI as C sees it: the example under `examples/` compiled against
//! `libbadexpert.a` and run on the demo's evaluation slice, tight and with padded rows,
//! agreeing with the Rust guard frame by frame; and every failing call's
//! status, message and fail-closed verdict.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::{null, null_mut};

use badexpert::*;
use badexpert_frames::FrameSource;
use badexpert_runtime::{FrameSet, Guard, GuardBundle, Manifest, PixelLayout};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn demo_bundle() -> PathBuf {
    root().join("models/badnet-fmnist/bundle")
}

fn demo_frames(name: &str, n: usize) -> FrameSet {
    let path = root().join("models/badnet-fmnist").join(name);
    FrameSource::detect(&path).load().unwrap_or_else(|e| panic!("{}: {e}", path.display())).head(n)
}

/// `libbadexpert.a` (or `.so`), built by cargo beside this test's executable.
fn built_library(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps.join(name), deps.parent().unwrap().join(name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found beside {}", exe.display()))
}

fn static_library() -> PathBuf {
    built_library("libbadexpert.a")
}

#[path = "../../runtime/tests/support/elf.rs"]
mod elf;

fn last_error() -> String {
    let p = badexpert_last_error();
    assert!(!p.is_null(), "a failed call leaves a message");
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[test]
fn the_c_example_agrees_with_the_rust_guard_on_tight_and_padded_frames() {
    // The demo's whole evaluation slice: 1,000 clean frames and their 1,000 triggered copies.
    let mut frames = demo_frames("eval-clean-images-idx3-ubyte.gz", usize::MAX);
    frames.extend(&demo_frames("eval-badnet-images-idx3-ubyte.gz", usize::MAX)).unwrap();
    assert_eq!(frames.len(), 2000);
    let bundle = GuardBundle::open(demo_bundle()).unwrap();
    let mut guard = Guard::new(&bundle).unwrap();
    let expected: Vec<_> = (0..frames.len()).map(|i| guard.guard(frames.frame(i), PixelLayout::Chw).unwrap()).collect();
    let rejected = expected.iter().filter(|v| !v.accepted).count();
    assert!(rejected > 900 && rejected < 1100, "the slice mixes accepted and rejected frames ({rejected} rejected)");

    let work = std::env::temp_dir().join(format!("badexpert-ffi-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let raw = work.join("frames.raw");
    std::fs::write(&raw, frames.pixels()).unwrap();
    let exe = work.join("guard_frames");
    let ffi = root().join("ffi");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&ffi)
        .arg(ffi.join("examples/guard_frames.c"))
        .arg(static_library())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(built.status.success(), "compiling the C example failed:\n{}", String::from_utf8_lossy(&built.stderr));
    // Linked statically, nothing of the library asks for an executable stack; nor does the .so.
    let warnings = String::from_utf8_lossy(&built.stderr);
    assert!(!warnings.contains("executable stack"), "{warnings}");
    elf::assert_no_executable_stack(&exe);
    elf::assert_no_executable_stack(&built_library("libbadexpert.so"));

    for padding in ["0", "13"] {
        let run = Command::new(&exe).arg(demo_bundle()).arg(&raw).args(["mono8", padding]).output().unwrap();
        assert!(
            run.status.success(),
            "guard_frames (padding {padding}) failed:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let lines: Vec<String> = String::from_utf8(run.stdout).unwrap().lines().map(String::from).collect();
        assert_eq!(lines.len(), expected.len(), "one line per frame (padding {padding})");
        for (line, want) in lines.iter().zip(&expected) {
            let fields: Vec<&str> = line.split(' ').collect();
            let (class, score, accepted): (usize, f32, u8) =
                (fields[1].parse().unwrap(), fields[2].parse().unwrap(), fields[3].parse().unwrap());
            assert_eq!((class, accepted == 1), (want.class, want.accepted), "frame {} (padding {padding})", fields[0]);
            assert_eq!(score, want.score, "frame {} (padding {padding}): the same computation", fields[0]);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// Images of other sizes and encodings are brought to the bundle's input
/// as the runtime does it (docs/camera.md): the same verdict as
/// `Guard::guard_camera`; a bundle that resizes nothing refuses them.
#[test]
fn other_sizes_and_encodings_take_the_camera_path() {
    use badexpert_runtime::camera::DEFAULT_MAX_FRAME_BYTES;
    use badexpert_runtime::{CameraFrame, FrameGeometry, PixelFormat};
    let guard = abi_guard();
    let bundle = GuardBundle::open(demo_bundle()).unwrap();
    let mut rust = Guard::new(&bundle).unwrap();
    let (w, h) = (64u32, 48u32);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let yuyv: Vec<u8> = (0..w * h * 2).map(|i| (16 + i * 5 % 220) as u8).collect();
    for (encoding, format, data, step) in [
        (c"rgb8", PixelFormat::Rgb24, &rgb, w * 3),
        (c"bgr8", PixelFormat::Bgr24, &rgb, w * 3),
        (c"mono8", PixelFormat::Gray8, &rgb, w * 2),
        (c"yuv422_yuy2", PixelFormat::Yuyv, &yuyv, w * 2),
    ] {
        let mut verdict = BadexpertVerdict::default();
        let status = unsafe { badexpert_guard_image(guard, &image(w, h, step, encoding, data), &mut verdict) };
        assert_eq!(status, BadexpertStatus::Ok, "{encoding:?}: {}", last_error());
        let g =
            FrameGeometry::new(format, w as usize, h as usize, Some(step as usize), DEFAULT_MAX_FRAME_BYTES).unwrap();
        let want = rust.guard_camera(&CameraFrame::new(g, data).unwrap()).unwrap();
        assert_eq!(
            (verdict.class_index as usize, verdict.score, verdict.accepted),
            (want.class, want.score, want.accepted)
        );
    }
    let mut guard = guard;
    unsafe { badexpert_guard_destroy(&mut guard) };

    // The same bundle converted with --resize none.
    let work = std::env::temp_dir().join(format!("badexpert-ffi-noresize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    for entry in std::fs::read_dir(demo_bundle()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, work.join(path.file_name().unwrap())).unwrap();
    }
    let manifest = work.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["camera"] = serde_json::json!({ "resize": "none", "channel_order": "rgb", "yuv": "bt601_limited" });
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    // Sealed again: the test is about the camera setting, not tampering.
    Manifest::read(&manifest).unwrap().write(&manifest).unwrap();
    let dir = CString::new(work.to_str().unwrap()).unwrap();
    let (mut b, mut g) = (null_mut(), null_mut());
    unsafe {
        assert_eq!(badexpert_bundle_open(dir.as_ptr(), &mut b), BadexpertStatus::Ok, "{}", last_error());
        assert_eq!(badexpert_guard_create(b, &mut g), BadexpertStatus::Ok);
    }
    refused(
        g,
        &image(w, h, w * 3, c"rgb8", &rgb),
        BadexpertStatus::UnsupportedSize,
        "image is 64×48, the bundle takes 28×28 and resizes nothing",
    );
    unsafe {
        badexpert_guard_destroy(&mut g);
        badexpert_bundle_destroy(&mut b);
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// A live guard on the demo bundle, through the ABI.
fn abi_guard() -> *mut BadexpertGuard {
    let dir = CString::new(demo_bundle().to_str().unwrap()).unwrap();
    let mut bundle = null_mut();
    let mut guard = null_mut();
    unsafe {
        assert_eq!(badexpert_bundle_open(dir.as_ptr(), &mut bundle), BadexpertStatus::Ok);
        assert_eq!(badexpert_guard_create(bundle, &mut guard), BadexpertStatus::Ok);
        badexpert_bundle_destroy(&mut bundle);
    }
    assert!(bundle.is_null(), "destroy clears the handle");
    guard
}

fn image(width: u32, height: u32, step: u32, encoding: &CStr, data: &[u8]) -> BadexpertImage {
    BadexpertImage { width, height, step, encoding: encoding.as_ptr(), data: data.as_ptr(), data_len: data.len() }
}

/// Guards `image`, checks the status and that the verdict is written as rejected.
fn refused(guard: *mut BadexpertGuard, image: &BadexpertImage, status: BadexpertStatus, message: &str) {
    let mut verdict = BadexpertVerdict { accepted: true, ..Default::default() };
    assert_eq!(unsafe { badexpert_guard_image(guard, image, &mut verdict) }, status, "{message}");
    assert!(!verdict.accepted && verdict.score.is_nan(), "fail closed: {verdict:?}");
    let error = last_error();
    assert!(error.contains(message), "{error:?} names {message:?}");
}

#[test]
fn an_image_the_guard_cannot_take_gets_a_status_a_message_and_a_rejected_verdict() {
    let guard = abi_guard();
    let frame = vec![0u8; 40 * 28];
    refused(
        guard,
        &image(28, 28, 28, c"yuv422", &frame),
        BadexpertStatus::UnsupportedEncoding,
        "\"yuv422\" is not supported",
    );
    refused(
        guard,
        &image(28, 28, 20, c"mono8", &frame),
        BadexpertStatus::InvalidArgument,
        "stride 20 is smaller than a row",
    );
    refused(guard, &image(27, 28, 54, c"yuv422_yuy2", &frame), BadexpertStatus::InvalidArgument, "even width");
    refused(
        guard,
        &image(28, 28, 40, c"mono8", &frame[..40 * 27]),
        BadexpertStatus::InvalidArgument,
        "which needs 1108",
    );
    let mut no_data = image(28, 28, 28, c"mono8", &frame);
    no_data.data = null();
    refused(guard, &no_data, BadexpertStatus::InvalidArgument, "image.data is NULL");

    // The guard still works after every refusal; the last row may omit its padding.
    let mut verdict = BadexpertVerdict::default();
    let ok =
        unsafe { badexpert_guard_image(guard, &image(28, 28, 40, c"mono8", &frame[..40 * 27 + 28]), &mut verdict) };
    assert_eq!(ok, BadexpertStatus::Ok, "{}", last_error());
    assert!(verdict.score.is_finite() && verdict.class_index < 10);
    let planar = unsafe { badexpert_guard_frame(guard, frame.as_ptr(), 28 * 28 - 1, &mut verdict) };
    assert_eq!(planar, BadexpertStatus::FrameNotScored);
    assert!(!verdict.accepted && last_error().contains("783 pixel values, the bundle expects 784"));
    // A success clears the last error; the verdict may be NULL (the header allows it).
    let ok = unsafe { badexpert_guard_image(guard, &image(28, 28, 28, c"mono8", &frame), null_mut()) };
    assert_eq!(ok, BadexpertStatus::Ok);
    assert!(badexpert_last_error().is_null(), "a success leaves no error: {}", last_error());

    let mut guard = guard;
    unsafe { badexpert_guard_destroy(&mut guard) };
    assert!(guard.is_null());
    unsafe { badexpert_guard_destroy(&mut guard) }; // a cleared handle is ignored
    unsafe { badexpert_guard_destroy(null_mut()) };
}

#[test]
fn a_bundle_that_cannot_be_opened_is_named() {
    let mut bundle = null_mut();
    let missing = c"/nonexistent/bundle";
    assert_eq!(unsafe { badexpert_bundle_open(missing.as_ptr(), &mut bundle) }, BadexpertStatus::Bundle);
    assert!(bundle.is_null() && last_error().contains("/nonexistent/bundle"), "{}", last_error());
    assert_eq!(unsafe { badexpert_bundle_open(null(), &mut bundle) }, BadexpertStatus::InvalidArgument);
    assert!(last_error().contains("dir is NULL"));
    assert_eq!(unsafe { badexpert_bundle_open(missing.as_ptr(), null_mut()) }, BadexpertStatus::InvalidArgument);

    // A tampered plan fails the hash check.
    let copy = std::env::temp_dir().join(format!("badexpert-ffi-tampered-{}", std::process::id()));
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(demo_bundle()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let plan = copy.join("expert.nnef.tar");
    let mut bytes = std::fs::read(&plan).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&plan, bytes).unwrap();
    let dir = CString::new(copy.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { badexpert_bundle_open(dir.as_ptr(), &mut bundle) }, BadexpertStatus::Bundle);
    assert!(last_error().contains("sha256 mismatch"), "{}", last_error());
    let _ = std::fs::remove_dir_all(&copy);
}

#[test]
fn the_bundle_describes_its_input_and_classes() {
    let dir = CString::new(demo_bundle().to_str().unwrap()).unwrap();
    let mut bundle = null_mut();
    let mut shape = BadexpertFrameShape::default();
    let (mut count, mut name) = (0usize, null());
    unsafe {
        assert_eq!(badexpert_bundle_open(dir.as_ptr(), &mut bundle), BadexpertStatus::Ok);
        assert_eq!(badexpert_bundle_frame_shape(bundle, &mut shape), BadexpertStatus::Ok);
        assert_eq!(badexpert_bundle_class_count(bundle, &mut count), BadexpertStatus::Ok);
        assert_eq!(badexpert_bundle_class_name(bundle, 0, &mut name), BadexpertStatus::Ok);
        let manifest = GuardBundle::open(demo_bundle()).unwrap().manifest().clone();
        assert_eq!(CStr::from_ptr(name).to_str().unwrap(), manifest.classes[0]);
        assert_eq!(badexpert_bundle_class_name(bundle, count, &mut name), BadexpertStatus::InvalidArgument);
        assert!(last_error().contains(&format!("class {count} out of range")));
        badexpert_bundle_destroy(&mut bundle);
    }
    assert_eq!(shape, BadexpertFrameShape { channels: 1, height: 28, width: 28 });
    assert_eq!(count, 10);
    let version = unsafe { CStr::from_ptr(badexpert_version()) }.to_str().unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
}

#[test]
fn the_bundle_gives_its_backdoor_scan_or_says_it_has_none() {
    use badexpert_runtime::manifest::{Manifest, ScanRecord, UnlearningRun};
    let open = |dir: &Path| {
        let dir = CString::new(dir.to_str().unwrap()).unwrap();
        let (mut bundle, mut scan) = (null_mut(), BadexpertScan { target: 7, ..BadexpertScan::default() });
        unsafe {
            assert_eq!(badexpert_bundle_open(dir.as_ptr(), &mut bundle), BadexpertStatus::Ok, "{}", last_error());
            assert_eq!(badexpert_bundle_scan(bundle, &mut scan), BadexpertStatus::Ok);
            assert_eq!(badexpert_bundle_scan(bundle, std::ptr::null_mut()), BadexpertStatus::InvalidArgument);
            badexpert_bundle_destroy(&mut bundle);
        }
        scan
    };
    // The shipped demo bundle was written before the scan: none recorded.
    assert_eq!(open(&demo_bundle()), BadexpertScan { target: -1, ..BadexpertScan::default() });
    // A copy whose manifest records a scan that found label 0.
    let dir = std::env::temp_dir().join(format!("badexpert-ffi-scan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(demo_bundle()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let mut manifest = Manifest::read(&dir.join("manifest.json")).unwrap();
    let run = UnlearningRun {
        seed: 1,
        outcome: "exposed".into(),
        steps: 40,
        start_accuracy: 0.9,
        stop_accuracy: 0.19,
        histogram: vec![300, 0, 0, 0, 0, 0, 100, 0, 0, 0],
        top: 0,
        top_share: 0.75,
        snapshots: vec![],
    };
    let mut histogram = vec![0.0; 10];
    (histogram[0], histogram[6]) = (0.75, 0.25);
    manifest.scan = Some(ScanRecord {
        backdoored: true,
        target: Some(0),
        consensus: 0,
        target_share: 0.75,
        agreement: 1.0,
        score: 0.75,
        threshold: 0.5,
        score_rule: "test".into(),
        histogram,
        exposed_runs: 2,
        runs: vec![run.clone(), run],
        learning_rate: 1e-4,
        floor: 0.2,
        max_steps: 390,
        read_after: 1.0,
        fit_size: 1600,
        holdout_size: 400,
        seconds: 1.0,
        inversion: None,
    });
    manifest.write(&dir.join("manifest.json")).unwrap();
    let scan = open(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        scan,
        BadexpertScan {
            scanned: true,
            backdoored: true,
            target: 0,
            consensus: 0,
            target_share: 0.75,
            score: 0.75,
            threshold: 0.5,
            runs: 2,
            exposed_runs: 2,
        }
    );
}

#[path = "../../runtime/tests/support/calibrated_copy.rs"]
mod calibrated_copy;
#[path = "../../runtime/tests/support/tamper.rs"]
mod tamper;

#[test]
fn every_tampering_is_refused_through_the_c_abi_naming_its_cause() {
    let scratch = std::env::temp_dir().join(format!("badexpert-ffi-seal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let key = CString::new(tamper::trusted_key_file(&scratch).to_str().unwrap()).unwrap();
    let open = |dir: &Path, key: *const std::ffi::c_char| {
        let dir = CString::new(dir.to_str().unwrap()).unwrap();
        let mut b = null_mut();
        let status = unsafe { badexpert_bundle_open_trusted(dir.as_ptr(), key, &mut b) };
        unsafe { badexpert_bundle_destroy(&mut b) };
        status
    };
    let ok = tamper::signed_copy(&demo_bundle(), "ffi-ok");
    assert_eq!(open(&ok, key.as_ptr()), BadexpertStatus::Ok, "{}", last_error());
    assert_eq!(open(&ok, null()), BadexpertStatus::Ok, "{}", last_error());
    for case in tamper::CASES {
        let dir = tamper::signed_copy(&demo_bundle(), "ffi");
        tamper::apply(case.name, &dir);
        assert_eq!(open(&dir, key.as_ptr()), BadexpertStatus::Bundle, "{}", case.name);
        let message = last_error();
        assert!(message.contains(case.expect) && message.contains("refusing to guard"), "{}: {message}", case.name);
        let without = open(&dir, null());
        if case.needs_key {
            assert_eq!(without, BadexpertStatus::Ok, "{}: {}", case.name, last_error());
        } else {
            assert_eq!(without, BadexpertStatus::Bundle, "{}", case.name);
            assert!(last_error().contains(case.expect), "{}: {}", case.name, last_error());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    // A key path that holds no key is the caller's error, named.
    let bad = scratch.join("bad.pub");
    std::fs::write(&bad, "no key here\n").unwrap();
    let bad = CString::new(bad.to_str().unwrap()).unwrap();
    assert_eq!(open(&ok, bad.as_ptr()), BadexpertStatus::InvalidArgument);
    assert!(last_error().contains("bad.pub"), "{}", last_error());
    let _ = std::fs::remove_dir_all(&ok);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The stream alarm through the ABI (docs/design.md §10): refused on a bundle
/// that records no calibration scores (the shipped one predates them); on a
/// copy that records them (its stored clean frames' scores, sealed again),
/// silent over 500 clean frames and raised within a few triggered ones; a
/// frame that cannot be scored counts as suspicious.
#[test]
fn the_alarm_is_raised_in_the_verdict_soon_after_a_trigger_appears() {
    let guard = abi_guard();
    assert_eq!(unsafe { badexpert_guard_set_alarm(guard, 1.0, 30.0) }, BadexpertStatus::InvalidArgument);
    assert!(last_error().contains("calibration scores"), "{}", last_error());
    let mut guard = guard;
    unsafe { badexpert_guard_destroy(&mut guard) };

    let copy = calibrated_copy::copy_with_calibration_scores(&demo_bundle(), "ffi");

    let dir = CString::new(copy.to_str().unwrap()).unwrap();
    let (mut b, mut g) = (null_mut(), null_mut());
    unsafe {
        assert_eq!(badexpert_bundle_open(dir.as_ptr(), &mut b), BadexpertStatus::Ok);
        assert_eq!(badexpert_guard_create(b, &mut g), BadexpertStatus::Ok);
        assert_eq!(badexpert_guard_set_alarm(g, 1.0, 30.0), BadexpertStatus::Ok);
    }
    let guard_all = |set: &FrameSet, which: &[usize]| -> Vec<bool> {
        which
            .iter()
            .map(|&i| {
                let mut v = BadexpertVerdict::default();
                let f = set.frame(i);
                assert_eq!(unsafe { badexpert_guard_frame(g, f.as_ptr(), f.len(), &mut v) }, BadexpertStatus::Ok);
                v.alarm
            })
            .collect()
    };
    let clean = demo_frames("eval-clean-images-idx3-ubyte.gz", 500);
    assert!(guard_all(&clean, &(0..clean.len()).collect::<Vec<_>>()).iter().all(|a| !a), "a false alarm");
    let triggered = demo_frames("eval-badnet-images-idx3-ubyte.gz", 1000);
    let shown: Vec<usize> = (0..triggered.len()).filter(|&i| triggered.labels().unwrap()[i] != 0).take(30).collect();
    let raised = guard_all(&triggered, &shown);
    let first = raised.iter().position(|&a| a).expect("an alarm once the trigger is in view");
    assert!(first < 10, "the alarm came {first} frames after the trigger appeared");
    // Unscorable frames (a wrong size) raise it too, with a rejected verdict.
    let mut v = BadexpertVerdict::default();
    let bad = [0u8; 3];
    let alarms = (0..10)
        .filter(|_| {
            let status = unsafe { badexpert_guard_frame(g, bad.as_ptr(), bad.len(), &mut v) };
            assert_ne!(status, BadexpertStatus::Ok);
            assert!(!v.accepted);
            v.alarm
        })
        .count();
    assert!(alarms >= 1);
    // 0 turns it off.
    assert_eq!(unsafe { badexpert_guard_set_alarm(g, 0.0, 30.0) }, BadexpertStatus::Ok);
    unsafe {
        badexpert_guard_destroy(&mut g);
        badexpert_bundle_destroy(&mut b);
    }
    let _ = std::fs::remove_dir_all(&copy);
}
