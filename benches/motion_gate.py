#!/usr/bin/env python3
"""CPU time of `adaptd run` per source frame with and without motion gating.

Two replays at the same frame rate: a static scene (one photo, looped: a camera looking at
an empty room) and a moving one (the photos of --images in turn: every frame differs). Each
runs twice, with `[motion] enabled = true` (the default; keep-alive every 10 s) and `false`,
on MobileNetV2. CPU time (user + system, from /proc) is divided by the frames the source
delivered over the same seconds, and compared with full inference (gating off) on the same
scene. Target: the static scene costs under 10 % of full inference.

    benches/motion_gate.py [--adaptd target/release/adaptd] [--images demo/frames]
"""

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import daemon_harness as h  # noqa: E402


def run(args, work, frames, motion):
    with h.running(args, work,
                   f'[model]\nname = "{args.model}"\n'
                   f'[source]\nkind = "dir"\npath = "{frames}"\nfps = {args.fps}\nloop = true\n'
                   f'[motion]\nenabled = {"true" if motion else "false"}\n') as daemon:
        time.sleep(args.warmup)
        t0, cpu0 = time.time(), daemon.cpu_seconds()
        time.sleep(args.seconds)
        cpu1, t1 = daemon.cpu_seconds(), time.time()
        stats = daemon.stats_since(0)
        if not stats or not daemon.alive():
            sys.exit(f"no stats from the daemon; see {work / 'daemon.log'}")
        last = stats[-1]
        delivered = args.fps * (t1 - t0)
        return {
            "cpu_ms_per_frame": round(1000 * (cpu1 - cpu0) / delivered, 2),
            "cpu_share_of_one_core": round((cpu1 - cpu0) / (t1 - t0), 3),
            "analysed": last["frames"],
            "motion_skipped": last["motion_skipped_frames"],
        }


def main():
    ap = h.arg_parser(__doc__)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    args = ap.parse_args()
    base = Path(h.workdir())
    moving, photos = h.frames_dir(args.images, base / "moving")
    still = base / "still"
    still.mkdir()
    shutil.copy(photos[0], still / photos[0].name)
    results = {}
    for scene, frames in (("static", still), ("moving", moving)):
        for motion in (False, True):
            work = base / f"{scene}-{motion}"
            work.mkdir()
            r = run(args, work, frames, motion)
            results[(scene, motion)] = r
            print(json.dumps({"scene": scene, "motion_gating": motion, **r}), flush=True)
    for scene in ("static", "moving"):
        full = results[(scene, False)]["cpu_ms_per_frame"]
        gated = results[(scene, True)]["cpu_ms_per_frame"]
        print(json.dumps({"scene": scene, "gated_over_full": round(gated / full, 3)}))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
