//! `badexpertguard` in real GStreamer pipelines: a camera-sized test source
//! through `gst-launch-1.0`, and the demo's clean and triggered frames,
//! upscaled 16× (nearest), through `filesrc ! rawvideoparse`: the element's
//! verdicts are exactly the runtime guard's on the same frames (and so
//! those of `badexpert-guard run` and `stream`, cli/tests/camera.rs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use badexpert_frames::FrameSource;
use badexpert_runtime::camera::DEFAULT_MAX_FRAME_BYTES;
use badexpert_runtime::{CameraFrame, FrameGeometry, FrameSet, Guard, GuardBundle, PixelFormat};
use gst::prelude::*;

const SCALE: usize = 16;

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("badexpert-gst-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A directory holding only this plugin, for GST_PLUGIN_PATH (one per test: they run at once).
fn plugin_dir(test: &str) -> PathBuf {
    // `cargo test` leaves the cdylib in deps/, beside the test binary;
    // `cargo build` also copies it one level up.
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let candidates = [deps.join("libgstbadexpert.so"), deps.parent().unwrap().join("libgstbadexpert.so")];
    let built = candidates.iter().find(|p| p.is_file());
    let built = built.unwrap_or_else(|| panic!("libgstbadexpert.so is built with the tests: not in {candidates:?}"));
    let dir = scratch(&format!("plugin-{test}"));
    std::fs::copy(built, dir.join("libgstbadexpert.so")).unwrap();
    dir
}

/// Frames `set` (gray 28×28) upscaled `SCALE`× by repeating pixels, one after another.
fn upscaled(set: &FrameSet) -> Vec<u8> {
    let s = set.shape();
    let (w, h) = (s.width * SCALE, s.height * SCALE);
    let mut out = Vec::with_capacity(set.len() * w * h);
    for i in 0..set.len() {
        let f = set.frame(i);
        for y in 0..h {
            out.extend((0..w).map(|x| f[(y / SCALE) * s.width + x / SCALE]));
        }
    }
    out
}

#[test]
fn gst_launch_runs_a_camera_sized_source_through_the_element() {
    let plugins = plugin_dir("launch");
    let registry = plugins.join("registry.bin");
    let bundle = demo().join("bundle");
    for (format, action) in [("RGB", "drop"), ("NV12", "tag"), ("YUY2", "drop"), ("GRAY8", "tag")] {
        let out = Command::new("gst-launch-1.0")
            .args(["-q", "videotestsrc", "num-buffers=60", "!"])
            .arg(format!("video/x-raw,format={format},width=640,height=480"))
            .args(["!", "badexpertguard"])
            .arg(format!("bundle={}", bundle.display()))
            .arg(format!("action={action}"))
            .args(["!", "fakesink"])
            .env("GST_PLUGIN_PATH", &plugins)
            .env("GST_REGISTRY", &registry)
            .output()
            .expect("gst-launch-1.0 runs (apt-get install gstreamer1.0-tools)");
        assert!(out.status.success(), "{format}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // A bundle that is not there fails the pipeline with a message naming it.
    let out = Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "num-buffers=2", "!", "badexpertguard", "bundle=/no/such/bundle", "!", "fakesink"])
        .env("GST_PLUGIN_PATH", &plugins)
        .env("GST_REGISTRY", &registry)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open bundle /no/such/bundle"));
    let _ = std::fs::remove_dir_all(&plugins);
}

#[path = "../../runtime/tests/support/calibrated_copy.rs"]
mod calibrated_copy;
#[path = "../../runtime/tests/support/tamper.rs"]
mod tamper;

#[path = "../../runtime/tests/support/elf.rs"]
mod elf;

#[test]
fn the_plugin_has_no_executable_stack() {
    let plugins = plugin_dir("stack");
    elf::assert_no_executable_stack(&plugins.join("libgstbadexpert.so"));
    let _ = std::fs::remove_dir_all(&plugins);
}

#[test]
fn the_element_refuses_every_tampering_naming_its_cause() {
    let plugins = plugin_dir("seal");
    let registry = plugins.join("registry.bin");
    let key = tamper::trusted_key_file(&plugins);
    let launch = |bundle: &Path, trusted: bool| {
        let mut cmd = Command::new("gst-launch-1.0");
        cmd.args(["-q", "videotestsrc", "num-buffers=2", "!", "video/x-raw,format=GRAY8,width=64,height=48", "!"])
            .args(["badexpertguard", &format!("bundle={}", bundle.display())]);
        if trusted {
            cmd.arg(format!("trusted-key={}", key.display()));
        }
        let out = cmd.args(["!", "fakesink"]).env("GST_PLUGIN_PATH", &plugins).env("GST_REGISTRY", &registry);
        out.output().expect("gst-launch-1.0 runs")
    };
    let ok = tamper::signed_copy(&demo().join("bundle"), "gst-ok");
    let out = launch(&ok, true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for case in tamper::CASES {
        let dir = tamper::signed_copy(&demo().join("bundle"), "gst");
        tamper::apply(case.name, &dir);
        let out = launch(&dir, true);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(case.expect), "{}: {err}", case.name);
        let out = launch(&dir, false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), case.needs_key, "{}: {err}", case.name);
        assert!(case.needs_key || err.contains(case.expect), "{}: {err}", case.name);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&ok);
    let _ = std::fs::remove_dir_all(&plugins);
}

