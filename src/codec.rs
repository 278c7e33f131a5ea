// SPDX-License-Identifier: MPL-2.0
//! The video codecs of a call, by name: one enum for callsink (which encodes them) and the
//! call server (which forwards them).

/// A video codec for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Vp8,
    Vp9,
    H264,
    Av1,
}

impl Codec {
    pub const ALL: [Codec; 4] = [Codec::Vp8, Codec::H264, Codec::Vp9, Codec::Av1];

    /// The name in SDP (`a=rtpmap`) and in the `codec` property (lower case).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Vp8 => "VP8",
            Codec::Vp9 => "VP9",
            Codec::H264 => "H264",
            Codec::Av1 => "AV1",
        }
    }

    pub fn from_encoding_name(name: &str) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Codec::ALL {
            assert_eq!(Codec::from_encoding_name(c.encoding_name()), Some(c));
            assert_eq!(
                Codec::from_encoding_name(&c.encoding_name().to_lowercase()),
                Some(c)
            );
        }
        assert_eq!(Codec::from_encoding_name("h265"), None);
    }
}
