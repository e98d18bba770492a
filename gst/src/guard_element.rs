//! The `badexpertguard` element: a video filter run in place.

use std::sync::Mutex;

use badexpert_runtime::alarm::{AlarmSettings, StreamAlarm};
use badexpert_runtime::{
    CameraFrame, FrameGeometry, FrameGuard, Guard, GuardBundle, LoadOptions, ParallelGuard, PixelFormat, TrustedKey,
    Verdict,
};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

/// Name of the custom meta a tagged buffer carries (fields: `class` u32,
/// `score` f32, `accepted` bool, `error` string when the frame could not be scored).
pub const VERDICT_META: &str = "BadexpertVerdictMeta";
/// Name of the element message posted for each rejected frame (fields:
/// `frame` u64, `pts` u64 ns when known, `class`, `score`, `threshold`,
/// `error` when the frame could not be scored).
pub const REJECTED_MESSAGE: &str = "badexpert-rejected";
/// Name of the element message posted for each stream alarm (with
/// `alarm-per-hour` set; fields: `frame` u64, `pts` u64 ns when known,
/// `evidence` f64, `threshold` f64, `run-frames` u64; docs/design.md §10).
pub const ALARM_MESSAGE: &str = "badexpert-alarm";

/// What the element does with a frame the guard rejects.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstBadexpertAction")]
pub enum Action {
    /// Drop it: only accepted frames leave the element.
    #[default]
    #[enum_value(name = "Drop rejected frames", nick = "drop")]
    Drop,
    /// Pass every frame, with a `BadexpertVerdictMeta` saying whether it was accepted.
    #[enum_value(name = "Pass every frame with its verdict attached", nick = "tag")]
    Tag,
}

/// A verdict as read back from a tagged buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedVerdict {
    pub class: u32,
    pub score: f32,
    pub accepted: bool,
    /// Why the frame could not be scored (it is then rejected).
    pub error: Option<String>,
}

/// The verdict `badexpertguard action=tag` attached to `buffer`, if any.
pub fn verdict_of(buffer: &gst::BufferRef) -> Option<TaggedVerdict> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, VERDICT_META).ok()?;
    let s = meta.structure();
    Some(TaggedVerdict {
        class: s.get("class").ok()?,
        score: s.get("score").ok()?,
        accepted: s.get("accepted").ok()?,
        error: s.get("error").ok(),
    })
}

