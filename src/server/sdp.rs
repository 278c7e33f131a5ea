// SPDX-License-Identifier: MPL-2.0
//! Checks on the SDP that WHIP and WHEP clients send, before it reaches the WebRTC stack:
//! size, syntax, the video codecs offered, trickle-ICE fragments. Plain functions on text.

use std::fmt;

use crate::codec::Codec;

/// Largest SDP offer or trickle fragment accepted, in bytes.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Video codecs the server forwards.
pub const SUPPORTED_VIDEO: &[&str] = &["VP8", "VP9", "H264", "AV1"];

/// Why an offer is refused; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferError {
    /// 413: larger than [`MAX_SDP_BYTES`].
    TooLarge(usize),
    /// 400: not an SDP offer.
    Malformed(String),
    /// 406: video offered, but only in codecs the server does not forward.
    UnsupportedCodecs(Vec<String>),
    /// 400: no video at all.
    NoVideo,
}

impl OfferError {
    pub fn status(&self) -> u16 {
        match self {
            OfferError::TooLarge(_) => 413,
            OfferError::Malformed(_) | OfferError::NoVideo => 400,
            OfferError::UnsupportedCodecs(_) => 406,
        }
    }
}

impl fmt::Display for OfferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfferError::TooLarge(n) => write!(
                f,
                "SDP offer of {n} bytes is larger than the {MAX_SDP_BYTES} bytes accepted"
            ),
            OfferError::Malformed(why) => write!(f, "malformed SDP offer: {why}"),
            OfferError::UnsupportedCodecs(c) => write!(
                f,
                "none of the offered video codecs ({}) is supported; supported: {}",
                c.join(", "),
                SUPPORTED_VIDEO.join(", ")
            ),
            OfferError::NoVideo => write!(f, "the SDP offer has no video media section"),
        }
    }
}

/// One media section of an SDP (`m=` and its attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// `video`, `audio`, `application`, ...
    pub kind: String,
    /// 0 when the section is refused.
    pub port: u16,
    /// Payload types, in order of preference.
    pub formats: Vec<u8>,
    /// The encoding names (`a=rtpmap`) of the payload types, without clock rate.
    pub rtpmaps: Vec<(u8, String)>,
}

impl MediaSection {
    /// The encoding name of payload type `pt`.
    pub fn encoding(&self, pt: u8) -> Option<&str> {
        self.rtpmaps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, n)| n.as_str())
    }
}

/// The media sections of `sdp`: the one SDP reader of the project (callsink reads answers
/// with it, the server offers). Lines it cannot read are skipped.
pub fn media_sections(sdp: &str) -> Vec<MediaSection> {
    let mut sections: Vec<MediaSection> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split_whitespace();
            let kind = fields.next().unwrap_or_default().to_owned();
            let port = fields
                .next()
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let formats = fields.skip(1).filter_map(|f| f.parse().ok()).collect();
            sections.push(MediaSection {
                kind,
                port,
                formats,
                rtpmaps: vec![],
            });
        } else if let (Some(rtpmap), Some(section)) =
            (line.strip_prefix("a=rtpmap:"), sections.last_mut())
        {
            let mut fields = rtpmap.split_whitespace();
            let pt = fields.next().and_then(|p| p.parse().ok());
            let name = fields.next().and_then(|enc| enc.split('/').next());
            if let (Some(pt), Some(name)) = (pt, name) {
                section.rtpmaps.push((pt, name.to_owned()));
            }
        }
    }
    sections
}

/// The video codec names (upper case, without clock rate) offered in `sdp`'s video sections,
/// in order of preference, without duplicates and without RTX/RED/FEC helpers.
pub fn offered_video_codecs(sdp: &str) -> Vec<String> {
    let mut codecs: Vec<String> = Vec::new();
    for section in media_sections(sdp).iter().filter(|s| s.kind == "video") {
        for (_, name) in &section.rtpmaps {
            let name = name.to_ascii_uppercase();
            if !["RTX", "RED", "ULPFEC", "FLEXFEC-03"].contains(&name.as_str())
                && !codecs.contains(&name)
            {
                codecs.push(name);
            }
        }
    }
    codecs
}

