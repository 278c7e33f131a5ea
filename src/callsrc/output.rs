// SPDX-License-Identifier: MPL-2.0
//! callsrc's output: an `appsrc` behind the bin's `src` pad that outlives the subscriptions.
//! Each subscription (one webrtcbin and its receive chain, ending in an `appsink`) hands its
//! frames here; while the publisher is gone, the last frame or black frames are repeated at
//! the publisher's frame rate, so the stream continues across a publisher that leaves and
//! comes back, or a change of publisher.
//!
//! Timestamps: frames keep the running time webrtcbin's jitter buffer gave them (every
//! element of the bin shares its base time); repeated frames get the running time at which
//! they are made, minus the delay real frames had, so the output never goes back in time.

use gst::prelude::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::PublisherGone;
use super::imp::CAT;

/// Frame interval assumed until the publisher's frames tell another.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(33);
/// Frames queued in the output before the oldest is dropped (a downstream that stalls must
/// not build up delay in a live source).
const MAX_QUEUED: u64 = 30;

#[derive(Default)]
struct Inner {
    /// The last frame from the publisher.
    last: Option<gst::Sample>,
    /// A black frame of the output's caps, made when first needed.
    black: Option<gst::Buffer>,
    /// Size of the first decoded frame: later frames are scaled to it.
    size: Option<(i32, i32)>,
    last_pts: Option<gst::ClockTime>,
    /// How far behind the running time real frames are pushed (jitter buffer, decoding).
    lag: gst::ClockTime,
    last_real: Option<Instant>,
    /// Smoothed interval between the publisher's frames.
    interval: Option<Duration>,
    /// Frames output from the publisher.
    frames: u64,
    /// Frames repeated or black while the publisher was gone.
    filled: u64,
    freezes: u64,
    freeze_time: Duration,
    eos: bool,
}

/// Freeze counts, as WebRTC statistics define them.
pub(super) struct Freezes {
    pub frames: u64,
    pub filled: u64,
    pub count: u64,
    pub time: Duration,
}

pub(super) struct Output {
    appsrc: gst_app::AppSrc,
    inner: Mutex<Inner>,
}

impl Output {
    pub fn new() -> Output {
        let appsrc = gst_app::AppSrc::builder()
            .name("output")
            .is_live(true)
            .format(gst::Format::Time)
            .max_buffers(MAX_QUEUED)
            .build();
        appsrc.set_property_from_str("leaky-type", "downstream");
        Output {
            appsrc,
            inner: Mutex::default(),
        }
    }

    pub fn element(&self) -> &gst::Element {
        self.appsrc.upcast_ref()
    }

    /// Forgets everything of the last run.
    pub fn reset(&self) {
        *self.inner.lock().unwrap() = Inner::default();
        self.appsrc.set_caps(None::<&gst::Caps>);
    }

    /// The size the decoded output keeps, once known.
    pub fn size(&self) -> Option<(i32, i32)> {
        self.inner.lock().unwrap().size
    }

    /// Keeps the size of the first decoded frame; returns the size the output keeps.
    pub fn keep_size(&self, size: (i32, i32)) -> (i32, i32) {
        *self.inner.lock().unwrap().size.get_or_insert(size)
    }

    /// Sets the latency the output reports (that of the subscription's receive chain).
    pub fn set_latency(&self, min: gst::ClockTime, max: Option<gst::ClockTime>) {
        self.appsrc.set_latency(min, max);
    }

    /// When the publisher's last frame was output.
    pub fn last_frame(&self) -> Option<Instant> {
        self.inner.lock().unwrap().last_real
    }

    pub fn interval(&self) -> Duration {
        self.inner
            .lock()
            .unwrap()
            .interval
            .unwrap_or(DEFAULT_INTERVAL)
    }

    pub fn freezes(&self) -> Freezes {
        let inner = self.inner.lock().unwrap();
        Freezes {
            frames: inner.frames,
            filled: inner.filled,
            count: inner.freezes,
            time: inner.freeze_time,
        }
    }

