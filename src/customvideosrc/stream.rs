// SPDX-License-Identifier: MPL-2.0
//! The streaming thread (`create()`): it waits for the producer's first frame to choose the
//! track format, then takes frames out of the feed, converts them and lets them leave at the
//! pace [`Pacer`] decides.

use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::VideoInfo;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::app::DrawPool;
use super::convert::Converter;
use super::feed::Frame;
use super::imp::{CAT, CustomVideoSrc};
use super::pacer::{self, Idle, Pacer, Shown};

/// What only the streaming thread uses.
#[derive(Default)]
pub(super) struct Stream {
    /// The track format, once negotiated.
    pub(super) out_info: Option<VideoInfo>,
    converter: Converter,
    pacer: Pacer,
    /// The buffers the application draws into.
    pub(super) draw: Option<DrawPool>,
}

impl Stream {
    /// New caps: the ticks start afresh.
    pub(super) fn negotiated(&mut self, info: VideoInfo) {
        self.out_info = Some(info);
        self.pacer.restart();
    }
}

impl CustomVideoSrc {
    /// The next buffer of the track.
    pub(super) fn next_buffer(&self) -> Result<gst::Buffer, gst::FlowError> {
        let mut stream = self.stream.lock().unwrap();
        loop {
            if stream.out_info.is_none() {
                let drawing = self.feed().app().is_some() && self.can_draw();
                if drawing {
                    self.setup_draw(&mut stream)?;
                    let info = stream.draw.as_ref().map(|d| d.info.clone());
                    self.negotiate_output(&mut stream, info.as_ref(), true)?;
                } else {
                    self.negotiate_output(&mut stream, None, false)?;
                }
            }
            if stream.out_info.is_none() {
                match self.wait_first_frame()? {
                    Some(info) => self.negotiate_output(&mut stream, Some(&info), false)?,
                    None => {
                        let feed = self.feed();
                        if feed.is_ended() && feed.is_empty() {
                            drop(feed);
                            // Nothing was ever produced: the track can only end.
                            return Err(gst::FlowError::Eos);
                        }
                    }
                }
                continue;
            }
            self.store_track_events();
            let fps = stream
                .out_info
                .as_ref()
                .map(|i| i.fps())
                .filter(|fps| fps.numer() > 0);
            let next = match fps {
                Some(fps) => self.next_paced(&mut stream, fps)?,
                None => self.next_unpaced(&mut stream)?,
            };
            if let Some(buffer) = next {
                gst::log!(CAT, imp = self, "output {buffer:?}");
                return Ok(buffer);
            }
        }
    }

    fn running_time(&self) -> Option<gst::ClockTime> {
        let obj = self.obj();
        let clock = obj.clock()?;
        let base = obj.base_time()?;
        clock.time().checked_sub(base)
    }

    fn wait_until(&self, rt: gst::ClockTime) -> Result<(), gst::FlowError> {
        let obj = self.obj();
        let (Some(clock), Some(base)) = (obj.clock(), obj.base_time()) else {
            return Err(gst::FlowError::Flushing);
        };
        let id = clock.new_single_shot_id(base + rt);
        {
            let feed = self.feed();
            if feed.flushing {
                return Err(gst::FlowError::Flushing);
            }
            *self.clock_id.lock().unwrap() = Some(id.clone());
        }
        let (res, _) = id.wait();
        self.clock_id.lock().unwrap().take();
        match res {
            Err(gst::ClockError::Unscheduled) => Err(gst::FlowError::Flushing),
            _ => Ok(()),
        }
    }

    /// Blocks while the track is disabled. Returns true if it had to wait.
    fn wait_enabled(&self) -> Result<bool, gst::FlowError> {
        let mut feed = self.feed();
        let mut waited = false;
        while !self.settings().enabled {
            if feed.flushing {
                return Err(gst::FlowError::Flushing);
            }
            waited = true;
            feed = self.wait(feed);
        }
        if feed.flushing {
            return Err(gst::FlowError::Flushing);
        }
        if waited {
            feed.keep_newest();
        }
        Ok(waited)
    }

    /// Waits for the first frame, to learn the producer's format.
    fn wait_first_frame(&self) -> Result<Option<Arc<VideoInfo>>, gst::FlowError> {
        let mut feed = self.feed();
        loop {
            if feed.flushing {
                return Err(gst::FlowError::Flushing);
            }
            if let Some(info) = feed.newest_info() {
                return Ok(Some(info));
            }
            if feed.is_ended() {
                return Ok(None);
            }
            if feed.app().is_some() && self.can_draw() {
                return Ok(None);
            }
            feed = self.wait_timeout(feed, Some(Duration::from_millis(100)));
        }
    }