/// Runs the upscaled frames of `raw` through the element; the verdicts it
/// attached (tag) or the frames that came out (drop), and the rejections
/// posted on the bus.
fn through_the_element(raw: &Path, frames: usize, action: &str) -> (Vec<Option<gstbadexpert::TaggedVerdict>>, usize) {
    let (w, h) = (28 * SCALE, 28 * SCALE);
    let description = format!(
        "filesrc location={} ! rawvideoparse format=gray8 width={w} height={h} framerate=30/1 \
         ! badexpertguard name=guard bundle={} action={action} ! appsink name=out sync=false",
        raw.display(),
        demo().join("bundle").display()
    );
    let pipeline = gst::parse::launch(&description).unwrap().downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline.by_name("out").unwrap().downcast::<gst_app::AppSink>().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let collected = seen.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                collected.lock().unwrap().push(gstbadexpert::verdict_of(buffer));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut rejected = 0;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(300)) {
        match msg.view() {
            gst::MessageView::Eos(..) => break,
            gst::MessageView::Error(e) => panic!("pipeline error: {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Element(e)
                if e.structure().is_some_and(|s| s.name() == gstbadexpert::REJECTED_MESSAGE) =>
            {
                rejected += 1;
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() <= frames);
    (seen, rejected)
}

#[test]
fn demo_frames_upscaled_get_the_runtime_guards_verdicts_through_the_element() {
    gst::init().unwrap();
    gstbadexpert::plugin_register_static().unwrap();
    let dir = demo();
    let bundle = GuardBundle::open(dir.join("bundle")).unwrap();
    let mut guard = Guard::new(&bundle).unwrap();
    let work = scratch("frames");
    let geometry =
        FrameGeometry::new(PixelFormat::Gray8, 28 * SCALE, 28 * SCALE, None, DEFAULT_MAX_FRAME_BYTES).unwrap();
    for name in ["eval-clean-images-idx3-ubyte.gz", "eval-badnet-images-idx3-ubyte.gz"] {
        let set = FrameSource::detect(&dir.join(name)).load().unwrap();
        let raw = upscaled(&set);
        let path = work.join(format!("{name}.gray8"));
        std::fs::write(&path, &raw).unwrap();
        let want: Vec<_> = raw
            .chunks(geometry.frame_bytes().unwrap())
            .map(|f| guard.guard_camera(&CameraFrame::new(geometry, f).unwrap()).unwrap())
            .collect();
        let (tagged, rejected) = through_the_element(&path, set.len(), "tag");
        assert_eq!(tagged.len(), set.len(), "{name}: tag passes every frame");
        for (i, (t, w)) in tagged.iter().zip(&want).enumerate() {
            let t = t.as_ref().expect("every tagged buffer carries the meta");
            assert_eq!((t.class as usize, t.score, t.accepted), (w.class, w.score, w.accepted), "{name} frame {i}");
        }
        let expected_rejected = want.iter().filter(|v| !v.accepted).count();
        assert_eq!(rejected, expected_rejected, "{name}: one bus message per rejected frame");
        let (passed, rejected) = through_the_element(&path, set.len(), "drop");
        assert_eq!(
            passed.len(),
            set.len() - expected_rejected,
            "{name}: drop lets exactly the accepted frames through"
        );
        assert_eq!(rejected, expected_rejected);
        eprintln!("{name}: {expected_rejected} of {} upscaled frames rejected, identically by the element", set.len());
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// The stream alarm through the element (docs/design.md §10): silent over
/// the demo's 500 clean frames, one `badexpert-alarm` message within a few
/// frames once BadNet-triggered frames follow. The shipped bundle predates
/// recorded calibration scores: a copy gets them (its stored clean frames'
/// scores, as `stream` uses) and is sealed again; the original is refused
/// with the reason.
#[test]
fn the_alarm_posts_a_message_soon_after_a_trigger_appears_and_not_before() {
    gst::init().unwrap();
    gstbadexpert::plugin_register_static().unwrap();
    let dir = demo();
    let work = scratch("alarm");
    let copy = calibrated_copy::copy_with_calibration_scores(&dir.join("bundle"), "gst");

    let clean = FrameSource::detect(&dir.join("eval-clean-images-idx3-ubyte.gz")).load().unwrap();
    let triggered = FrameSource::detect(&dir.join("eval-badnet-images-idx3-ubyte.gz")).load().unwrap();
    let n_clean = clean.len().min(500);
    let mut raw: Vec<u8> = (0..n_clean).flat_map(|i| clean.frame(i).to_vec()).collect();
    let shown = (0..triggered.len()).filter(|&i| triggered.labels().unwrap()[i] != 0).take(30);
    raw.extend(shown.flat_map(|i| triggered.frame(i).to_vec()));
    let path = work.join("clean-then-triggered.gray8");
    std::fs::write(&path, &raw).unwrap();

    let run = |bundle: &Path| -> Result<Vec<u64>, String> {
        let description = format!(
            "filesrc location={} ! rawvideoparse format=gray8 width=28 height=28 framerate=30/1 \
             ! badexpertguard bundle={} alarm-per-hour=1 alarm-fps=30 ! fakesink sync=false",
            path.display(),
            bundle.display()
        );
        let pipeline = gst::parse::launch(&description).unwrap().downcast::<gst::Pipeline>().unwrap();
        let _ = pipeline.set_state(gst::State::Playing);
        let mut alarms = Vec::new();
        let mut failure = None;
        for msg in pipeline.bus().unwrap().iter_timed(gst::ClockTime::from_seconds(120)) {
            match msg.view() {
                gst::MessageView::Eos(..) => break,
                gst::MessageView::Error(e) => {
                    failure = Some(format!("{} {:?}", e.error(), e.debug()));
                    break;
                }
                gst::MessageView::Element(e) => {
                    if let Some(s) = e.structure().filter(|s| s.name() == gstbadexpert::ALARM_MESSAGE) {
                        assert!(s.get::<f64>("evidence").unwrap() >= s.get::<f64>("threshold").unwrap());
                        alarms.push(s.get::<u64>("frame").unwrap());
                    }
                }
                _ => {}
            }
        }
        pipeline.set_state(gst::State::Null).unwrap();
        failure.map_or(Ok(alarms), Err)
    };
    let alarms = run(&copy).unwrap();
    let first = *alarms.first().expect("an alarm once the trigger is in view") as usize;
    assert!(first >= n_clean, "a false alarm at clean frame {first}");
    assert!(first < n_clean + 10, "the alarm came {} frames after the trigger appeared", first - n_clean);
    let refused = run(&dir.join("bundle")).unwrap_err();
    assert!(refused.contains("calibration scores"), "{refused}");
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&copy);
}
