// SPDX-License-Identifier: MPL-2.0
//! Frame conversion for the track: rotation, pixel-format conversion and scaling, black frames.
//!
//! Everything here is plain code on buffers; the element decides when to call it. A frame that
//! already has the track's layout and needs no rotation is passed through untouched (no copy).

use gst_video::prelude::*;
use gst_video::{VideoConverter, VideoFormat, VideoFrameRef, VideoInfo};

use super::Rotation;

/// Formats whose planes hold independent, fixed-size elements with equal horizontal and
/// vertical subsampling, so a plane can be rotated element by element.
const ROTATABLE: &[VideoFormat] = &[
    VideoFormat::I420,
    VideoFormat::Yv12,
    VideoFormat::Y444,
    VideoFormat::Nv12,
    VideoFormat::Nv21,
    VideoFormat::Gray8,
    VideoFormat::Gray16Le,
    VideoFormat::Gray16Be,
    VideoFormat::Rgba,
    VideoFormat::Bgra,
    VideoFormat::Argb,
    VideoFormat::Abgr,
    VideoFormat::Rgbx,
    VideoFormat::Bgrx,
    VideoFormat::Xrgb,
    VideoFormat::Xbgr,
    VideoFormat::Rgb,
    VideoFormat::Bgr,
    VideoFormat::Ayuv,
];

/// Why a frame could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError(pub String);

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn describe(info: &VideoInfo) -> String {
    format!(
        "{}x{} {}",
        info.width(),
        info.height(),
        info.format().to_str()
    )
}

/// Checks that `info` describes frames the track can take in.
pub fn check_input(info: &VideoInfo) -> Result<(), ConvertError> {
    if info.format() == VideoFormat::Unknown || info.format() == VideoFormat::Encoded {
        return Err(ConvertError(format!(
            "frames of format {} cannot be converted to a raw video track",
            info.format().to_str()
        )));
    }
    if info.is_interlaced() {
        return Err(ConvertError(format!(
            "interlaced frames ({}) are not supported: deinterlace them in the producer",
            describe(info)
        )));
    }
    if info.width() == 0 || info.height() == 0 {
        return Err(ConvertError("frames of size 0 are not supported".into()));
    }
    Ok(())
}

/// Checks that `buffer` holds a whole frame described by `info` (or carries a video meta that
/// describes its layout), naming the sizes when it does not.
pub fn check_buffer(buffer: &gst::BufferRef, info: &VideoInfo) -> Result<(), ConvertError> {
    if let Some(meta) = buffer.meta::<gst_video::VideoMeta>() {
        if meta.width() != info.width() || meta.height() != info.height() {
            return Err(ConvertError(format!(
                "buffer video meta says {}x{} but the caps say {}",
                meta.width(),
                meta.height(),
                describe(info)
            )));
        }
        return VideoFrameRef::from_buffer_ref_readable(buffer, info)
            .map(|_| ())
            .map_err(|_| {
                ConvertError(format!(
                    "buffer of {} bytes does not hold a {} frame as its video meta describes",
                    buffer.size(),
                    describe(info)
                ))
            });
    }
    if buffer.size() != info.size() {
        return Err(ConvertError(format!(
            "buffer of {} bytes does not match the caps {} (a frame is {} bytes)",
            buffer.size(),
            describe(info),
            info.size()
        )));
    }
    Ok(())
}

/// Whether a frame described by `input` (in `buffer`) can leave as it is for `output`.
fn is_passthrough(buffer: &gst::BufferRef, input: &VideoInfo, output: &VideoInfo) -> bool {
    if input.format() != output.format()
        || input.width() != output.width()
        || input.height() != output.height()
    {
        return false;
    }
    match buffer.meta::<gst_video::VideoMeta>() {
        Some(meta) => meta.stride() == output.stride() && meta.offset() == output.offset(),
        None => input.stride() == output.stride() && input.offset() == output.offset(),
    }
}

/// Converts frames to the track format, caching converters between calls.
#[derive(Default)]
pub struct Converter {
    scaler: Option<(VideoInfo, VideoInfo, VideoConverter)>,
    black: Option<(VideoInfo, gst::Buffer)>,
}

