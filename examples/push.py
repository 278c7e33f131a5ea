#!/usr/bin/python3
# SPDX-License-Identifier: MPL-2.0
"""Push frames into customvideosrc from Python through its action signals.

Run with Debian's /usr/bin/python3 (it has PyGObject) and the plugin on GST_PLUGIN_PATH:

    GST_PLUGIN_PATH=target/debug /usr/bin/python3 examples/push.py [--frames N] [--bad-size]

It pushes solid-colour RGBA frames (the first one with push-sample, which carries caps, the
others with push-buffer) into an I420 track, ends the stream (end-of-stream), converts what
comes out back to RGBA, checks that every frame has the colour it was pushed with, and prints
one summary line:

    PUSHED n OUT m FLOW ok COLOR-OK yes EOS yes

and exits 0 only if all checks pass. With --bad-size it pushes a buffer of the wrong size and
prints the flow return and the error the element posted:

    BAD-SIZE flow=error error=<message>
"""
import argparse
import sys

try:
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst
except (ImportError, ValueError) as e:
    sys.exit(
        "PyGObject with GStreamer 1.0 is needed (%s): run with Debian's /usr/bin/python3 "
        "(packages python3-gi, gir1.2-gstreamer-1.0)" % e
    )

WIDTH, HEIGHT = 320, 240
CAPS = "video/x-raw,format=RGBA,width=%d,height=%d,framerate=30/1" % (WIDTH, HEIGHT)
COLOURS = [
    ("red", (255, 0, 0)),
    ("green", (0, 255, 0)),
    ("blue", (0, 0, 255)),
    ("white", (255, 255, 255)),
]
# RGBA -> I420 -> RGBA is not exact: allow the rounding of the two conversions.
TOLERANCE = 12
# Where the colour of an output frame is read: the centre and the four corners.
POINTS = [(WIDTH // 2, HEIGHT // 2), (0, 0), (WIDTH - 1, 0), (0, HEIGHT - 1), (WIDTH - 1, HEIGHT - 1)]


def frame(rgb):
    return Gst.Buffer.new_wrapped(bytes((rgb[0], rgb[1], rgb[2], 255)) * (WIDTH * HEIGHT))


def check_sample(sample, name, rgb):
    """Returns None when the sample is a WIDTHxHEIGHT RGBA frame of colour rgb, else why not."""
    s = sample.get_caps().get_structure(0)
    size = (s.get_value("width"), s.get_value("height"))
    if size != (WIDTH, HEIGHT) or s.get_value("format") != "RGBA":
        return "expected %dx%d RGBA, got %s" % (WIDTH, HEIGHT, s.to_string())
    buf = sample.get_buffer()
    ok, info = buf.map(Gst.MapFlags.READ)
    if not ok:
        return "cannot map the output buffer"
    try:
        for x, y in POINTS:
            o = (y * WIDTH + x) * 4
            got = tuple(info.data[o:o + 3])
            if any(abs(a - b) > TOLERANCE for a, b in zip(got, rgb)):
                return "expected %s %s at (%d, %d), got %s" % (name, rgb, x, y, got)
    finally:
        buf.unmap(info)
    return None


def build():
    # The track is I420 (what encoders take), so the element converts every RGBA frame; no
    # track frame rate, so frames leave as they are pushed and each comes out exactly once, in
    # order (a paced track would drop or repeat frames to keep its rate). block=true makes a
    # push wait for room instead of dropping the oldest queued frame.
    pipeline = Gst.parse_launch(
        'customvideosrc name=src caps="%s" format=I420 block=true max-buffers=4 '
        "! videoconvert ! video/x-raw,format=RGBA ! appsink name=sink sync=false" % CAPS
    )
    return pipeline, pipeline.get_by_name("src"), pipeline.get_by_name("sink")


def bad_size():
    pipeline, src, _ = build()
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    flow = src.emit("push-buffer", Gst.Buffer.new_wrapped(b"\0" * 1000))
    msg = bus.timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.ERROR)
    err = msg.parse_error()[0].message if msg else "none"
    pipeline.set_state(Gst.State.NULL)
    print("BAD-SIZE flow=%s error=%s" % (flow.value_nick, err))
    return 0 if flow != Gst.FlowReturn.OK and msg else 1


def push(count):
    pipeline, src, sink = build()
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)

    flows = []
    for i in range(count):
        rgb = COLOURS[i % len(COLOURS)][1]
        if i == 0:
            sample = Gst.Sample.new(frame(rgb), Gst.Caps.from_string(CAPS), None, None)
            flows.append(src.emit("push-sample", sample))
        else:
            flows.append(src.emit("push-buffer", frame(rgb)))
    flows.append(src.emit("end-of-stream"))

    # Pull until the appsink reports the end (it posts EOS only once everything is pulled).
    problems = []
    out = 0
    while True:
        sample = sink.emit("try-pull-sample", 5 * Gst.SECOND)
        if sample is None:
            break
        if out < count:
            name, rgb = COLOURS[out % len(COLOURS)]
            problem = check_sample(sample, name, rgb)
            if problem:
                problems.append("frame %d: %s" % (out, problem))
        out += 1
    end = bus.timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    eos_ok = end is not None and end.type == Gst.MessageType.EOS
    if end is not None and end.type == Gst.MessageType.ERROR:
        print("pipeline error: %s" % end.parse_error()[0].message, file=sys.stderr)
    pipeline.set_state(Gst.State.NULL)

    for p in problems:
        print(p, file=sys.stderr)
    flow_ok = all(f == Gst.FlowReturn.OK for f in flows)
    if not flow_ok:
        print("flow returns: %s" % ", ".join(f.value_nick for f in flows), file=sys.stderr)
    colour_ok = not problems and out > 0
    print(
        "PUSHED %d OUT %d FLOW %s COLOR-OK %s EOS %s"
        % (count, out, "ok" if flow_ok else "error", "yes" if colour_ok else "no",
           "yes" if eos_ok else "no")
    )
    return 0 if flow_ok and colour_ok and eos_ok and out == count else 1


def main():
    ap = argparse.ArgumentParser(description="Push frames into customvideosrc from Python.")
    ap.add_argument("--frames", type=int, default=12, help="frames to push (default 12)")
    ap.add_argument("--bad-size", action="store_true",
                    help="push a buffer of the wrong size and show how it is refused")
    args = ap.parse_args()
    if args.frames < 1:
        ap.error("--frames must be at least 1")

    Gst.init(None)
    if Gst.ElementFactory.find("customvideosrc") is None:
        print("customvideosrc not found: set GST_PLUGIN_PATH to the directory of "
              "libgstcustomvideo.so (target/debug after cargo build)", file=sys.stderr)
        return 2
    return bad_size() if args.bad_size else push(args.frames)


if __name__ == "__main__":
    sys.exit(main())
