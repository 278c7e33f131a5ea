// SPDX-License-Identifier: MPL-2.0
//! The track format and what travels downstream with it.
//!
//! The caps are chosen once, from the properties, the producer's first frame (or the draw
//! format) and what downstream accepts, and kept for the life of the stream: later frames are
//! converted to them. The stream-start, tag and optimization-mode events announce the track.
//! The choices are plain functions of the settings; the element asks downstream and sets the
//! result.

use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_video::{VideoFormat, VideoInfo};

use std::sync::atomic::Ordering;

use super::imp::{CAT, CustomVideoSrc, Settings};
use super::stream::Stream;

const DEFAULT_DRAW_WIDTH: u32 = 640;
const DEFAULT_DRAW_HEIGHT: u32 = 480;
const DEFAULT_DRAW_FPS: i32 = 30;
const DEFAULT_DRAW_FORMAT: VideoFormat = VideoFormat::Bgra;

/// The layout of drawn frames: the `caps` property when it is usable, else BGRA at the track
/// size (640x480 when unset). Its rate is [`wanted_fps`] for drawing.
pub(super) fn draw_info(settings: &Settings) -> Option<VideoInfo> {
    let info = match settings.caps.as_ref().map(|i| i.info.clone()) {
        Some(Ok(info)) => (*info).clone(),
        _ => {
            let w = nonzero_or(settings.width, DEFAULT_DRAW_WIDTH);
            let h = nonzero_or(settings.height, DEFAULT_DRAW_HEIGHT);
            VideoInfo::builder(DEFAULT_DRAW_FORMAT, w, h).build().ok()?
        }
    };
    let fps = wanted_fps(settings, Some(&info));
    VideoInfo::builder_from_info(&info).fps(fps).build().ok()
}

fn nonzero_or(value: u32, default: u32) -> u32 {
    if value > 0 { value } else { default }
}

/// The frame rate the track runs at before negotiation: the property, else (for drawn frames,
/// `draw` being their caps) the caps' rate or 30/1; else 0/1, frames leave as they come.
fn wanted_fps(settings: &Settings, draw: Option<&VideoInfo>) -> gst::Fraction {
    if settings.framerate.numer() > 0 {
        return settings.framerate;
    }
    match draw.map(|i| i.fps()) {
        Some(fps) if fps.numer() > 0 => fps,
        Some(_) => gst::Fraction::new(DEFAULT_DRAW_FPS, 1),
        None => gst::Fraction::new(0, 1),
    }
}

/// What the properties fix of the track caps: downstream is asked which of these it takes.
pub(super) fn template(settings: &Settings) -> gst::Caps {
    let mut template = gst_video::VideoCapsBuilder::new();
    if settings.format != VideoFormat::Unknown {
        template = template.format(settings.format);
    }
    if settings.width > 0 {
        template = template.width(settings.width as i32);
    }
    if settings.height > 0 {
        template = template.height(settings.height as i32);
    }
    if settings.framerate.numer() > 0 {
        template = template.framerate(settings.framerate);
    }
    template.build()
}

/// The caps the track would like: the properties, and what they leave open from the
/// producer's (rotated) frame. `None` while the size is not known yet (no frame).
pub(super) fn preferred(
    settings: &Settings,
    producer: Option<&VideoInfo>,
    drawing: bool,
) -> Option<gst::Caps> {
    let from_producer = producer.map(|i| settings.rotation.rotated_size(i.width(), i.height()));
    let width = match (settings.width, from_producer) {
        (0, Some((w, _))) => w,
        (0, None) => return None,
        (w, _) => w,
    };
    let height = match (settings.height, from_producer) {
        (0, Some((_, h))) => h,
        (0, None) => return None,
        (h, _) => h,
    };
    let format = if settings.format != VideoFormat::Unknown {
        settings.format
    } else {
        producer.map(|i| i.format()).unwrap_or(VideoFormat::I420)
    };
    let fps = wanted_fps(settings, producer.filter(|_| drawing));
    Some(
        gst_video::VideoCapsBuilder::new()
            .format(format)
            .width(width as i32)
            .height(height as i32)
            .framerate(fps)
            .pixel_aspect_ratio(gst::Fraction::new(1, 1))
            .build(),
    )
}