    /// A frame converted to the track format, or black in its place while muted.
    fn output(
        &self,
        stream: &mut Stream,
        frame: Frame,
        muted: bool,
    ) -> Result<(gst::Buffer, Shown), gst::FlowError> {
        let out_info = stream
            .out_info
            .clone()
            .ok_or(gst::FlowError::NotNegotiated)?;
        let rotation = self.settings().rotation;
        let converted = stream
            .converter
            .process(frame.buffer, &frame.info, &out_info, rotation)
            .map_err(|e| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("Cannot convert a frame to the track format: {}", e)
                );
                gst::FlowError::NotNegotiated
            })?;
        if muted {
            stream.pacer.keep(converted);
            return Ok((self.black(stream)?, Shown::Hidden));
        }
        Ok((converted, Shown::New))
    }

    fn black(&self, stream: &mut Stream) -> Result<gst::Buffer, gst::FlowError> {
        let out_info = stream
            .out_info
            .clone()
            .ok_or(gst::FlowError::NotNegotiated)?;
        stream.converter.black(&out_info).map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Cannot make a black frame: {}", e)
            );
            gst::FlowError::NotNegotiated
        })
    }

    /// What leaves now: the new frame, or what an idle or ended track shows; `None` to show
    /// nothing this time.
    fn show(
        &self,
        stream: &mut Stream,
        frame: Option<Frame>,
        ended: bool,
    ) -> Result<Option<(gst::Buffer, Shown)>, gst::FlowError> {
        let (muted, on_end) = {
            let s = self.settings();
            (s.muted, s.on_producer_end)
        };
        if let Some(frame) = frame {
            return self.output(stream, frame, muted).map(Some);
        }
        match pacer::idle(ended, on_end, muted, stream.out_info.is_some()) {
            Idle::Eos => Err(gst::FlowError::Eos),
            Idle::Black => Ok(Some((self.black(stream)?, Shown::Repeat))),
            Idle::Last => Ok(stream.pacer.last().map(|b| (b, Shown::Repeat))),
        }
    }

    fn stamp(
        &self,
        stream: &mut Stream,
        (buffer, shown): (gst::Buffer, Shown),
        pts: gst::ClockTime,
        duration: Option<gst::ClockTime>,
    ) -> gst::Buffer {
        let buffer = stream.pacer.stamp(buffer, pts, duration, shown);
        self.out
            .lock()
            .unwrap()
            .count_out(shown == Shown::Repeat, Instant::now());
        buffer
    }

    /// One buffer of a track with a frame rate.
    fn next_paced(
        &self,
        stream: &mut Stream,
        fps: gst::Fraction,
    ) -> Result<Option<gst::Buffer>, gst::FlowError> {
        let interval = pacer::interval(fps);
        let now = self.running_time().ok_or(gst::FlowError::Flushing)?;
        let tick = stream.pacer.tick(now, interval);
        self.wait_until(tick)?;
        if self.wait_enabled()? {
            stream.pacer.restart();
            return Ok(None);
        }
        stream.pacer.ticked(tick, interval);

        // An ended draw producer is not asked again (end-of-stream from the application).
        let drawing = {
            let feed = self.feed();
            feed.app().is_some() && !feed.is_ended()
        } && self.can_draw();
        let frame = if drawing {
            self.setup_draw(stream)?;
            self.draw(stream, tick)
        } else {
            None
        };
        let (frame, ended) = {
            let mut feed = self.feed();
            let frame = frame.or_else(|| feed.take_newest());
            self.wake(&feed);
            (frame, feed.is_ended())
        };
        let Some(shown) = self.show(stream, frame, ended)? else {
            return Ok(None);
        };
        Ok(Some(self.stamp(stream, shown, tick, Some(interval))))
    }

    /// One buffer of a track without frame rate: frames leave as they arrive.
    fn next_unpaced(&self, stream: &mut Stream) -> Result<Option<gst::Buffer>, gst::FlowError> {
        let (frame, ended) = {
            let mut feed = self.feed();
            loop {
                if feed.flushing {
                    return Err(gst::FlowError::Flushing);
                }
                if !self.settings().enabled {
                    drop(feed);
                    self.wait_enabled()?;
                    return Ok(None);
                }
                if !feed.is_empty() {
                    break;
                }
                if feed.is_ended() {
                    match stream.pacer.keepalive(Instant::now()) {
                        None => break,
                        Some(wait) => feed = self.wait_timeout(feed, Some(wait)),
                    }
                    continue;
                }
                feed = self.wait(feed);
            }
            let frame = feed.take_oldest();
            // A blocked pusher may go on.
            self.wake(&feed);
            (frame, feed.is_ended())
        };
        let Some(shown) = self.show(stream, frame, ended)? else {
            return Ok(None);
        };
        let now = self.running_time().ok_or(gst::FlowError::Flushing)?;
        Ok(Some(self.stamp(stream, shown, now, None)))
    }
}
