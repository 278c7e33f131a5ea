#!/usr/bin/python3
# SPDX-License-Identifier: MPL-2.0
"""The project's reference WHIP publisher: plain GStreamer webrtcbin, no callsink.

The tests publish into the call server with it as a third-party peer (tests/server.rs), and
the publish benchmark compares callsink's cost with it (benches/publish.rs). Run it with
Debian's /usr/bin/python3 (packages python3-gi, gir1.2-gstreamer-1.0,
gir1.2-gst-plugins-base-1.0, gir1.2-gst-plugins-bad-1.0, gstreamer1.0-plugins-{base,good,bad},
gstreamer1.0-nice):

    /usr/bin/python3 tests/peers/whip_publish.py -u http://127.0.0.1:8080/whip/room \\
        [-t TOKEN] [-d SECONDS] [--local-ip 127.0.0.1] [-V 'BRANCH'] [-q]

WHIP as in RFC 9725, without trickle: it gathers every ICE candidate, POSTs the offer
(Content-Type: application/sdp, with "Authorization: Bearer TOKEN" when a token is given),
expects 201 Created with a Location and the answer, publishes, and DELETEs the resource it
was given when it ends: after --duration seconds of publishing, on SIGINT or SIGTERM, or at
the end of the stream. Redirects that keep the method (307, 308) are followed; the token is
sent only to the endpoint's origin.

Without -V it publishes the benchmark's track: moving bars encoded with the VP8 settings
callsink uses (src/callsink/codec.rs: real-time CBR with the rate-control buffer of WebRTC's
own encoder, a keyframe every 2 s), 1280x720@30 at 2 Mbit/s unless told otherwise.

Exit status: 0 when it connected and ended as asked, 1 on an HTTP or WHIP error (printed on
standard error, with the server's reason), 2 on bad arguments, 3 when ICE or DTLS failed,
4 on a pipeline error, 5 when it ended without ever connecting.
"""
import argparse
import ctypes
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstSdp", "1.0")
    gi.require_version("GstWebRTC", "1.0")
    from gi.repository import GLib, Gst, GstSdp, GstWebRTC
except (ImportError, ValueError) as e:
    sys.exit(
        "PyGObject with GStreamer 1.0 and its WebRTC bindings are needed (%s): run with "
        "Debian's /usr/bin/python3 (packages python3-gi, gir1.2-gst-plugins-bad-1.0)" % e
    )

EXIT_OK, EXIT_HTTP, EXIT_ICE, EXIT_PIPELINE, EXIT_NEVER_CONNECTED = 0, 1, 3, 4, 5

# Seconds an HTTP request may take, and the largest answer read.
HTTP_TIMEOUT = 10
MAX_ANSWER = 1 << 20
# Redirects followed before giving up.
MAX_REDIRECTS = 5
# Milliseconds to wait for ICE gathering to report completion before sending the offer with
# the candidates found so far.
GATHERING_TIMEOUT_MS = 3000


def keep_for_webrtcbin(agent):
    """Gives webrtcbin back the reference to its ICE agent that the Python wrapper took.

    webrtcbin (GStreamer 1.22) keeps its agent by the floating reference it was created with;
    the first Python wrapper of the agent sinks that reference and owns it, and freeing the
    wrapper would free the agent under webrtcbin (a crash in the offer). A count of one means
    the wrapper holds the only reference: add one for webrtcbin, released when it goes.
    """
    if agent.__grefcount__ != 1:
        return
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    g_object_ref = ctypes.CDLL("libgobject-2.0.so.0").g_object_ref
    g_object_ref.restype = ctypes.c_void_p
    g_object_ref.argtypes = [ctypes.c_void_p]
    g_object_ref(get_pointer(agent.__gpointer__, None))