/// Fixed caps from what downstream accepts (`peer`, not empty): the preferred caps when
/// downstream takes them, else the nearest of what it takes.
pub(super) fn fixate(peer: &gst::Caps, preferred: &gst::Caps) -> gst::Caps {
    if peer.can_intersect(preferred) {
        let mut caps = peer.intersect(preferred);
        caps.fixate();
        return caps;
    }
    let want = preferred
        .structure(0)
        .expect("preferred caps have a structure");
    let mut caps = peer.clone();
    caps.truncate();
    {
        let s = caps
            .make_mut()
            .structure_mut(0)
            .expect("peer caps are not empty");
        // Only fields downstream names can be fixated (GStreamer asserts they are there).
        for field in ["width", "height"] {
            if let Ok(v) = want.get::<i32>(field)
                && s.has_field(field)
            {
                s.fixate_field_nearest_int(field, v);
            }
        }
        for field in ["framerate", "pixel-aspect-ratio"] {
            if let Ok(v) = want.get::<gst::Fraction>(field)
                && s.has_field(field)
            {
                s.fixate_field_nearest_fraction(field, v);
            }
        }
        if let Ok(format) = want.get::<&str>("format")
            && s.has_field("format")
        {
            s.fixate_field_str("format", format);
        }
    }
    caps.fixate();
    caps
}

/// The stream-scope tags of the track: `label` as title, the bitrate hints in bit/s.
pub(super) fn track_tags(settings: &Settings) -> gst::TagList {
    let mut tags = gst::TagList::new();
    {
        let tags = tags.get_mut().unwrap();
        if let Some(label) = &settings.label {
            tags.add::<gst::tags::Title>(&label.as_str(), gst::TagMergeMode::Replace);
        }
        if settings.bitrate_min > 0 {
            tags.add::<gst::tags::MinimumBitrate>(
                &settings.bitrate_min.saturating_mul(1000),
                gst::TagMergeMode::Replace,
            );
        }
        if settings.bitrate_max > 0 {
            tags.add::<gst::tags::MaximumBitrate>(
                &settings.bitrate_max.saturating_mul(1000),
                gst::TagMergeMode::Replace,
            );
        }
        tags.set_scope(gst::TagScope::Stream);
    }
    tags
}

/// `event` with `id` as its stream id, when it is a stream-start with another id.
pub(super) fn with_stream_id(event: &gst::Event, id: &str) -> Option<gst::Event> {
    let gst::EventView::StreamStart(ss) = event.view() else {
        return None;
    };
    if ss.stream_id() == id {
        return None;
    }
    let mut builder = gst::event::StreamStart::builder(id).flags(ss.stream_flags());
    if let Some(group) = ss.group_id() {
        builder = builder.group_id(group);
    }
    Some(builder.build())
}

