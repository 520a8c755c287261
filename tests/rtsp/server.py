#!/usr/bin/python3
"""A live H.264 test camera over RTSP, for adaptd's tests and benchmarks.

GStreamer's RTSP server (Debian: gir1.2-gst-rtsp-server-1.0 python3-gst-1.0
gstreamer1.0-plugins-ugly gstreamer1.0-plugins-good) serving videotestsrc through x264enc on
rtsp://127.0.0.1:PORT/cam. Run it with Debian's /usr/bin/python3: the gi bindings live there.

    server.py PORT [--auth basic|digest USER PASSWORD] [--size WxH] [--pattern ball]
              [--fps 10] [--codec h264|h265]

Prints "ready" on stdout once it listens.
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port")
    ap.add_argument("--auth", nargs=3, metavar=("METHOD", "USER", "PASSWORD"))
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--pattern", default="ball")
    ap.add_argument("--fps", default="10")
    ap.add_argument("--codec", default="h264", choices=["h264", "h265"])
    a = ap.parse_args()
    w, h = a.size.split("x")
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(a.port)
    if a.codec == "h264":
        enc = "x264enc tune=zerolatency key-int-max=20 ! rtph264pay name=pay0 pt=96"
    else:
        enc = "x265enc tune=zerolatency key-int-max=20 ! rtph265pay name=pay0 pt=96"
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern={a.pattern} ! "
        f"video/x-raw,width={w},height={h},framerate={a.fps}/1 ! {enc} )"
    )
    factory.set_shared(True)
    if a.auth:
        method, user, password = a.auth
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken.new()
        # set_string, not get_structure().set_value(): the latter does nothing in PyGObject.
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        if method == "basic":
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        else:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(user, password, token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        for perm in (GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS,
                     GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT):
            perms.add_permission_for_role("user", perm, True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