    /// Outputs a frame from the publisher, made at running time `now`.
    pub fn push(&self, sample: gst::Sample, now: Option<gst::ClockTime>) {
        let at = Instant::now();
        let sample = {
            let mut inner = self.inner.lock().unwrap();
            if inner.eos {
                return;
            }
            if let Some(last) = inner.last_real {
                let gap = at.duration_since(last);
                let interval = inner.interval.unwrap_or(DEFAULT_INTERVAL);
                // A freeze as WebRTC statistics count one: a gap of more than three frame
                // intervals and more than one interval plus 150 ms.
                if gap > (interval * 3).max(interval + Duration::from_millis(150)) {
                    inner.freezes += 1;
                    inner.freeze_time += gap;
                } else {
                    inner.interval = Some(match inner.interval {
                        Some(i) => (i * 7 + gap) / 8,
                        None => gap,
                    });
                }
            }
            inner.last_real = Some(at);
            inner.frames += 1;
            let pts = sample.buffer().and_then(|b| b.pts());
            let sample = match (pts, inner.last_pts) {
                (Some(pts), Some(last)) if pts <= last => {
                    restamp(&sample, last + gst::ClockTime::from_nseconds(1))
                }
                _ => sample,
            };
            let pts = sample.buffer().and_then(|b| b.pts());
            if let (Some(now), Some(pts)) = (now, pts) {
                inner.lag = now.saturating_sub(pts);
            }
            inner.last_pts = pts.or(inner.last_pts);
            inner.last = Some(sample.clone());
            sample
        };
        if let Err(e) = self.appsrc.push_sample(&sample) {
            gst::debug!(CAT, obj = self.appsrc, "frame not output: {e:?}");
        }
    }

    /// Outputs, at running time `now`, what stands in for the publisher while it is gone:
    /// its last frame again, or black. Nothing before its first frame (the size and format
    /// are not known yet).
    pub fn fill(&self, mode: PublisherGone, now: gst::ClockTime) {
        let (last, black) = {
            let inner = self.inner.lock().unwrap();
            if inner.eos {
                return;
            }
            (inner.last.clone(), inner.black.clone())
        };
        let Some(last) = last else { return };
        let Some(caps) = last.caps().map(|c| c.to_owned()) else {
            return;
        };
        let buffer = match mode {
            PublisherGone::Eos => return,
            PublisherGone::Freeze => last.buffer_owned(),
            PublisherGone::Black => match black.or_else(|| black_frame(&caps)) {
                Some(b) => Some(b),
                None => last.buffer_owned(),
            },
        };
        let Some(mut buffer) = buffer else { return };
        let sample = {
            let mut inner = self.inner.lock().unwrap();
            if mode == PublisherGone::Black && inner.black.is_none() {
                inner.black = Some(buffer.clone());
            }
            let mut pts = now.saturating_sub(inner.lag);
            if let Some(last) = inner.last_pts
                && pts <= last
            {
                pts = last + gst::ClockTime::from_nseconds(1);
            }
            inner.last_pts = Some(pts);
            inner.filled += 1;
            {
                let b = buffer.make_mut();
                b.set_pts(pts);
                b.set_dts(gst::ClockTime::NONE);
                b.set_duration(gst::ClockTime::NONE);
                b.unset_flags(gst::BufferFlags::DISCONT);
            }
            gst::Sample::builder().buffer(&buffer).caps(&caps).build()
        };
        if let Err(e) = self.appsrc.push_sample(&sample) {
            gst::debug!(CAT, obj = self.appsrc, "frame not output: {e:?}");
        }
    }

    /// Ends the output (EOS), once.
    pub fn end(&self) {
        {
            let mut inner = self.inner.lock().unwrap();
            if std::mem::replace(&mut inner.eos, true) {
                return;
            }
        }
        let _ = self.appsrc.end_of_stream();
    }
}

/// `sample` with its buffer stamped `pts`.
fn restamp(sample: &gst::Sample, pts: gst::ClockTime) -> gst::Sample {
    let Some(mut buffer) = sample.buffer_owned() else {
        return sample.clone();
    };
    buffer.make_mut().set_pts(pts);
    let mut builder = gst::Sample::builder().buffer(&buffer);
    let caps = sample.caps().map(|c| c.to_owned());
    if let Some(caps) = &caps {
        builder = builder.caps(caps);
    }
    builder.build()
}

