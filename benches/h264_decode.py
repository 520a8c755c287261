#!/usr/bin/env python3
"""H.264 decode cost of an RTSP camera's frames: adaptd's decoder (openh264, what the `rtsp`
source runs) against `ffmpeg -threads 1` on the same files, 640x360 and 1280x720.

    benches/h264_decode.py [--adaptd target/release/adaptd] [--seconds 20]

Encodes each size with ffmpeg's libx264 (testsrc2, 10 fps, a key frame every 2 s, like a
camera's sub-stream), then times both decoders (fastest of 3 passes each) and prints ms per
frame and the ratio. Also prints what a 10 fps 720p camera with inference at 2 fps costs in
decoding (every frame decoded, 2 of 10 converted to RGB), as a share of one core.
"""
import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

SIZES = ["640x360", "1280x720"]


def encode(size, seconds, out):
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size={size}:rate=10", "-t", str(seconds), "-c:v", "libx264",
         "-preset", "veryfast", "-tune", "zerolatency", "-g", "20", "-pix_fmt", "yuv420p",
         "-f", "h264", str(out)],
        check=True)


def ffmpeg_ms(path, frames):
    best = None
    for _ in range(3):
        p = subprocess.run(
            ["ffmpeg", "-hide_banner", "-nostats", "-benchmark", "-threads", "1", "-f", "h264", "-i",
             str(path), "-f", "null", "-"], capture_output=True, text=True, check=True)
        m = re.search(r"rtime=([0-9.]+)s", p.stdout + p.stderr)
        secs = float(m.group(1))
        best = secs if best is None else min(best, secs)
    return best * 1e3 / frames


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adaptd", default="target/release/adaptd")
    ap.add_argument("--seconds", type=int, default=20)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            f = Path(tmp) / f"{size}.h264"
            encode(size, a.seconds, f)
            out = subprocess.run([a.adaptd, "bench-h264", str(f)], capture_output=True,
                                 text=True, check=True).stdout
            ours = json.loads(out)
            ref = ffmpeg_ms(f, ours["frames"])
            rows.append((size, ours, ref))
    print(f"{'size':>9} {'frames':>6} {'adaptd decode':>14} {'+ rgb':>8} "
          f"{'ffmpeg -threads 1':>18} {'ratio':>6}")
    for size, o, ref in rows:
        print(f"{size:>9} {o['frames']:>6} {o['decode_ms_per_frame']:>11.2f} ms "
              f"{o['rgb_ms_per_frame']:>5.2f} ms {ref:>15.2f} ms "
              f"{o['decode_ms_per_frame'] / ref:>5.2f}x")
    o = rows[-1][1]
    share = (10 * o["decode_ms_per_frame"] + 2 * o["rgb_ms_per_frame"]) / 1000
    print(f"10 fps 720p camera, inference at 2 fps: decoding costs {share * 100:.1f} % of one core "
          "(before inference)")


if __name__ == "__main__":
    main()