glib::wrapper! {
    /// The `badexpertguard` element.
    pub struct BadexpertGuard(ObjectSubclass<imp::BadexpertGuard>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

pub(crate) fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    if !gst::meta::CustomMeta::is_registered(VERDICT_META) {
        gst::meta::CustomMeta::register(VERDICT_META, &[]);
    }
    gst::Element::register(Some(plugin), "badexpertguard", gst::Rank::NONE, BadexpertGuard::static_type())
}

/// The frame geometry of negotiated caps.
fn geometry_of(info: &gst_video::VideoInfo) -> Result<FrameGeometry, String> {
    let format = match info.format() {
        gst_video::VideoFormat::Gray8 => PixelFormat::Gray8,
        gst_video::VideoFormat::Rgb => PixelFormat::Rgb24,
        gst_video::VideoFormat::Bgr => PixelFormat::Bgr24,
        gst_video::VideoFormat::Yuy2 => PixelFormat::Yuyv,
        gst_video::VideoFormat::Nv12 => PixelFormat::Nv12,
        other => return Err(format!("unsupported video format {other:?}")),
    };
    let stride = info.stride()[0];
    if stride <= 0 {
        return Err(format!("negative or zero row stride {stride}"));
    }
    FrameGeometry::new(
        format,
        info.width() as usize,
        info.height() as usize,
        Some(stride as usize),
        badexpert_runtime::camera::DEFAULT_MAX_FRAME_BYTES,
    )
    .map_err(|e| e.to_string())
}

mod imp {
    use super::*;

    static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
        gst::DebugCategory::new("badexpertguard", gst::DebugColorFlags::empty(), Some("badexpert guard"))
    });

    #[derive(Debug, Clone)]
    struct Settings {
        bundle: Option<String>,
        trusted_key: Option<String>,
        action: Action,
        parallel: bool,
        /// 0: no stream alarm.
        alarm_per_hour: f64,
        alarm_fps: f64,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                bundle: None,
                trusted_key: None,
                action: Action::default(),
                parallel: false,
                alarm_per_hour: 0.0,
                alarm_fps: AlarmSettings::default().frame_rate,
            }
        }
    }

    /// What runs between start and stop.
    struct State {
        guard: Box<dyn FrameGuard + Send>,
        geometry: Option<FrameGeometry>,
        /// NV12 planes made contiguous when the buffer's are not.
        contiguous: Vec<u8>,
        frames: u64,
        rejected: u64,
        alarm: Option<StreamAlarm>,
    }

    #[derive(Default)]
    pub struct BadexpertGuard {
        settings: Mutex<Settings>,
        state: Mutex<Option<State>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for BadexpertGuard {
        const NAME: &'static str = "GstBadexpertGuard";
        type Type = super::BadexpertGuard;
        type ParentType = gst_video::VideoFilter;
    }

    impl ObjectImpl for BadexpertGuard {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPERTIES: std::sync::LazyLock<Vec<glib::ParamSpec>> = std::sync::LazyLock::new(|| {
                vec![
                    glib::ParamSpecString::builder("bundle")
                        .nick("Guard bundle")
                        .blurb("Directory of the guard bundle (badexpert-convert bundle --out)")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("trusted-key")
                        .nick("Trusted key")
                        .blurb("Public key file (badexpert-convert keygen): only bundles it signed start")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecEnum::builder_with_default("action", Action::Drop)
                        .nick("Action")
                        .blurb("What to do with a rejected frame: drop it, or tag every frame with its verdict")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecBoolean::builder("parallel")
                        .nick("Parallel")
                        .blurb("Run the three models on separate threads")
                        .default_value(false)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecDouble::builder("alarm-per-hour")
                        .nick("Stream alarm rate")
                        .blurb("Post a badexpert-alarm message when evidence of a trigger in view builds up, with at most this many false alarms per hour of clean video (0: off)")
                        .minimum(0.0)
                        .default_value(0.0)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecDouble::builder("alarm-fps")
                        .nick("Stream alarm frame rate")
                        .blurb("Frames per second, for alarm-per-hour")
                        .minimum(0.001)
                        .default_value(AlarmSettings::default().frame_rate)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecUInt64::builder("rejected")
                        .nick("Rejected")
                        .blurb("Frames rejected so far")
                        .read_only()
                        .build(),
                    glib::ParamSpecUInt64::builder("alarms")
                        .nick("Alarms")
                        .blurb("Stream alarms raised so far")
                        .read_only()
                        .build(),
                ]
            });
            PROPERTIES.as_ref()
        }

        fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
            let mut s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
            match pspec.name() {
                "bundle" => s.bundle = value.get().expect("type checked upstream"),
                "trusted-key" => s.trusted_key = value.get().expect("type checked upstream"),
                "action" => s.action = value.get().expect("type checked upstream"),
                "parallel" => s.parallel = value.get().expect("type checked upstream"),
                "alarm-per-hour" => s.alarm_per_hour = value.get().expect("type checked upstream"),
                "alarm-fps" => s.alarm_fps = value.get().expect("type checked upstream"),
                other => gst::warning!(CAT, imp = self, "no writable property {other}"),
            }
        }

        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            let s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
            match pspec.name() {
                "bundle" => s.bundle.to_value(),
                "trusted-key" => s.trusted_key.to_value(),
                "action" => s.action.to_value(),
                "parallel" => s.parallel.to_value(),
                "alarm-per-hour" => s.alarm_per_hour.to_value(),
                "alarm-fps" => s.alarm_fps.to_value(),
                "alarms" => {
                    let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    state.as_ref().and_then(|st| st.alarm.as_ref()).map_or(0u64, |a| a.alarms()).to_value()
                }
                _ => {
                    let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    state.as_ref().map_or(0u64, |st| st.rejected).to_value()
                }
            }
        }
    }

    impl GstObjectImpl for BadexpertGuard {}

    impl ElementImpl for BadexpertGuard {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static META: std::sync::LazyLock<gst::subclass::ElementMetadata> = std::sync::LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "BaDExpert backdoor-input guard",
                    "Filter/Analyzer/Video",
                    "Drops (or tags) video frames that a BaDExpert guard bundle flags as carrying a backdoor trigger",
                    "badexpert",
                )
            });
            Some(&*META)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: std::sync::LazyLock<Vec<gst::PadTemplate>> = std::sync::LazyLock::new(|| {
                let caps = gst_video::VideoCapsBuilder::new()
                    .format_list([
                        gst_video::VideoFormat::Gray8,
                        gst_video::VideoFormat::Rgb,
                        gst_video::VideoFormat::Bgr,
                        gst_video::VideoFormat::Yuy2,
                        gst_video::VideoFormat::Nv12,
                    ])
                    .build();
                [gst::PadDirection::Src, gst::PadDirection::Sink]
                    .into_iter()
                    .map(|dir| {
                        let name = if dir == gst::PadDirection::Src { "src" } else { "sink" };
                        gst::PadTemplate::new(name, dir, gst::PadPresence::Always, &caps).expect("valid template")
                    })
                    .collect()
            });
            TEMPLATES.as_ref()
        }
    }

    impl BaseTransformImpl for BadexpertGuard {
        const MODE: gst_base::subclass::BaseTransformMode = gst_base::subclass::BaseTransformMode::AlwaysInPlace;
        const PASSTHROUGH_ON_SAME_CAPS: bool = false;
        const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

        fn start(&self) -> Result<(), gst::ErrorMessage> {
            let settings = self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let Some(dir) = settings.bundle else {
                return Err(gst::error_msg!(gst::ResourceError::NotFound, ["no bundle set (bundle=DIR)"]));
            };
            let trusted_key = match &settings.trusted_key {
                Some(path) => Some(TrustedKey::read(std::path::Path::new(path)).map_err(|e| {
                    gst::error_msg!(gst::ResourceError::OpenRead, ["cannot read trusted-key {path}: {e}"])
                })?),
                None => None,
            };
            let bundle = GuardBundle::open_with(&dir, LoadOptions { trusted_key, ..LoadOptions::default() })
                .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ["cannot open bundle {dir}: {e}"]))?;
            let guard: Box<dyn FrameGuard + Send> = if settings.parallel {
                Box::new(ParallelGuard::new(&bundle).map_err(|e| gst::error_msg!(gst::CoreError::Failed, ["{e}"]))?)
            } else {
                Box::new(Guard::new(&bundle).map_err(|e| gst::error_msg!(gst::CoreError::Failed, ["{e}"]))?)
            };
            let alarm = if settings.alarm_per_hour > 0.0 {
                let alarm_settings = AlarmSettings {
                    false_alarms_per_hour: settings.alarm_per_hour,
                    frame_rate: settings.alarm_fps,
                    ..AlarmSettings::default()
                };
                let scores = &bundle.manifest().decision.calibration_scores;
                Some(StreamAlarm::new(scores, alarm_settings).map_err(|e| {
                    gst::error_msg!(gst::CoreError::Failed, ["alarm-per-hour: bundle {dir}: {e} (convert it again)"])
                })?)
            } else {
                None
            };
            gst::info!(CAT, imp = self, "guarding with {dir} (input {})", bundle.manifest().input.shape);
            *self.state.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(State { guard, geometry: None, contiguous: vec![], frames: 0, rejected: 0, alarm });
            Ok(())
        }

        fn stop(&self) -> Result<(), gst::ErrorMessage> {
            if let Some(st) = self.state.lock().unwrap_or_else(|p| p.into_inner()).take() {
                gst::info!(CAT, imp = self, "{} frames, {} rejected", st.frames, st.rejected);
            }
            Ok(())
        }
    }

    impl VideoFilterImpl for BadexpertGuard {
        fn set_info(
            &self,
            _incaps: &gst::Caps,
            in_info: &gst_video::VideoInfo,
            _outcaps: &gst::Caps,
            _out_info: &gst_video::VideoInfo,
        ) -> Result<(), gst::LoggableError> {
            let geometry = geometry_of(in_info).map_err(|e| gst::loggable_error!(CAT, "{e}"))?;
            if let Some(st) = self.state.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                st.geometry = Some(geometry);
            }
            Ok(())
        }

        fn transform_frame_ip(
            &self,
            frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
        ) -> Result<gst::FlowSuccess, gst::FlowError> {
            let action = self.settings.lock().unwrap_or_else(|p| p.into_inner()).action;
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(st) = guard.as_mut() else { return Err(gst::FlowError::Flushing) };
            let index = st.frames;
            st.frames += 1;
            // Fail closed: a frame that cannot be scored is rejected with its reason.
            let verdict = guard_frame(st, frame);
            let accepted = verdict.as_ref().is_ok_and(|v| v.accepted);
            let score = verdict.as_ref().ok().map(|v| v.score);
            if let Some(event) = st.alarm.as_mut().and_then(|a| a.observe(score)) {
                let mut s = gst::Structure::builder(ALARM_MESSAGE)
                    .field("frame", index)
                    .field("evidence", event.evidence)
                    .field("threshold", event.threshold)
                    .field("run-frames", event.run_frames);
                if let Some(pts) = frame.buffer().pts() {
                    s = s.field("pts", pts.nseconds());
                }
                let _ = self.obj().post_message(gst::message::Element::builder(s.build()).src(&*self.obj()).build());
            }
            if !accepted {
                st.rejected += 1;
                let mut s = gst::Structure::builder(REJECTED_MESSAGE).field("frame", index);
                if let Some(pts) = frame.buffer().pts() {
                    s = s.field("pts", pts.nseconds());
                }
                s = match &verdict {
                    Ok(v) => s
                        .field("class", v.class as u32)
                        .field("score", v.score)
                        .field("threshold", st.guard.decision().threshold_for(v.class)),
                    Err(e) => s.field("error", e.as_str()),
                };
                drop(guard);
                let _ = self.obj().post_message(gst::message::Element::builder(s.build()).src(&*self.obj()).build());
            } else {
                drop(guard);
            }
            match action {
                Action::Drop if !accepted => Ok(gst_base::BASE_TRANSFORM_FLOW_DROPPED),
                Action::Drop => Ok(gst::FlowSuccess::Ok),
                Action::Tag => {
                    // SAFETY: the frame maps a buffer BaseTransform made writable for this
                    // in-place transform; adding a meta touches no mapped memory.
                    let buffer = unsafe { gst::BufferRef::from_mut_ptr((*frame.as_mut_ptr()).buffer) };
                    let mut meta =
                        gst::meta::CustomMeta::add(buffer, VERDICT_META).map_err(|_| gst::FlowError::Error)?;
                    let s = meta.mut_structure();
                    match &verdict {
                        Ok(v) => {
                            s.set("class", v.class as u32);
                            s.set("score", v.score);
                            s.set("accepted", v.accepted);
                        }
                        Err(e) => {
                            s.set("class", 0u32);
                            s.set("score", f32::NAN);
                            s.set("accepted", false);
                            s.set("error", e.as_str());
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                }
            }
        }
    }

    /// The verdict for one mapped frame, or why it could not be scored.
    fn guard_frame(st: &mut State, frame: &gst_video::VideoFrameRef<&mut gst::BufferRef>) -> Result<Verdict, String> {
        let geometry = st.geometry.ok_or("no caps negotiated")?;
        let luma = frame.plane_data(0).map_err(|e| e.to_string())?;
        let verdict = if geometry.format == PixelFormat::Nv12 {
            // GStreamer may place the chroma plane anywhere; the guard reads one block.
            let chroma = frame.plane_data(1).map_err(|e| e.to_string())?;
            let (y_bytes, uv_bytes) = (geometry.stride * geometry.height, geometry.stride * geometry.height / 2);
            if frame.plane_stride()[1] as usize != geometry.stride || luma.len() < y_bytes || chroma.len() < uv_bytes {
                return Err("nv12 planes with different strides are not supported".into());
            }
            st.contiguous.resize(y_bytes + uv_bytes, 0);
            st.contiguous[..y_bytes].copy_from_slice(&luma[..y_bytes]);
            st.contiguous[y_bytes..].copy_from_slice(&chroma[..uv_bytes]);
            let frame = CameraFrame::new(geometry, &st.contiguous).map_err(|e| e.to_string())?;
            st.guard.guard_camera(&frame)
        } else {
            let frame = CameraFrame::new(geometry, luma).map_err(|e| e.to_string())?;
            st.guard.guard_camera(&frame)
        };
        verdict.map_err(|e| e.to_string())
    }
}