impl CustomVideoSrc {
    /// Chooses the output caps from the properties, the producer's frames and what
    /// downstream accepts, and sets them. They stay for the life of the stream.
    pub(super) fn negotiate_output(
        &self,
        stream: &mut Stream,
        producer: Option<&VideoInfo>,
        drawing: bool,
    ) -> Result<(), gst::FlowError> {
        let settings = self.settings().clone();
        let Some(preferred) = preferred(&settings, producer, drawing) else {
            return Ok(());
        };
        let template = template(&settings);
        let pad = self.obj().src_pad().clone();
        let peer = pad.peer_query_caps(Some(&template));
        if peer.is_empty() {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                (
                    "Downstream accepts no format the track can produce: track format {}, downstream accepts {}",
                    template,
                    pad.peer_query_caps(None)
                )
            );
            return Err(gst::FlowError::NotNegotiated);
        }
        let caps = fixate(&peer, &preferred);
        let info = VideoInfo::from_caps(&caps).map_err(|_| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Cannot use caps {}", caps)
            );
            gst::FlowError::NotNegotiated
        })?;
        gst::info!(CAT, imp = self, "track caps {caps}");
        if self.obj().set_caps(&caps).is_err() {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Downstream refused the track caps {}", caps)
            );
            return Err(gst::FlowError::NotNegotiated);
        }
        {
            let mut out = self.out.lock().unwrap();
            out.width = info.width();
            out.height = info.height();
        }
        stream.negotiated(info);
        self.events_dirty.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Keeps the caps while downstream accepts them, else negotiates again from them (a
    /// reconfigure event from downstream).
    pub(super) fn renegotiate(&self, stream: &mut Stream) -> Result<(), gst::LoggableError> {
        let Some(info) = stream.out_info.clone() else {
            return Ok(());
        };
        let caps = info
            .to_caps()
            .map_err(|_| gst::loggable_error!(CAT, "bad caps"))?;
        if self.obj().src_pad().peer_query_accept_caps(&caps) {
            return Ok(());
        }
        gst::info!(
            CAT,
            imp = self,
            "downstream no longer accepts {caps}, renegotiating"
        );
        stream.out_info = None;
        self.negotiate_output(stream, Some(&info), false)
            .map_err(|_| gst::loggable_error!(CAT, "renegotiation failed"))
    }

    /// Stores the track's tags and optimization-mode event on the src pad; they travel
    /// downstream, in order, before the next buffer.
    pub(super) fn store_track_events(&self) {
        if !self.events_dirty.swap(false, Ordering::SeqCst) {
            return;
        }
        let (tags, mode) = {
            let settings = self.settings();
            (track_tags(&settings), settings.optimization_mode)
        };
        let pad = self.obj().src_pad().clone();
        if let Err(e) = pad.store_sticky_event(&gst::event::Tag::new(tags)) {
            gst::debug!(CAT, imp = self, "cannot store tags: {e:?}");
        }
        let ev = crate::events::optimization_mode_event(mode);
        if let Err(e) = pad.store_sticky_event(&ev) {
            gst::debug!(CAT, imp = self, "cannot store optimization mode: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::customvideosrc::VideoRotation;
    use crate::customvideosrc::feed::InputCaps;

    fn i420(w: u32, h: u32) -> VideoInfo {
        VideoInfo::builder(VideoFormat::I420, w, h)
            .fps(gst::Fraction::new(25, 1))
            .build()
            .unwrap()
    }

    #[test]
    fn the_track_follows_the_first_frame_where_the_properties_leave_it_open() {
        gst::init().unwrap();
        let mut s = Settings::default();
        assert_eq!(
            preferred(&s, None, false),
            None,
            "size known before a frame"
        );
        let caps = preferred(&s, Some(&i420(320, 240)), false).unwrap();
        assert_eq!(
            caps.to_string(),
            "video/x-raw, format=(string)I420, width=(int)320, height=(int)240, framerate=(fraction)0/1, pixel-aspect-ratio=(fraction)1/1"
        );
        // Rotation by 90 degrees swaps the producer's size; the properties win over it.
        s.rotation = VideoRotation::Cw90;
        s.width = 100;
        s.format = VideoFormat::Nv12;
        s.framerate = gst::Fraction::new(30, 1);
        let caps = preferred(&s, Some(&i420(320, 240)), false).unwrap();
        let st = caps.structure(0).unwrap();
        assert_eq!(st.get::<i32>("width").unwrap(), 100);
        assert_eq!(st.get::<i32>("height").unwrap(), 320);
        assert_eq!(st.get::<&str>("format").unwrap(), "NV12");
        assert_eq!(
            st.get::<gst::Fraction>("framerate").unwrap(),
            gst::Fraction::new(30, 1)
        );
        // Downstream is asked for what the properties fix; the height stays open.
        let t = template(&s);
        let st = t.structure(0).unwrap();
        assert_eq!(st.get::<&str>("format").unwrap(), "NV12");
        assert_eq!(st.get::<i32>("width").unwrap(), 100);
        assert!(st.get::<i32>("height").is_err());
        assert_eq!(
            st.get::<gst::Fraction>("framerate").unwrap(),
            gst::Fraction::new(30, 1)
        );
    }

    #[test]
    fn drawn_frames_run_at_the_draw_rate() {
        gst::init().unwrap();
        let mut s = Settings::default();
        // Nothing set: BGRA 640x480 at 30/1.
        let info = draw_info(&s).unwrap();
        assert_eq!(
            (info.format(), info.width(), info.height(), info.fps()),
            (VideoFormat::Bgra, 640, 480, gst::Fraction::new(30, 1))
        );
        // The caps property gives layout and rate; the framerate property wins.
        s.caps = Some(InputCaps::new(i420(64, 48).to_caps().unwrap()));
        assert_eq!(draw_info(&s).unwrap().fps(), gst::Fraction::new(25, 1));
        s.framerate = gst::Fraction::new(10, 1);
        let info = draw_info(&s).unwrap();
        assert_eq!((info.width(), info.fps()), (64, gst::Fraction::new(10, 1)));
        let caps = preferred(&s, Some(&info), true).unwrap();
        assert_eq!(
            caps.structure(0)
                .unwrap()
                .get::<gst::Fraction>("framerate")
                .unwrap(),
            gst::Fraction::new(10, 1)
        );
    }

    #[test]
    fn fixation_takes_the_nearest_of_what_downstream_accepts() {
        gst::init().unwrap();
        let preferred = preferred(&Settings::default(), Some(&i420(320, 240)), false).unwrap();
        let peer = gst::Caps::builder("video/x-raw")
            .field("format", gst::List::new(["RGBA", "I420"]))
            .field("width", gst::IntRange::new(16, 4096))
            .field("height", gst::IntRange::new(16, 4096))
            .field(
                "framerate",
                gst::FractionRange::new(gst::Fraction::new(0, 1), gst::Fraction::new(60, 1)),
            )
            .build();
        assert_eq!(fixate(&peer, &preferred), preferred);
        let small = gst::Caps::builder("video/x-raw")
            .field("format", "RGBA")
            .field("width", gst::IntRange::new(16, 160))
            .field("height", 120)
            .build();
        let caps = fixate(&small, &preferred);
        let st = caps.structure(0).unwrap();
        assert!(caps.is_fixed());
        assert_eq!(st.get::<i32>("width").unwrap(), 160);
        assert_eq!(st.get::<&str>("format").unwrap(), "RGBA");
    }

    #[test]
    fn tags_and_stream_id() {
        gst::init().unwrap();
        let mut s = Settings {
            label: Some("Desk".into()),
            bitrate_max: 1000,
            ..Default::default()
        };
        let tags = track_tags(&s);
        assert_eq!(tags.get::<gst::tags::Title>().unwrap().get(), "Desk");
        assert_eq!(
            tags.get::<gst::tags::MaximumBitrate>().unwrap().get(),
            1_000_000
        );
        assert!(tags.get::<gst::tags::MinimumBitrate>().is_none());
        assert_eq!(tags.scope(), gst::TagScope::Stream);
        s.label = None;
        assert!(track_tags(&s).get::<gst::tags::Title>().is_none());

        let ev = gst::event::StreamStart::builder("generated")
            .group_id(gst::GroupId::next())
            .build();
        let renamed = with_stream_id(&ev, "cam-1").unwrap();
        let gst::EventView::StreamStart(ss) = renamed.view() else {
            panic!("not a stream-start");
        };
        assert_eq!(ss.stream_id(), "cam-1");
        assert!(ss.group_id().is_some());
        assert!(with_stream_id(&renamed, "cam-1").is_none());
        assert!(with_stream_id(&gst::event::Eos::new(), "cam-1").is_none());
    }
}
