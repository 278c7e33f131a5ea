// SPDX-License-Identifier: MPL-2.0
//! The application as producer: frames it pushes (`push_frame`, `push_sample`,
//! `end_of_stream` and their action signals) and frames it draws when asked (the draw
//! callback or the `draw-frame` signal), optionally through the `processor`.

use gst::glib;
use gst::glib::translate::*;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::VideoInfo;

use std::sync::Arc;
use std::time::Instant;

use super::DrawCallback;
use super::convert;
use super::feed::{Frame, InputCaps};
use super::format;
use super::imp::{CAT, CustomVideoSrc};
use super::stream::Stream;

/// The buffers the application draws into, in the draw layout.
pub(super) struct DrawPool {
    pub(super) info: VideoInfo,
    pool: gst::BufferPool,
}

impl DrawPool {
    fn new(info: VideoInfo) -> Result<Self, glib::BoolError> {
        let pool = gst_video::VideoBufferPool::new();
        let mut config = pool.config();
        let caps = info.to_caps()?;
        config.set_params(Some(&caps), info.size() as u32, 2, 0);
        pool.set_config(config)?;
        pool.set_active(true)?;
        Ok(DrawPool {
            info,
            pool: pool.upcast(),
        })
    }
}

impl Drop for DrawPool {
    /// Buffers still out return to an inactive pool, which frees them.
    fn drop(&mut self) {
        let _ = self.pool.set_active(false);
    }
}

/// The layout of a pushed frame, from the input caps (`None`: not known), checked against
/// the buffer; or the flow return and the error message that refuse it.
fn check_pushed(
    input: Option<Result<Arc<VideoInfo>, String>>,
    buffer: &gst::BufferRef,
) -> Result<Arc<VideoInfo>, (gst::FlowError, gst::ErrorMessage)> {
    let refuse_caps = |msg| (gst::FlowError::NotNegotiated, msg);
    let info = match input {
        None => {
            return Err(refuse_caps(gst::error_msg!(
                gst::CoreError::Negotiation,
                ("A frame was pushed before its caps are known: set the caps property, or push a sample that carries caps")
            )));
        }
        Some(Err(e)) => {
            return Err(refuse_caps(gst::error_msg!(
                gst::CoreError::Negotiation,
                ("Pushed frames cannot be converted to the track: {}", e)
            )));
        }
        Some(Ok(info)) => info,
    };
    convert::check_buffer(buffer, &info).map_err(|e| {
        (
            gst::FlowError::Error,
            gst::error_msg!(
                gst::StreamError::Format,
                ("Pushed frame does not match its caps: {}", e)
            ),
        )
    })?;
    Ok(info)
}

impl CustomVideoSrc {
    pub(super) fn push(
        &self,
        buffer: gst::Buffer,
        caps: Option<&gst::Caps>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let feed = self.feed();
        let input = {
            let mut settings = self.settings();
            if let Some(caps) = caps
                && settings.caps.as_ref().is_none_or(|i| &i.caps != caps)
            {
                settings.caps = Some(InputCaps::new(caps.clone()));
            }
            settings.caps.as_ref().map(|i| i.info.clone())
        };
        let id = feed.app_accepting().inspect_err(|e| {
            if *e == gst::FlowError::NotLinked {
                gst::debug!(
                    CAT,
                    imp = self,
                    "refusing pushed frame: a producer description feeds the track"
                );
            }
        })?;
        let info = match check_pushed(input, &buffer) {
            Ok(info) => info,
            Err((flow, msg)) => {
                drop(feed);
                self.post_error_message(msg);
                return Err(flow);
            }
        };
        gst::trace!(CAT, imp = self, "pushed {buffer:?}");
        if feed.running
            && let Some(input) = self.app_processing_input(id)
        {
            drop(feed);
            return self.process_app_frame(&input, buffer, &info);
        }
        self.enqueue(
            feed,
            Frame {
                buffer,
                info,
                producer: id,
            },
        )
    }

