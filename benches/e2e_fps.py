#!/usr/bin/env python3
"""End-to-end frame rate of `adaptd run` against the backbone's own throughput.

The daemon replays a folder of photos a little faster than the backbone can keep up with
(1.25 x its measured throughput), so the pipeline is saturated: every frame is read, decoded,
preprocessed, run through the backbone and the head, published on MQTT. Its `stats` fps is
compared with the throughput of the backbone alone (`adaptd bench`, 1 thread: the daemon's
inference thread is one thread), measured in the same run on the same machine.

    benches/e2e_fps.py [--adaptd target/release/adaptd] [--model mobilenetv2] [--seconds 40]

Prints one JSON object: backbone median ms and throughput, end-to-end fps (median of the
`stats` messages after a warm-up), the ratio, skipped frames, CPU time per frame, RSS, and
`busy_ratio`: end-to-end fps x the daemon's own per-frame inference time, the share of the
inference thread's time spent on frames (1.0 = no time lost between frames). On a machine
whose load changes between the two phases, `busy_ratio` is the steadier figure.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import daemon_harness as h  # noqa: E402


def backbone_ms(adaptd, model_dir, model, image):
    out = subprocess.run(
        [adaptd, "--model-dir", str(model_dir), "bench", "--model", model, "--image",
         str(image), "--threads", "1", "--python", "none", "--json", "--iters", "40"],
        check=True, capture_output=True, text=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return report["backbone"][0]["tract"]["median_ms"], report


def main():
    ap = h.arg_parser(__doc__)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--warmup", type=float, default=12.0)
    args = ap.parse_args()

    work = Path(h.workdir())
    frames, photos = h.frames_dir(args.images, work / "frames")
    ms, _ = backbone_ms(args.adaptd, args.model_dir, args.model, photos[0])
    throughput = 1000.0 / ms
    source_fps = min(240.0, round(throughput * 1.25, 1))
    with h.running(args, work,
                   f'[model]\nname = "{args.model}"\n'
                   f'[source]\nkind = "dir"\npath = "{frames}"\nfps = {source_fps}\nloop = true\n'
                   ) as daemon:
        time.sleep(args.warmup)
        t0, cpu0 = time.time(), daemon.cpu_seconds()
        frames0 = (daemon.stats_since(0) or [{"frames": 0}])[-1]["frames"]
        time.sleep(args.seconds)
        cpu1 = daemon.cpu_seconds()
        window = daemon.stats_since(t0 + 10)  # the fps meter averages over 10 s
        if not window or not daemon.alive():
            sys.exit(f"no stats from the daemon; see {work / 'daemon.log'}")
        last = window[-1]
        e2e = h.median([s["fps"] for s in window])
        processed = last["frames"] - frames0
        print(json.dumps({
            "model": args.model,
            "backbone_median_ms": round(ms, 2),
            "backbone_fps": round(throughput, 2),
            "source_fps": source_fps,
            "e2e_fps": round(e2e, 2),
            "ratio": round(e2e / throughput, 3),
            "inference_ms_p50": round(last["inference_ms_p50"], 2),
            # Share of wall time the inference thread spends on frames, from the daemon's own
            # figures of the same seconds: immune to load that changes between the phases.
            "busy_ratio": round(e2e * last["inference_ms_p50"] / 1000, 3),
            "skipped_frames": last["skipped_frames"],
            "cpu_ms_per_frame": round(1000 * (cpu1 - cpu0) / max(processed, 1), 2),
            "rss_mib": round(daemon.rss_kib() / 1024, 1),
        }))


if __name__ == "__main__":
    main()
