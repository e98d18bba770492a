//! GStreamer plugin of **badexpert**: the `badexpertguard` element guards
//! every video frame with a BaDExpert guard bundle and drops the frames it
//! flags as triggered (`action=drop`, the default) or passes every frame
//! with its verdict attached as a `BadexpertVerdictMeta` custom meta
//! (`action=tag`). Each rejected frame also posts a `badexpert-rejected`
//! element message on the bus; with `alarm-per-hour` set, a stream alarm
//! (docs/design.md §10) posts a `badexpert-alarm` message. Frames of any size in GRAY8, RGB, BGR, YUY2
//! and NV12 are brought to the model's input as the bundle's manifest says
//! (docs/camera.md).
//!
//! ```sh
//! GST_PLUGIN_PATH=target/release gst-launch-1.0 v4l2src ! videoconvert ! video/x-raw,format=RGB \
//!     ! badexpertguard bundle=guard.bundle ! autovideosink
//! ```
//!
//! In a program, register it with [`plugin_register_static`] (or load the
//! `libgstbadexpert.so` from `GST_PLUGIN_PATH`), then read the verdict of a
//! tagged buffer with [`verdict_of`].

mod guard_element;

pub use guard_element::{
    verdict_of, Action, BadexpertGuard, TaggedVerdict, ALARM_MESSAGE, REJECTED_MESSAGE, VERDICT_META,
};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), gst::glib::BoolError> {
    guard_element::register(plugin)
}

gst::plugin_define!(
    badexpert,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    env!("CARGO_PKG_VERSION"),
    "MIT/X11",
    "badexpert",
    "badexpert",
    "badexpert (built from source)"
);
