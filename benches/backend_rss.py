#!/usr/bin/env python3
"""Resident memory of `adaptd run` with each backend, after it has settled on a replayed scene.

For each model (MobileNetV2 as a classifier; NanoDet-m with MobileNetV2 sub-labels) and each
backend (tract; onnxruntime through the pip wheel's library), the daemon replays the photos of
--images at 5 fps against a real Mosquitto; VmRSS is read after --seconds and VmHWM (the peak)
at the same time. Both backends load the same models with the same pinned input shapes, so the
difference is the engine: tract's optimised plan, onnxruntime's session and its library.

    benches/backend_rss.py [--adaptd target/release/adaptd] [--ort-library PATH]
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import daemon_harness as h  # noqa: E402

MODELS = {
    "mobilenetv2": '[model]\nname = "mobilenetv2"\n',
    "nanodet-m + mobilenetv2": '[model]\nname = "nanodet-m"\nsublabel_model = "mobilenetv2"\n',
}


def wheel_library():
    out = subprocess.run(
        [sys.executable, "-c",
         "import glob, os, onnxruntime as o; "
         "print(glob.glob(os.path.join(os.path.dirname(o.__file__), 'capi', "
         "'libonnxruntime.so.*'))[0])"],
        capture_output=True, text=True)
    return out.stdout.strip() or None


def measure(args, work, frames, model_section):
    with h.running(args, work, model_section
                   + f'[source]\nkind = "dir"\npath = "{frames}"\nfps = 5.0\nloop = true\n'
                   '[motion]\nenabled = false\n') as daemon:
        time.sleep(args.seconds)
        if not daemon.alive() or not daemon.stats_since(0):
            sys.exit(f"the daemon did not run; see {work / 'daemon.log'}")
        frames_done = daemon.stats_since(0)[-1]["frames"]
        return {
            "rss_mib": round(daemon.rss_kib() / 1024, 1),
            "peak_mib": round(daemon.rss_kib("VmHWM") / 1024, 1),
            "frames": frames_done,
        }


def main():
    ap = h.arg_parser(__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--ort-library", default=None)
    args = ap.parse_args()
    lib = args.ort_library or wheel_library()
    if not lib:
        sys.exit("no onnxruntime library: pip install onnxruntime==1.32.0 or pass --ort-library")
    base = Path(h.workdir())
    frames, _ = h.frames_dir(args.images, base / "frames")
    for i, (name, section) in enumerate(MODELS.items()):
        for backend in ("tract", "onnxruntime"):
            keys = f'backend = "{backend}"\n'
            if backend == "onnxruntime":
                keys += f'onnxruntime_library = "{lib}"\n'
            work = base / f"model{i}-{backend}"
            work.mkdir()
            r = measure(args, work, frames, section + keys)
            print(json.dumps({"model": name, "backend": backend, **r}), flush=True)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