/// The codecs of `offered_video_codecs` that the project knows.
pub fn video_codecs(sdp: &str) -> Vec<Codec> {
    offered_video_codecs(sdp)
        .iter()
        .filter_map(|n| Codec::from_encoding_name(n))
        .collect()
}

/// The payload types listed on the media lines (`m=`) of `sdp`.
pub fn payload_types(sdp: &str) -> Vec<u8> {
    media_sections(sdp)
        .into_iter()
        .flat_map(|s| s.formats)
        .collect()
}

/// Whether `sdp` has at least one video media section.
pub fn has_video(sdp: &str) -> bool {
    media_sections(sdp).iter().any(|s| s.kind == "video")
}

/// Whether `sdp` sends simulcast (RFC 8853: an `a=simulcast:send` line).
pub fn sends_simulcast(sdp: &str) -> bool {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=simulcast:"))
        .any(|v| v.trim_start().starts_with("send"))
}

/// Checks an offer's size, basic syntax and video codecs.
pub fn check_offer(sdp: &str) -> Result<(), OfferError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(OfferError::TooLarge(sdp.len()));
    }
    let trimmed = sdp.trim_start();
    if trimmed.is_empty() {
        return Err(OfferError::Malformed(
            "the body is empty; an SDP offer is required".into(),
        ));
    }
    if !trimmed.starts_with("v=0") {
        return Err(OfferError::Malformed(
            "an SDP body starts with the line \"v=0\"".into(),
        ));
    }
    if !has_video(sdp) {
        return Err(OfferError::NoVideo);
    }
    if let Some((pt, what)) = described_twice(sdp) {
        return Err(OfferError::Malformed(format!(
            "payload type {pt} is described twice in one media section ({what}); each payload \
             type has one rtpmap and at most one fmtp"
        )));
    }
    let codecs = offered_video_codecs(sdp);
    if !codecs.iter().any(|c| SUPPORTED_VIDEO.contains(&c.as_str())) {
        return Err(OfferError::UnsupportedCodecs(codecs));
    }
    Ok(())
}

/// A payload type listed twice on an `m=` line, or with two `a=rtpmap` or two `a=fmtp` lines
/// in one media section (e.g. one RTX payload type for two codecs), and the kind of line.
pub fn described_twice(sdp: &str) -> Option<(u8, &'static str)> {
    let mut seen: std::collections::HashSet<(u8, &'static str)> = Default::default();
    for line in sdp.lines().map(str::trim) {
        let (what, pts): (&'static str, Vec<u8>) = if let Some(m) = line.strip_prefix("m=") {
            seen.clear();
            (
                "m=",
                m.split_whitespace()
                    .skip(3)
                    .filter_map(|f| f.parse().ok())
                    .collect(),
            )
        } else if let Some(v) = line.strip_prefix("a=rtpmap:") {
            ("a=rtpmap", leading_pt(v).into_iter().collect())
        } else if let Some(v) = line.strip_prefix("a=fmtp:") {
            ("a=fmtp", leading_pt(v).into_iter().collect())
        } else {
            continue;
        };
        for pt in pts {
            if !seen.insert((pt, what)) {
                return Some((pt, what));
            }
        }
    }
    None
}

/// The payload type an `a=rtpmap:` or `a=fmtp:` value starts with.
fn leading_pt(value: &str) -> Option<u8> {
    value.split_whitespace().next()?.parse().ok()
}

/// The first ICE username fragment in `sdp`.
pub fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

/// A trickle-ICE fragment (RFC 8840) as WHIP/WHEP clients PATCH it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// `candidate:...` values, without the `a=` prefix.
    pub candidates: Vec<String>,
    /// ICE ufrag and pwd when the fragment asks for an ICE restart.
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    pub end_of_candidates: bool,
}

