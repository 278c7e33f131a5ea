#!/usr/bin/python3
# SPDX-License-Identifier: MPL-2.0
"""Push frames into customvideosrc from Python through its action signals.

Run with Debian's /usr/bin/python3 (it has PyGObject) and the plugin on GST_PLUGIN_PATH:

    GST_PLUGIN_PATH=target/debug /usr/bin/python3 examples/push.py [--frames N] [--bad-size]

It pushes solid-colour RGBA frames (push-buffer, and one push-sample that carries caps),
ends the stream (end-of-stream), checks the colours of what comes out of the track, and
prints one summary line: PUSHED n OUT m FLOW ok COLOR-OK yes. With --bad-size it pushes a
buffer of the wrong size and prints the flow return and the error the element posted.
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

WIDTH, HEIGHT = 320, 240
CAPS = "video/x-raw,format=RGBA,width=%d,height=%d,framerate=30/1" % (WIDTH, HEIGHT)
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def frame(rgb):
    return Gst.Buffer.new_wrapped(bytes([rgb[0], rgb[1], rgb[2], 255]) * (WIDTH * HEIGHT))


def centre(sample):
    buf = sample.get_buffer()
    ok, info = buf.map(Gst.MapFlags.READ)
    try:
        o = (HEIGHT // 2 * WIDTH + WIDTH // 2) * 4
        return tuple(info.data[o:o + 3])
    finally:
        buf.unmap(info)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--bad-size", action="store_true")
    args = ap.parse_args()

    Gst.init(None)
    if Gst.ElementFactory.find("customvideosrc") is None:
        print("customvideosrc not found: set GST_PLUGIN_PATH to the directory of libgstcustomvideo.so")
        return 2
    pipeline = Gst.parse_launch(
        "customvideosrc name=src caps=%s ! videoconvert ! video/x-raw,format=RGBA "
        "! appsink name=sink sync=false max-buffers=1000" % CAPS
    )
    src = pipeline.get_by_name("src")
    sink = pipeline.get_by_name("sink")
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)

    if args.bad_size:
        flow = src.emit("push-buffer", Gst.Buffer.new_wrapped(b"\0" * 1000))
        msg = bus.timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.ERROR)
        err = msg.parse_error()[0].message if msg else "no error message"
        print("BAD-SIZE flow=%s error=%s" % (flow.value_nick, err))
        pipeline.set_state(Gst.State.NULL)
        return 0 if flow != Gst.FlowReturn.OK and msg else 1

    flows = []
    expected = []
    for i in range(args.frames):
        rgb = COLOURS[i % len(COLOURS)]
        if i == 0:
            sample = Gst.Sample.new(frame(rgb), Gst.Caps.from_string(CAPS), None, None)
            flows.append(src.emit("push-sample", sample))
        else:
            flows.append(src.emit("push-buffer", frame(rgb)))
        expected.append(rgb)
        # Frames leave as they come (no frame rate set): take each before pushing the next,
        # so the bounded queue never has to drop one.
        out = sink.emit("try-pull-sample", 5 * Gst.SECOND)
        if out is None:
            break
        got = centre(out)
        if any(abs(a - b) > 10 for a, b in zip(got, rgb)):
            print("frame %d: expected %s, got %s" % (i, rgb, got))
            expected.append(None)
    flows.append(src.emit("end-of-stream"))
    eos = bus.timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    # Read the statistics before stopping: a stopped track starts counting anew.
    stats = src.get_property("stats")
    pipeline.set_state(Gst.State.NULL)

    flow_ok = all(f == Gst.FlowReturn.OK for f in flows)
    colour_ok = None not in expected
    eos_ok = eos is not None and eos.type == Gst.MessageType.EOS
    out_count = stats.get_value("frames-out")
    print(
        "PUSHED %d OUT %d FLOW %s COLOR-OK %s EOS %s"
        % (args.frames, out_count, "ok" if flow_ok else "error", "yes" if colour_ok else "no",
           "yes" if eos_ok else "no")
    )
    return 0 if flow_ok and colour_ok and eos_ok and out_count == args.frames else 1


if __name__ == "__main__":
    sys.exit(main())