def default_video(width, height, framerate, bitrate):
    """The benchmark's track: moving bars, VP8 with callsink's encoder settings."""
    return (
        "videotestsrc is-live=true pattern=smpte horizontal-speed=4 "
        "! video/x-raw,format=I420,width=%d,height=%d,framerate=%d/1 ! queue "
        "! vp8enc deadline=1 cpu-used=4 end-usage=cbr lag-in-frames=0 target-bitrate=%d "
        "keyframe-max-dist=%d error-resilient=default buffer-size=1000 "
        "buffer-initial-size=500 buffer-optimal-size=600 "
        "! rtpvp8pay pt=96 ssrc=2 picture-id-mode=15-bit mtu=1200 ! queue "
        "! application/x-rtp,media=video,encoding-name=VP8,payload=96"
        % (width, height, framerate, bitrate, 2 * framerate)
    )


class WhipError(Exception):
    """An HTTP exchange with the WHIP server that did not go as RFC 9725 says."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without its body: redirects are followed
    # by Whip.request instead, which keeps the method and the body.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def origin(url):
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme, parts.hostname, port)


class Whip:
    """The HTTP side: the offer, the answer, the resource and its DELETE."""

    def __init__(self, endpoint, token):
        self.endpoint = endpoint
        self.token = token
        self.resource = None
        self.opener = urllib.request.build_opener(_NoRedirect)

    def request(self, method, url, body=None, content_type=None):
        """Returns (status, headers, body, final URL); raises WhipError on any failure."""
        for _ in range(MAX_REDIRECTS + 1):
            req = urllib.request.Request(url, data=body, method=method)
            if content_type:
                req.add_header("Content-Type", content_type)
            # The token is for the endpoint's origin only, never for a server it redirects to.
            if self.token and origin(url) == origin(self.endpoint):
                req.add_header("Authorization", "Bearer " + self.token)
            try:
                with self.opener.open(req, timeout=HTTP_TIMEOUT) as r:
                    return r.status, r.headers, r.read(MAX_ANSWER), url
            except urllib.error.HTTPError as e:
                location = e.headers.get("Location")
                if e.code in (307, 308) and location:
                    url = urllib.parse.urljoin(url, location)
                    continue
                reason = e.read(4096).decode(errors="replace").strip()
                raise WhipError(
                    "%s %s: HTTP %d %s%s"
                    % (method, url, e.code, e.reason, ": " + reason if reason else "")
                ) from None
            except (urllib.error.URLError, OSError) as e:
                raise WhipError("%s %s: %s" % (method, url, getattr(e, "reason", e))) from None
        raise WhipError("%s %s: more than %d redirects" % (method, self.endpoint, MAX_REDIRECTS))

    def publish(self, offer):
        """POSTs the offer; returns the answer's SDP text and keeps the resource URL."""
        status, headers, body, url = self.request(
            "POST", self.endpoint, offer.encode(), "application/sdp"
        )
        if status != 201:
            raise WhipError("POST %s: HTTP %d, expected 201 Created" % (url, status))
        location = headers.get("Location")
        if not location:
            raise WhipError("POST %s: 201 without a Location header" % url)
        self.resource = urllib.parse.urljoin(url, location)
        content_type = headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/sdp":
            raise WhipError("POST %s: answer of type %r, expected application/sdp"
                            % (url, content_type))
        return body.decode(errors="replace")

    def delete(self):
        """Ends the session, if there is one."""
        resource, self.resource = self.resource, None
        if resource:
            self.request("DELETE", resource)
        return resource