/// Parses a trickle-ICE SDP fragment.
pub fn parse_fragment(body: &str) -> Result<Fragment, String> {
    if body.len() > MAX_SDP_BYTES {
        return Err(format!("fragment of {} bytes is too large", body.len()));
    }
    let mut frag = Fragment::default();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(c) = line.strip_prefix("a=candidate:") {
            frag.candidates.push(format!("candidate:{c}"));
        } else if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
            frag.ice_ufrag = Some(u.to_owned());
        } else if let Some(p) = line.strip_prefix("a=ice-pwd:") {
            frag.ice_pwd = Some(p.to_owned());
        } else if line == "a=end-of-candidates" {
            frag.end_of_candidates = true;
        } else if line.starts_with("a=") || line.starts_with("m=") {
            // mid, group and other attributes carry nothing the server needs.
        } else {
            return Err(format!("unexpected line in SDP fragment: {line:?}"));
        }
    }
    Ok(frag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45\r\na=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:97 rtx/90000\r\na=rtpmap:102 H264/90000\r\na=rtpmap:103 rtx/90000\r\n\
        a=rtpmap:45 AV1/90000\r\n";

    #[test]
    fn tells_an_offer_that_sends_simulcast() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rid:f send\r\na=rid:q send\r\na=simulcast:send f;q\r\n";
        assert!(sends_simulcast(offer));
        assert!(!sends_simulcast(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        ));
        assert!(!sends_simulcast("v=0\r\na=simulcast:recv f;q\r\n"));
    }

    #[test]
    fn payload_types_described_twice_are_refused() {
        let base = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\n\
                    a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";
        assert_eq!(check_offer(base), Ok(()));
        // One RTX payload type for two codecs (found by the `offer` fuzz target: str0m
        // asserts on it).
        let twice = format!("{base}a=fmtp:97 apt=98\r\n");
        assert_eq!(described_twice(&twice), Some((97, "a=fmtp")));
        assert!(matches!(check_offer(&twice), Err(OfferError::Malformed(m)) if m.contains("97")));
        assert_eq!(
            described_twice("m=video 9 RTP/AVP 96 96\r\n"),
            Some((96, "m="))
        );
        // Another section may use the same numbers.
        assert_eq!(
            described_twice(&format!(
                "{base}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n"
            )),
            None
        );
    }

    #[test]
    fn lists_video_codecs_in_order() {
        assert_eq!(offered_video_codecs(OFFER), vec!["VP8", "H264", "AV1"]);
        assert!(check_offer(OFFER).is_ok());
    }

    #[test]
    fn lists_payload_types() {
        assert_eq!(payload_types(OFFER), vec![111, 96, 97, 102, 103, 45]);
    }

    #[test]
    fn refuses_unsupported_codecs_naming_them() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:98 H265/90000\r\n";
        let err = check_offer(sdp).unwrap_err();
        assert_eq!(err.status(), 406);
        assert!(err.to_string().contains("H265"), "{err}");
        assert!(err.to_string().contains("VP8"), "{err}");
    }

    #[test]
    fn refuses_bad_bodies() {
        assert_eq!(check_offer("").unwrap_err().status(), 400);
        assert_eq!(check_offer("hello").unwrap_err().status(), 400);
        assert_eq!(
            check_offer("v=0\r\nm=audio 9 RTP/AVP 0\r\n").unwrap_err(),
            OfferError::NoVideo
        );
        let big = format!("v=0\r\n{}", "a=x\r\n".repeat(MAX_SDP_BYTES / 4));
        assert_eq!(check_offer(&big).unwrap_err().status(), 413);
    }

    #[test]
    fn parses_trickle_fragments() {
        let f = parse_fragment(
            "a=ice-ufrag:abcd\r\na=ice-pwd:secret\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n",
        )
        .unwrap();
        assert_eq!(
            f.candidates,
            vec!["candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"]
        );
        assert_eq!(f.ice_ufrag.as_deref(), Some("abcd"));
        assert!(f.end_of_candidates);
        assert!(parse_fragment("garbage").is_err());
    }
}
