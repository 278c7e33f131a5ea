// SPDX-License-Identifier: MPL-2.0
//! Encoder configuration presets in the style of call SDKs (`encoder-config`).
//!
//! The names and values follow the call-SDK preset family (`480p_1` is the usual default):
//! resolution, frame rate and the recommended maximum bitrate. The minimum bitrate of a preset
//! is a quarter of its maximum: the floor below which congestion control should not go.

/// One preset: track resolution, frame rate and bitrate bounds (kbit/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub width: u32,
    pub height: u32,
    pub fps: i32,
    pub bitrate_min_kbps: u32,
    pub bitrate_max_kbps: u32,
}

const fn preset(name: &'static str, width: u32, height: u32, fps: i32, kbps: u32) -> Preset {
    Preset {
        name,
        width,
        height,
        fps,
        bitrate_min_kbps: kbps / 4,
        bitrate_max_kbps: kbps,
    }
}

/// Every preset, smallest first.
pub const PRESETS: &[Preset] = &[
    preset("120p_1", 160, 120, 15, 65),
    preset("180p_1", 320, 180, 15, 140),
    preset("240p_1", 320, 240, 15, 200),
    preset("360p_1", 640, 360, 15, 400),
    preset("360p_4", 640, 360, 30, 600),
    preset("360p_11", 640, 360, 24, 1000),
    preset("480p_1", 640, 480, 15, 500),
    preset("480p_2", 640, 480, 30, 1000),
    preset("480p_9", 848, 480, 30, 930),
    preset("720p_1", 1280, 720, 15, 1130),
    preset("720p_2", 1280, 720, 30, 2000),
    preset("720p_3", 1280, 720, 30, 1710),
    preset("1080p_1", 1920, 1080, 15, 2080),
    preset("1080p_2", 1920, 1080, 30, 3000),
];

/// Looks a preset up by name (case-insensitive).
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// The valid preset names, comma separated (for error messages and docs).
pub fn names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_known_presets() {
        let p = find("720p_2").unwrap();
        assert_eq!((p.width, p.height, p.fps), (1280, 720, 30));
        assert_eq!((p.bitrate_min_kbps, p.bitrate_max_kbps), (500, 2000));
        assert_eq!(find("1080P_2").unwrap().bitrate_max_kbps, 3000);
        assert_eq!(find("120p_1").unwrap().width, 160);
    }

    #[test]
    fn rejects_unknown_presets() {
        assert!(find("720p").is_none());
        assert!(find("").is_none());
        assert!(names().starts_with("120p_1, 180p_1"));
        assert!(names().ends_with("1080p_2"));
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in PRESETS.iter().enumerate() {
            for b in &PRESETS[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }
}