impl Converter {
    /// Turns `buffer` (described by `input`) into a frame described by `output`, rotated.
    /// Returns the same buffer when nothing has to change.
    pub fn process(
        &mut self,
        buffer: gst::Buffer,
        input: &VideoInfo,
        output: &VideoInfo,
        rotation: Rotation,
    ) -> Result<gst::Buffer, ConvertError> {
        if rotation == Rotation::None {
            if is_passthrough(&buffer, input, output) {
                return Ok(buffer);
            }
            return self.scale(&buffer, input, output);
        }
        let fmt = if ROTATABLE.contains(&input.format()) {
            input.format()
        } else if ROTATABLE.contains(&output.format()) {
            output.format()
        } else {
            VideoFormat::I420
        };
        let (buffer, info) = if fmt == input.format() {
            (buffer, input.clone())
        } else {
            let info = plain_info(fmt, input.width(), input.height())?;
            (self.scale(&buffer, input, &info)?, info)
        };
        let (rw, rh) = rotation.rotated_size(info.width(), info.height());
        let rotated_info = plain_info(fmt, rw, rh)?;
        let rotated = rotate(&buffer, &info, &rotated_info, rotation)?;
        if is_passthrough(&rotated, &rotated_info, output) {
            return Ok(rotated);
        }
        self.scale(&rotated, &rotated_info, output)
    }

    /// A black frame in the `output` layout (cached).
    pub fn black(&mut self, output: &VideoInfo) -> Result<gst::Buffer, ConvertError> {
        if let Some((info, buf)) = &self.black
            && info == output
        {
            return Ok(buf.clone());
        }
        let src_info = VideoInfo::builder(VideoFormat::Ayuv, 16, 16)
            .fps(output.fps())
            .build()
            .map_err(|e| ConvertError(e.to_string()))?;
        let mut src = gst::Buffer::with_size(src_info.size())
            .map_err(|e| ConvertError(format!("cannot allocate a black frame: {e}")))?;
        {
            let mut map = src.get_mut().unwrap().map_writable().unwrap();
            for px in map.as_mut_slice().chunks_exact_mut(4) {
                px.copy_from_slice(&[0xff, 16, 128, 128]);
            }
        }
        let mut conv = Converter::default();
        let buf = conv.scale(&src, &src_info, output)?;
        self.black = Some((output.clone(), buf.clone()));
        Ok(buf)
    }

    fn scale(
        &mut self,
        buffer: &gst::BufferRef,
        input: &VideoInfo,
        output: &VideoInfo,
    ) -> Result<gst::Buffer, ConvertError> {
        check_input(input)?;
        // The converter does no frame-rate conversion; pacing is the element's business.
        let out = VideoInfo::builder_from_info(output)
            .fps(input.fps())
            .build()
            .map_err(|e| ConvertError(e.to_string()))?;
        let cached = matches!(&self.scaler, Some((i, o, _)) if i == input && o == &out);
        if !cached {
            let conv = VideoConverter::new(input, &out, None).map_err(|e| {
                ConvertError(format!(
                    "cannot convert {} to {}: {e}",
                    describe(input),
                    describe(output)
                ))
            })?;
            self.scaler = Some((input.clone(), out.clone(), conv));
        }
        let (_, _, conv) = self.scaler.as_ref().unwrap();
        let src = VideoFrameRef::from_buffer_ref_readable(buffer, input).map_err(|_| {
            ConvertError(format!(
                "buffer of {} bytes does not hold a {} frame",
                buffer.size(),
                describe(input)
            ))
        })?;
        let mut dst_buf = gst::Buffer::with_size(out.size())
            .map_err(|e| ConvertError(format!("cannot allocate a frame: {e}")))?;
        {
            let dst_ref = dst_buf.get_mut().unwrap();
            let mut dst = VideoFrameRef::from_buffer_ref_writable(dst_ref, &out)
                .map_err(|e| ConvertError(e.to_string()))?;
            conv.frame_ref(&src, &mut dst);
        }
        Ok(dst_buf)
    }
}

fn plain_info(format: VideoFormat, width: u32, height: u32) -> Result<VideoInfo, ConvertError> {
    VideoInfo::builder(format, width, height)
        .build()
        .map_err(|e| ConvertError(format!("cannot describe {width}x{height} {format:?}: {e}")))
}