class Publisher:
    """webrtcbin with one send-only video track, driven by a GLib main loop."""

    def __init__(self, args):
        self.args = args
        self.whip = Whip(args.url, args.token)
        self.loop = GLib.MainLoop()
        self.rc = EXIT_OK
        self.offered = False
        self.connected_at = None

        self.pipeline = Gst.parse_launch(
            "webrtcbin name=webrtc bundle-policy=max-bundle %s ! webrtc." % args.video
        )
        self.webrtc = self.pipeline.get_by_name("webrtc")
        # libnice leaves out loopback addresses unless told about them: on a host (or network
        # namespace) with nothing but lo, --local-ip 127.0.0.1 is the only way to a candidate.
        if args.local_ip:
            agent = self.webrtc.get_property("ice-agent")
            keep_for_webrtcbin(agent)
            for ip in args.local_ip:
                agent.emit("add-local-ip-address", ip)
        # Linking the branch made the transceiver; it only sends.
        index = 0
        while True:
            transceiver = self.webrtc.emit("get-transceiver", index)
            if transceiver is None:
                break
            transceiver.set_property(
                "direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
            )
            index += 1

        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering_state)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self.on_message)
        for sig in (signal.SIGINT, signal.SIGTERM):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, self.on_signal, sig)

    def log(self, *what):
        if not self.args.quiet:
            print("[whip_publish %.3f]" % time.monotonic(), *what, flush=True)

    def fail(self, rc, message):
        """Ends the run with exit status rc (the first failure wins). Any thread."""
        print("whip_publish: %s" % message, file=sys.stderr, flush=True)
        if self.rc == EXIT_OK:
            self.rc = rc
        GLib.idle_add(self.stop)

    def stop(self, *_):
        self.loop.quit()
        return GLib.SOURCE_REMOVE

    # Negotiation. webrtcbin calls these from its own threads; the HTTP exchange runs on the
    # main loop.

    def on_negotiation_needed(self, webrtc):
        self.log("negotiation needed: creating the offer")
        promise = Gst.Promise.new_with_change_func(self.on_offer_created)
        webrtc.emit("create-offer", None, promise)

    def on_offer_created(self, promise):
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None and reply.has_field("offer") else None
        if offer is None:
            self.fail(EXIT_PIPELINE, "webrtcbin made no offer: %s" % reply)
            return
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())
        # Gathering ends with the candidates of every interface; in case it never says so,
        # offer what there is after a while.
        GLib.timeout_add(GATHERING_TIMEOUT_MS, self.send_offer)

    def on_gathering_state(self, webrtc, _pspec):
        state = webrtc.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self.send_offer)

    def send_offer(self):
        if self.offered:
            return GLib.SOURCE_REMOVE
        self.offered = True
        offer = self.webrtc.get_property("local-description").sdp.as_text()
        self.log("POST offer (%d bytes, %d candidates) to %s"
                 % (len(offer), offer.count("a=candidate"), self.args.url))
        try:
            answer = self.whip.publish(offer)
        except WhipError as e:
            self.fail(EXIT_HTTP, e)
            return GLib.SOURCE_REMOVE
        self.log("201 Created, resource %s" % self.whip.resource)
        ok, message = GstSdp.SDPMessage.new_from_text(answer)
        if ok != GstSdp.SDPResult.OK:
            self.fail(EXIT_HTTP, "the answer is not SDP: %r" % answer[:200])
            return GLib.SOURCE_REMOVE
        description = GstWebRTC.WebRTCSessionDescription.new(
            GstWebRTC.WebRTCSDPType.ANSWER, message
        )
        promise = Gst.Promise.new_with_change_func(self.on_answer_set)
        self.webrtc.emit("set-remote-description", description, promise)
        if self.args.duration > 0:
            GLib.timeout_add(int(self.args.duration * 1000), self.stop)
        return GLib.SOURCE_REMOVE

    def on_answer_set(self, promise):
        reply = promise.get_reply()
        if reply is not None and reply.has_field("error"):
            self.fail(EXIT_HTTP, "webrtcbin refused the answer: %s" % reply.to_string())

    def on_connection_state(self, webrtc, _pspec):
        state = webrtc.get_property("connection-state")
        self.log("connection state:", state.value_nick)
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and self.connected_at is None:
            self.connected_at = time.monotonic()
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            self.fail(EXIT_ICE, "the connection failed (ICE or DTLS)")

    def on_message(self, _bus, message):
        if message.type == Gst.MessageType.ERROR:
            err, debug = message.parse_error()
            self.fail(EXIT_PIPELINE, "pipeline error: %s (%s)" % (err.message, debug))
        elif message.type == Gst.MessageType.EOS:
            self.log("end of stream")
            self.stop()
        return True

    def on_signal(self, sig):
        self.log("%s: ending" % signal.Signals(sig).name)
        self.stop()
        return GLib.SOURCE_REMOVE

    def log_sent(self):
        """What left, from webrtcbin's statistics."""
        promise = Gst.Promise.new()
        self.webrtc.emit("get-stats", None, promise)
        promise.wait()
        stats = promise.get_reply()
        if stats is None:
            return
        for i in range(stats.n_fields()):
            value = stats.get_value(stats.nth_field_name(i))
            if isinstance(value, Gst.Structure) and value.get_name() == "outbound-rtp":
                self.log("sent: ssrc %s, %s packets, %s bytes" % (
                    value.get_value("ssrc"), value.get_value("packets-sent"),
                    value.get_value("bytes-sent")))

    def run(self):
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            print("whip_publish: the pipeline does not start", file=sys.stderr)
            return EXIT_PIPELINE
        self.loop.run()

        self.log_sent()
        # The session ends with the DELETE, whatever ended the run.
        try:
            resource = self.whip.delete()
            if resource:
                self.log("DELETE %s: done" % resource)
        except WhipError as e:
            print("whip_publish: %s" % e, file=sys.stderr)
            if self.rc == EXIT_OK:
                self.rc = EXIT_HTTP
        self.pipeline.set_state(Gst.State.NULL)
        if self.connected_at is None and self.rc == EXIT_OK:
            print("whip_publish: ended without ever connecting", file=sys.stderr)
            self.rc = EXIT_NEVER_CONNECTED
        return self.rc


