// SPDX-License-Identifier: MPL-2.0
//! `callsink`: publishes the video that reaches it to a call over WHIP.

pub mod whip;