/// Rotates a frame of a [`ROTATABLE`] format plane by plane.
fn rotate(
    buffer: &gst::BufferRef,
    input: &VideoInfo,
    output: &VideoInfo,
    rotation: Rotation,
) -> Result<gst::Buffer, ConvertError> {
    let src = VideoFrameRef::from_buffer_ref_readable(buffer, input)
        .map_err(|_| ConvertError(format!("buffer does not hold a {} frame", describe(input))))?;
    let mut out = gst::Buffer::with_size(output.size())
        .map_err(|e| ConvertError(format!("cannot allocate a frame: {e}")))?;
    {
        let mut dst = VideoFrameRef::from_buffer_ref_writable(out.get_mut().unwrap(), output)
            .map_err(|e| ConvertError(e.to_string()))?;
        let finfo = input.format_info();
        for plane in 0..input.n_planes() {
            // The first component stored in this plane gives its element size and dimensions.
            let comp = (0..finfo.n_components())
                .find(|&c| finfo.plane()[c as usize] == plane)
                .unwrap_or(0) as u8;
            let elem = finfo.pixel_stride()[comp as usize] as usize;
            let (pw, ph) = (
                input.comp_width(comp) as usize,
                input.comp_height(comp) as usize,
            );
            let sstride = src.plane_stride()[plane as usize] as usize;
            let dstride = dst.plane_stride()[plane as usize] as usize;
            let sdata = src
                .plane_data(plane)
                .map_err(|e| ConvertError(e.to_string()))?;
            let ddata = dst
                .plane_data_mut(plane)
                .map_err(|e| ConvertError(e.to_string()))?;
            rotate_plane(sdata, sstride, ddata, dstride, pw, ph, elem, rotation);
        }
    }
    Ok(out)
}

