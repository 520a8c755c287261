"""Several cameras in one daemon: resident memory for 1 and for N cameras on one shared model,
and each camera's processed fps when together they offer more frames than the backbone runs.

The reference is the same daemon with one camera, measured in the same run. Each camera
replays the same photos from its own folder at `--source-fps` (default 30, well above what
one backbone runs on these machines), so the round-robin worker is overloaded and every
camera drops stale frames; fairness is the spread of the per-camera fps:
(max - min) / max, goal <= 0.20. Memory: VmRSS and VmHWM after the warm-up, goal
RSS(N) / RSS(1) <= 1.3 (the model is loaded once, a camera costs its frame buffers).

    python3 benches/cameras.py [--cameras 4] [--seconds 40] [--adaptd target/release/adaptd]

Prints one JSON object; exits 1 when a goal is missed (it is a benchmark: run it by hand).
"""

import json
import sys
import time
from pathlib import Path

import daemon_harness as h


def sections(args, work, n):
    text = f'[model]\nname = "{args.model}"\n[motion]\nenabled = false\n'
    for i in range(n):
        frames, _ = h.frames_dir(args.images, Path(work) / f"cam{i}", n=8)
        text += (f'[[cameras]]\nname = "cam{i}"\n'
                 f'source = {{ kind = "dir", path = "{frames}", fps = {args.source_fps}, '
                 'loop = true }\n')
    return text


def measure(args, n):
    work = h.workdir()
    with h.running(args, work, sections(args, work, n)) as daemon:
        time.sleep(args.warmup)
        t0 = time.time()
        time.sleep(args.seconds)
        if not daemon.alive():
            sys.exit(f"the daemon stopped; see {Path(work) / 'daemon.log'}")
        per_camera = {}
        for i in range(n):
            # The daemon's fps meter averages over 10 s: skip the window's first 10 s.
            window = daemon.stats_since(t0 + 10, camera=f"cam{i}")
            if not window or "fps" not in window[-1]:
                sys.exit(f"no stats for cam{i}; see {Path(work) / 'daemon.log'}")
            last = window[-1]
            per_camera[f"cam{i}"] = {
                "fps": round(h.median([s["fps"] for s in window]), 2),
                "frames": last["frames"],
                "skipped_frames": last["skipped_frames"],
                "inference_ms_p50": round(last["inference_ms_p50"], 2),
            }
        return {
            "cameras": n,
            "rss_mib": round(daemon.rss_kib() / 1024, 1),
            "peak_mib": round(daemon.rss_kib("VmHWM") / 1024, 1),
            "per_camera": per_camera,
        }


def main():
    ap = h.arg_parser(__doc__)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--source-fps", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=40.0)
    args = ap.parse_args()

    one = measure(args, 1)
    many = measure(args, args.cameras)
    fps = [c["fps"] for c in many["per_camera"].values()]
    spread = (max(fps) - min(fps)) / max(fps) if max(fps) > 0 else float("nan")
    memory = many["rss_mib"] / one["rss_mib"]
    total_one = one["per_camera"]["cam0"]["fps"]
    report = {
        "model": args.model,
        "source_fps_per_camera": args.source_fps,
        "one": one,
        "many": many,
        "rss_ratio": round(memory, 3),
        "peak_ratio": round(many["peak_mib"] / one["peak_mib"], 3),
        "fps_spread": round(spread, 3),
        # What N cameras get together against one camera alone: the backbone's share.
        "total_fps_ratio": round(sum(fps) / total_one, 3) if total_one else None,
    }
    print(json.dumps(report, indent=1))
    sys.exit(0 if memory <= 1.3 and spread <= 0.2 else 1)


if __name__ == "__main__":
    main()