/// A black frame of raw video `caps`, as `videotestsrc` makes it for any format.
fn black_frame(caps: &gst::CapsRef) -> Option<gst::Buffer> {
    let mut caps = caps.to_owned();
    caps.make_mut().set("framerate", gst::Fraction::new(30, 1));
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc pattern=black num-buffers=1 ! capsfilter caps=\"{caps}\" ! appsink name=sink"
    ))
    .ok()?
    .downcast::<gst::Pipeline>()
    .ok()?;
    let sink = pipeline
        .by_name("sink")?
        .downcast::<gst_app::AppSink>()
        .ok()?;
    pipeline.set_state(gst::State::Playing).ok()?;
    let sample = sink.try_pull_preroll(gst::ClockTime::from_seconds(2));
    let _ = pipeline.set_state(gst::State::Null);
    let buffer = sample.and_then(|s| s.buffer_owned());
    if buffer.is_none() {
        gst::warning!(
            CAT,
            "cannot make a black frame of {caps}: repeating the last"
        );
    }
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(caps: &gst::Caps, pts_ms: u64, byte: u8) -> gst::Sample {
        let mut buffer = gst::Buffer::from_mut_slice(vec![byte; 4 * 4 * 4]);
        buffer
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(pts_ms));
        gst::Sample::builder().buffer(&buffer).caps(caps).build()
    }

    /// The output playing into an appsink.
    fn playing() -> (Output, gst::Pipeline, gst_app::AppSink) {
        gst::init().unwrap();
        let output = Output::new();
        let sink = gst_app::AppSink::builder().sync(false).build();
        let pipeline = gst::Pipeline::new();
        pipeline
            .add_many([output.element(), sink.upcast_ref()])
            .unwrap();
        output.element().link(&sink).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        (output, pipeline, sink)
    }

    fn pull(sink: &gst_app::AppSink) -> (gst::ClockTime, u8) {
        let s = sink
            .try_pull_sample(gst::ClockTime::from_seconds(2))
            .expect("a frame");
        let b = s.buffer().unwrap();
        (b.pts().unwrap(), b.map_readable().unwrap()[0])
    }

    #[test]
    fn stand_ins_repeat_or_black_the_last_frame_and_time_only_goes_forward() {
        let (output, pipeline, sink) = playing();
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "RGBA")
            .field("width", 4)
            .field("height", 4)
            .field("framerate", gst::Fraction::new(30, 1))
            .build();
        let ms = gst::ClockTime::from_mseconds;
        // Nothing stands in before the first frame: its size is not known.
        output.fill(PublisherGone::Freeze, ms(10));
        output.push(sample(&caps, 100, 200), Some(ms(150)));
        assert_eq!(pull(&sink), (ms(100), 200));
        // The last frame again, 50 ms (the delay frames had) before the time it is made.
        output.fill(PublisherGone::Freeze, ms(300));
        assert_eq!(pull(&sink), (ms(250), 200));
        // Black, in the same format (RGBA black is 0).
        output.fill(PublisherGone::Black, ms(340));
        assert_eq!(pull(&sink), (ms(290), 0));
        // A new publisher whose frames are stamped earlier: moved after the last stand-in.
        output.push(sample(&caps, 200, 100), Some(ms(350)));
        let (pts, byte) = pull(&sink);
        assert_eq!(byte, 100);
        assert!(pts > ms(290), "{pts}");
        let f = output.freezes();
        assert_eq!((f.frames, f.filled), (2, 2));
        // After the end, nothing more.
        output.end();
        output.push(sample(&caps, 400, 1), Some(ms(450)));
        output.fill(PublisherGone::Freeze, ms(500));
        assert_eq!(output.freezes().frames, 2);
        pipeline.set_state(gst::State::Null).unwrap();
    }

    #[test]
    fn a_gap_of_more_than_three_frames_and_150_ms_is_a_freeze() {
        let (output, pipeline, _sink) = playing();
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "RGBA")
            .field("width", 4)
            .field("height", 4)
            .build();
        for i in 0..5 {
            output.push(sample(&caps, i * 33, 1), None);
            std::thread::sleep(Duration::from_millis(33));
        }
        assert_eq!(output.freezes().count, 0);
        std::thread::sleep(Duration::from_millis(300));
        output.push(sample(&caps, 500, 1), None);
        let f = output.freezes();
        assert_eq!(f.count, 1);
        assert!(f.time >= Duration::from_millis(300), "{:?}", f.time);
        pipeline.set_state(gst::State::Null).unwrap();
    }
}