def main():
    ap = argparse.ArgumentParser(
        description="Publish a video track to a WHIP endpoint with GStreamer webrtcbin."
    )
    ap.add_argument("-u", "--url", required=True, help="WHIP endpoint URL")
    ap.add_argument("-t", "--token", help="bearer token for the endpoint")
    ap.add_argument("-V", "--video",
                    help="video branch, a gst-launch description ending in application/x-rtp "
                         "caps (default: moving bars, VP8 with callsink's settings)")
    ap.add_argument("--width", type=int, default=1280, help="default track's width (1280)")
    ap.add_argument("--height", type=int, default=720, help="default track's height (720)")
    ap.add_argument("--framerate", type=int, default=30,
                    help="default track's frames per second (30)")
    ap.add_argument("--bitrate", type=int, default=2_000_000,
                    help="default track's bits per second (2000000)")
    ap.add_argument("-d", "--duration", type=float, default=0,
                    help="seconds to publish once answered (0: until SIGINT or SIGTERM)")
    ap.add_argument("--local-ip", action="append", default=[], metavar="IP",
                    help="also gather ICE candidates on this address, loopback included "
                         "(repeatable; 127.0.0.1 on a host with only lo)")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="no progress lines (errors are still printed)")
    args = ap.parse_args()
    if urllib.parse.urlsplit(args.url).scheme not in ("http", "https"):
        ap.error("--url must be an http or https URL")
    if args.duration < 0:
        ap.error("--duration must not be negative")
    if min(args.width, args.height, args.framerate, args.bitrate) < 1:
        ap.error("--width, --height, --framerate and --bitrate must be positive")
    if args.video is None:
        args.video = default_video(args.width, args.height, args.framerate, args.bitrate)

    Gst.init(None)
    try:
        publisher = Publisher(args)
    except GLib.Error as e:
        print("whip_publish: bad pipeline: %s" % e.message, file=sys.stderr)
        return EXIT_PIPELINE
    return publisher.run()


if __name__ == "__main__":
    sys.exit(main())