/// Rotates one plane of `pw` x `ph` elements of `elem` bytes clockwise.
#[allow(clippy::too_many_arguments)]
fn rotate_plane(
    src: &[u8],
    sstride: usize,
    dst: &mut [u8],
    dstride: usize,
    pw: usize,
    ph: usize,
    elem: usize,
    rotation: Rotation,
) {
    for y in 0..ph {
        let srow = &src[y * sstride..y * sstride + pw * elem];
        for x in 0..pw {
            let (dx, dy) = match rotation {
                Rotation::None => (x, y),
                Rotation::Cw90 => (ph - 1 - y, x),
                Rotation::Cw180 => (pw - 1 - x, ph - 1 - y),
                Rotation::Cw270 => (y, pw - 1 - x),
            };
            let d = dy * dstride + dx * elem;
            dst[d..d + elem].copy_from_slice(&srow[x * elem..x * elem + elem]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgba_frame(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 4]) -> (gst::Buffer, VideoInfo) {
        let info = VideoInfo::builder(VideoFormat::Rgba, w, h).build().unwrap();
        let mut buf = gst::Buffer::with_size(info.size()).unwrap();
        {
            let mut frame =
                VideoFrameRef::from_buffer_ref_writable(buf.get_mut().unwrap(), &info).unwrap();
            let stride = frame.plane_stride()[0] as usize;
            let data = frame.plane_data_mut(0).unwrap();
            for y in 0..h {
                for x in 0..w {
                    let o = y as usize * stride + x as usize * 4;
                    data[o..o + 4].copy_from_slice(&f(x, y));
                }
            }
        }
        (buf, info)
    }

    fn pixel(buf: &gst::Buffer, info: &VideoInfo, x: u32, y: u32) -> [u8; 4] {
        let frame = VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), info).unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let o = y as usize * stride + x as usize * 4;
        frame.plane_data(0).unwrap()[o..o + 4].try_into().unwrap()
    }

    #[test]
    fn passthrough_keeps_the_buffer() {
        gst::init().unwrap();
        let (buf, info) = rgba_frame(8, 4, |_, _| [1, 2, 3, 255]);
        let ptr = buf.as_ptr();
        let out = Converter::default()
            .process(buf, &info, &info, Rotation::None)
            .unwrap();
        assert_eq!(out.as_ptr(), ptr);
    }

    #[test]
    fn rotates_clockwise() {
        gst::init().unwrap();
        // Red top-left corner, everything else blue.
        let (buf, info) = rgba_frame(8, 4, |x, y| {
            if x < 2 && y < 2 {
                [255, 0, 0, 255]
            } else {
                [0, 0, 255, 255]
            }
        });
        let out_info = VideoInfo::builder(VideoFormat::Rgba, 4, 8).build().unwrap();
        let out = Converter::default()
            .process(buf.clone(), &info, &out_info, Rotation::Cw90)
            .unwrap();
        // After a clockwise quarter turn the top-left corner is at the top right.
        assert_eq!(pixel(&out, &out_info, 3, 0), [255, 0, 0, 255]);
        assert_eq!(pixel(&out, &out_info, 0, 0), [0, 0, 255, 255]);
        let out = Converter::default()
            .process(buf.clone(), &info, &info, Rotation::Cw180)
            .unwrap();
        assert_eq!(pixel(&out, &info, 7, 3), [255, 0, 0, 255]);
        let out = Converter::default()
            .process(buf, &info, &out_info, Rotation::Cw270)
            .unwrap();
        assert_eq!(pixel(&out, &out_info, 0, 7), [255, 0, 0, 255]);
    }

    #[test]
    fn rotates_nv12_through_any_output() {
        gst::init().unwrap();
        let (buf, info) = rgba_frame(16, 8, |x, _| {
            if x < 8 {
                [255, 255, 255, 255]
            } else {
                [0, 0, 0, 255]
            }
        });
        let nv12 = VideoInfo::builder(VideoFormat::Nv12, 16, 8)
            .build()
            .unwrap();
        let mut conv = Converter::default();
        let nv12_buf = conv.process(buf, &info, &nv12, Rotation::None).unwrap();
        let rgba_rot = VideoInfo::builder(VideoFormat::Rgba, 8, 16)
            .build()
            .unwrap();
        let out = conv
            .process(nv12_buf, &nv12, &rgba_rot, Rotation::Cw90)
            .unwrap();
        // The white left half ends up as the top half.
        assert!(pixel(&out, &rgba_rot, 4, 2)[0] > 200);
        assert!(pixel(&out, &rgba_rot, 4, 13)[0] < 50);
    }

    #[test]
    fn scales_and_converts() {
        gst::init().unwrap();
        let (buf, info) = rgba_frame(64, 48, |_, _| [0, 255, 0, 255]);
        let out_info = VideoInfo::builder(VideoFormat::I420, 32, 24)
            .build()
            .unwrap();
        let out = Converter::default()
            .process(buf, &info, &out_info, Rotation::None)
            .unwrap();
        assert_eq!(out.size(), out_info.size());
        let back_info = VideoInfo::builder(VideoFormat::Rgba, 32, 24)
            .build()
            .unwrap();
        let back = Converter::default()
            .process(out, &out_info, &back_info, Rotation::None)
            .unwrap();
        let px = pixel(&back, &back_info, 10, 10);
        assert!(px[1] > 200 && px[0] < 50 && px[2] < 50, "{px:?}");
    }

    #[test]
    fn black_is_black() {
        gst::init().unwrap();
        let info = VideoInfo::builder(VideoFormat::Rgba, 32, 16)
            .build()
            .unwrap();
        let buf = Converter::default().black(&info).unwrap();
        for (x, y) in [(0, 0), (31, 15), (16, 8)] {
            let px = pixel(&buf, &info, x, y);
            assert!(px[0] < 8 && px[1] < 8 && px[2] < 8, "{px:?}");
        }
    }

    #[test]
    fn wrong_sizes_are_named() {
        gst::init().unwrap();
        let info = VideoInfo::builder(VideoFormat::I420, 320, 240)
            .build()
            .unwrap();
        let buf = gst::Buffer::with_size(1000).unwrap();
        let err = check_buffer(&buf, &info).unwrap_err();
        assert!(err.0.contains("1000 bytes"), "{err}");
        assert!(err.0.contains("115200"), "{err}");
        let ok = gst::Buffer::with_size(info.size()).unwrap();
        assert!(check_buffer(&ok, &info).is_ok());
    }
}