    pub(super) fn push_sample(
        &self,
        sample: &gst::Sample,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(buffer) = sample.buffer_owned() else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ("Pushed sample has no buffer")
            );
            return Err(gst::FlowError::Error);
        };
        self.push(buffer, sample.caps_owned().as_ref())
    }

    pub(super) fn app_end_of_stream(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let id = self.feed().app_accepting()?;
        self.producer_ended(id, "end of stream from the application".into(), false);
        Ok(gst::FlowSuccess::Ok)
    }

    /// Hands an application frame to the processor. Its output reaches the track later.
    fn process_app_frame(
        &self,
        input: &gst_app::AppSrc,
        buffer: gst::Buffer,
        info: &VideoInfo,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let caps = info.to_caps().map_err(|_| gst::FlowError::NotNegotiated)?;
        let sample = gst::Sample::builder().buffer(&buffer).caps(&caps).build();
        input.push_sample(&sample)
    }

    pub(super) fn set_draw_callback(&self, callback: Option<Arc<DrawCallback>>) {
        let _feed = self.feed();
        *self.draw_callback.lock().unwrap() = callback;
        self.wake_all();
    }

    fn draw_signal_id() -> glib::subclass::SignalId {
        glib::subclass::SignalId::lookup("draw-frame", super::CustomVideoSrc::static_type())
            .expect("draw-frame is registered")
    }

    /// Whether the application draws frames: a draw callback, or a `draw-frame` handler.
    pub(super) fn can_draw(&self) -> bool {
        if self.draw_callback.lock().unwrap().is_some() {
            return true;
        }
        unsafe {
            from_glib(glib::gobject_ffi::g_signal_has_handler_pending(
                self.obj().as_ptr() as *mut _,
                Self::draw_signal_id().into_glib(),
                0,
                glib::ffi::GFALSE,
            ))
        }
    }

    /// Makes sure the draw pool has the current draw layout.
    pub(super) fn setup_draw(&self, stream: &mut Stream) -> Result<(), gst::FlowError> {
        let Some(info) = format::draw_info(&self.settings()) else {
            return Ok(());
        };
        if stream.draw.as_ref().is_some_and(|d| d.info == info) {
            return Ok(());
        }
        // The old pool goes first: its buffers are freed as they come back.
        stream.draw = None;
        let pool = DrawPool::new(info).map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::ResourceError::NoSpaceLeft,
                ("Cannot set up the draw buffer pool: {}", e)
            );
            gst::FlowError::Error
        })?;
        stream.draw = Some(pool);
        Ok(())
    }

    /// Asks the application for a frame; `None` when it drew nothing (or its frame went to
    /// the processor).
    pub(super) fn draw(&self, stream: &mut Stream, rt: gst::ClockTime) -> Option<Frame> {
        let id = self.feed().app()?;
        let draw = stream.draw.as_ref()?;
        let info = draw.info.clone();
        let mut buffer = match draw.pool.acquire_buffer(None) {
            Ok(b) => b,
            Err(err) => {
                gst::warning!(CAT, imp = self, "no buffer to draw into: {err:?}");
                return None;
            }
        };
        let callback = self.draw_callback.lock().unwrap().clone();
        let drawn = if let Some(cb) = callback {
            let bufref = buffer.get_mut()?;
            let mut frame =
                gst_video::VideoFrameRef::from_buffer_ref_writable(bufref, &info).ok()?;
            cb(&mut frame, rt)
        } else {
            let mut ret: glib::ffi::gboolean = glib::ffi::GFALSE;
            unsafe {
                // The buffer goes out with static scope so that handlers can map it writable.
                glib::gobject_ffi::g_signal_emit(
                    self.obj().as_ptr() as *mut _,
                    Self::draw_signal_id().into_glib(),
                    0,
                    buffer.as_mut_ptr(),
                    rt.nseconds(),
                    &mut ret as *mut glib::ffi::gboolean,
                );
            }
            ret != glib::ffi::GFALSE
        };
        if !drawn {
            return None;
        }
        if let Some(input) = self.app_processing_input(id) {
            // The processed frame joins the queue; the track takes it from there.
            let _ = self.process_app_frame(&input, buffer, &info);
            return None;
        }
        let retire = {
            let mut feed = self.feed();
            let retire = feed.admit(id).ok()?;
            feed.count_in(Instant::now());
            retire
        };
        if let Some(old) = retire {
            self.took_over(id, old);
        }
        Some(Frame {
            buffer,
            info: Arc::new(info),
            producer: id,
        })
    }
}
