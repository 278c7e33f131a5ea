// SPDX-License-Identifier: MPL-2.0
//! `customvideosrc`: any frame producer as one steady, well-formed live video track.
//!
//! Three kinds of producer feed the track:
//! * **push** — the application pushes frames: [`CustomVideoSrc::push_frame`],
//!   [`CustomVideoSrc::push_sample`], [`CustomVideoSrc::end_of_stream`] from Rust, or the action
//!   signals `push-buffer`, `push-sample`, `end-of-stream` from C and Python;
//! * **draw** — the element asks the application to draw each frame at the track frame rate
//!   ([`CustomVideoSrc::set_draw_callback`] or the `draw-frame` signal);
//! * **description** — the `producer` property holds a gst-launch description of any source
//!   (`"v4l2src"`, `"filesrc location=a.webm ! decodebin"`, `"videotestsrc pattern=ball"`).
//!
//! The element normalises every frame to the track format (rotation, conversion, scaling),
//! paces the output, and offers track controls (`enabled`, `muted`, `replace-producer`) and
//! statistics (`stats`, `track-ended`).

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

mod app;
mod convert;
mod feed;
mod format;
mod imp;
mod pacer;
pub mod presets;
mod producer;
mod stream;

/// The track's optimization mode is the vocabulary of [`crate::events`]; it is re-exported
/// here so that `customvideosrc::OptimizationMode` keeps naming it.
pub use crate::events::OptimizationMode;

/// The rotation of frames: the same type as the `rotation` property's values.
pub type Rotation = VideoRotation;

glib::wrapper! {
    /// The `customvideosrc` element. See the module documentation.
    pub struct CustomVideoSrc(ObjectSubclass<imp::CustomVideoSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

/// What the track does when its producer ends or fails.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCustomVideoOnProducerEnd")]
pub enum OnProducerEnd {
    /// The track ends too: end-of-stream is sent downstream.
    #[default]
    #[enum_value(
        name = "EOS: end the track (send end-of-stream downstream)",
        nick = "eos"
    )]
    Eos = 0,
    /// The track goes on with black frames until a new producer is set.
    #[enum_value(name = "Black: keep the track alive with black frames", nick = "black")]
    Black = 1,
    /// The track goes on repeating the last frame until a new producer is set.
    #[enum_value(
        name = "Freeze: keep the track alive repeating the last frame",
        nick = "freeze"
    )]
    Freeze = 2,
}

/// Clockwise rotation applied to every frame on its way through the track (the `rotation`
/// property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCustomVideoRotation")]
pub enum VideoRotation {
    #[default]
    #[enum_value(name = "No rotation", nick = "0")]
    None = 0,
    #[enum_value(name = "Rotate 90 degrees clockwise", nick = "90")]
    Cw90 = 90,
    #[enum_value(name = "Rotate 180 degrees", nick = "180")]
    Cw180 = 180,
    #[enum_value(
        name = "Rotate 270 degrees clockwise (90 counter-clockwise)",
        nick = "270"
    )]
    Cw270 = 270,
}

impl VideoRotation {
    /// Whether this rotation swaps width and height.
    pub fn swaps_dimensions(self) -> bool {
        matches!(self, VideoRotation::Cw90 | VideoRotation::Cw270)
    }

    /// The frame size after rotating a `width` x `height` frame.
    pub fn rotated_size(self, width: u32, height: u32) -> (u32, u32) {
        if self.swaps_dimensions() {
            (height, width)
        } else {
            (width, height)
        }
    }
}

/// The draw callback: fill the writable frame, return `true` when a new frame was drawn
/// (`false` repeats the previous frame). The second argument is the running time the frame
/// will carry.
pub type DrawCallback = dyn Fn(&mut gst_video::VideoFrameRef<&mut gst::BufferRef>, gst::ClockTime) -> bool
    + Send
    + Sync
    + 'static;

impl CustomVideoSrc {
    /// Creates a `customvideosrc` element.
    pub fn new(name: Option<&str>) -> Self {
        let mut builder = glib::Object::builder::<Self>();
        if let Some(name) = name {
            builder = builder.property("name", name);
        }
        builder.build()
    }

    /// Pushes one frame described by the `caps` property (or the caps of the last pushed
    /// sample). The buffer is not copied when it already has the track format.
    ///
    /// Frames pushed before the element is PLAYING are held (at most `max-buffers`, newest
    /// kept) and stamped when they leave. Errors: [`gst::FlowError::NotNegotiated`] when no
    /// caps are known or they cannot be converted, [`gst::FlowError::Error`] for a buffer whose
    /// size does not match the caps (an element error names both), [`gst::FlowError::Eos`]
    /// after [`Self::end_of_stream`], [`gst::FlowError::NotLinked`] while a `producer`
    /// description feeds the track.
    pub fn push_frame(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.imp().push(buffer, None)
    }

    /// Pushes a sample: its caps (if any) become the input caps for this and later frames.
    pub fn push_sample(&self, sample: &gst::Sample) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.imp().push_sample(sample)
    }

    /// Ends the pushed producer; `on-producer-end` decides what the track does next.
    pub fn end_of_stream(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.imp().app_end_of_stream()
    }

    /// Sets (or with `None` removes) the draw callback, called at the track frame rate on the
    /// streaming thread while no `producer` description is set.
    pub fn set_draw_callback<F>(&self, callback: Option<F>)
    where
        F: Fn(&mut gst_video::VideoFrameRef<&mut gst::BufferRef>, gst::ClockTime) -> bool
            + Send
            + Sync
            + 'static,
    {
        self.imp().set_draw_callback(
            callback.map(|f| std::sync::Arc::new(f) as std::sync::Arc<DrawCallback>),
        );
    }

    /// Swaps the producer while the track runs: a gst-launch description, or `None` to go back
    /// to pushed or drawn frames. The old producer keeps feeding the track until the new one
    /// delivers its first frame; the caps downstream do not change.
    pub fn replace_producer(&self, description: Option<&str>) -> Result<(), glib::BoolError> {
        self.imp().replace_producer(description.map(str::to_owned))
    }

    /// The track statistics (same as the `stats` property).
    pub fn stats(&self) -> gst::Structure {
        self.property("stats")
    }
}

/// Registers `customvideosrc` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    OptimizationMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    OnProducerEnd::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    VideoRotation::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "customvideosrc",
        gst::Rank::NONE,
        CustomVideoSrc::static_type(),
    )
}
