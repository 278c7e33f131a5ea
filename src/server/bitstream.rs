// SPDX-License-Identifier: MPL-2.0
//! Just enough bitstream reading to tell the resolution of a forwarded video track: the VP8
//! key-frame header and the H.264 sequence parameter set. The server never decodes media.

/// Width and height from a VP8 key frame (RFC 6386 §9.1), `None` for other frames.
pub fn vp8_resolution(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.len() < 10 || frame[0] & 1 != 0 {
        return None; // too short, or an inter frame
    }
    if frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((w as u32, h as u32))
}

/// Width and height from the first SPS in an Annex-B H.264 access unit.
pub fn h264_resolution(au: &[u8]) -> Option<(u32, u32)> {
    let mut i = 0;
    while i + 3 < au.len() {
        let start = if au[i..].starts_with(&[0, 0, 1]) {
            i + 3
        } else if au[i..].starts_with(&[0, 0, 0, 1]) {
            i + 4
        } else {
            i += 1;
            continue;
        };
        if start < au.len() && au[start] & 0x1f == 7 {
            let end = (start..au.len().saturating_sub(2))
                .find(|&j| au[j..].starts_with(&[0, 0, 1]))
                .unwrap_or(au.len());
            return parse_sps(&unescape(&au[start + 1..end]));
        }
        i = start;
    }
    None
}

/// Removes emulation-prevention bytes (00 00 03 → 00 00).
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(b as u32)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |acc, _| Some((acc << 1) | self.bit()?))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i32> {
        let v = self.ue()?;
        Some(if v % 2 == 1 {
            v.div_ceil(2) as i32
        } else {
            -((v / 2) as i32)
        })
    }
}

fn parse_sps(rbsp: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits { data: rbsp, pos: 0 };
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile_idc) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bit()?;
        }
        r.ue()?; // bit_depth_luma
        r.ue()?; // bit_depth_chroma
        r.bit()?; // qpprime_y_zero_transform_bypass
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            // num_ref_frames_in_pic_order_cnt_cycle: 0..=255 (§7.4.2.1.1).
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => (),
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_allowed
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?; // direct_8x8_inference
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? == 1 {
        cl = r.ue()?.into();
        cr = r.ue()?.into();
        ct = r.ue()?.into();
        cb = r.ue()?.into();
    }
    let (sub_w, sub_h) = match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let crop_x: u64 = if chroma_format_idc == 0 { 1 } else { sub_w };
    let crop_y: u64 = (if chroma_format_idc == 0 { 1 } else { sub_h }) * (2 - frame_mbs_only);
    // Every value is below 2^32, so none of these products overflows 64 bits; the result
    // must still be a picture size.
    let width = (width_mbs * 16).checked_sub(crop_x * (cl + cr))?;
    let height = (height_map_units * 16 * (2 - frame_mbs_only)).checked_sub(crop_y * (ct + cb))?;
    let size = |v: u64| u32::try_from(v).ok().filter(|v| (1..=MAX_SIDE).contains(v));
    Some((size(width)?, size(height)?))
}

/// The largest picture side reported: H.264 level 6.2 allows 139264 macroblocks per
/// frame, at most 8 × √139264 ≈ 2986 of them on one side.
const MAX_SIDE: u32 = 16 * 2986;

/// Reads past a scaling list of `size` entries (§7.3.2.1.1.1); `None` when a
/// `delta_scale` is outside -128..=127.
fn skip_scaling_list(r: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return None;
            }
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vp8_keyframe_size() {
        // Frame tag (key frame), start code, 1280x720.
        let frame = [
            0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02, 0, 0,
        ];
        assert_eq!(vp8_resolution(&frame), Some((1280, 720)));
        let mut inter = frame;
        inter[0] |= 1;
        assert_eq!(vp8_resolution(&inter), None);
    }

    #[test]
    fn reads_h264_sps_size() {
        // SPS of x264 constrained-baseline 320x240 (level 1.3).
        let au = [
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00,
            0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80, 0, 0, 0, 1,
            0x68, 0xcb, 0x83, 0xcb, 0x20,
        ];
        assert_eq!(h264_resolution(&au), Some((320, 240)));
        assert_eq!(h264_resolution(&[0, 0, 0, 1, 0x41, 0x9a]), None);
    }

    #[test]
    fn refuses_sps_whose_sizes_overflow() {
        // High profile, a scaling list of delta_scale 2^31 - 1 (the first regression input
        // of the `bitstream` fuzz target).
        let scaling = include_bytes!("../../fuzz/regressions/bitstream/sps-scaling-overflow");
        assert_eq!(h264_resolution(scaling), None);
        // pic_width_in_mbs_minus1 and the cropping at 2^32 - 2, interlaced.
        let size = include_bytes!("../../fuzz/regressions/bitstream/sps-size-overflow");
        assert_eq!(h264_resolution(size), None);
    }
}
