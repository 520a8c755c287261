#!/usr/bin/env python3
"""Soak test of `adaptd run`: resident memory over 30 minutes or more (not part of CI).

The daemon replays the photos of a folder (looping) through a detector with sub-labels or a
classifier, while this script keeps it busy the way a household does: a labeled sample over
MQTT every 20 s, a `train` command every 5 minutes (both adjustable) (so heads are trained, deployed and
swapped), a `snapshot` every minute and a `status` every 10 s. Resident memory (VmRSS) is read
every 30 s; the verdict compares the end with the value at one minute, when the models, the
allocator's arenas and the caches have settled.

    benches/soak.py [--minutes 30] [--model mobilenetv2] [--fps 5] [--adaptd target/release/adaptd]

Prints a table of (minute, RSS MiB, frames, fps) and one JSON summary line. Exits 1 if the
daemon died or RSS grew by more than --tolerance (default 10 %) after the first minute.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import daemon_harness as h  # noqa: E402


def main():
    ap = h.arg_parser(__doc__)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--train-every", type=float, default=300.0, help="seconds between `train` commands")
    ap.add_argument("--sample-every", type=float, default=20.0, help="seconds between samples")
    ap.add_argument("--max-per-label", type=int, default=40,
                    help="[samples].max_per_label: with a small cap the store reaches its steady "
                         "state (each new sample evicts the oldest) during the run")
    args = ap.parse_args()

    work = Path(h.workdir())
    frames, photos = h.frames_dir(args.images, work / "frames")
    model = f'[model]\nname = "{args.model}"\n'
    if args.model in ("nanodet-m",):
        model += 'sublabel_model = "mobilenetv2"\n'
    broker = h.Broker(work)
    daemon = h.Daemon(
        args.adaptd, args.model_dir, work,
        model + f'[source]\nkind = "dir"\npath = "{frames}"\nfps = {args.fps}\nloop = true\n'
        f'[samples]\nmax_per_label = {args.max_per_label}\n',
        broker.port)
    start = time.time()
    end = start + args.minutes * 60
    rows, rss_1min = [], None
    next_sample = next_train = next_snap = next_status = next_rss = start + 5
    i = 0
    try:
        while time.time() < end:
            now = time.time()
            if not daemon.alive():
                sys.exit(f"the daemon died after {(now - start) / 60:.1f} min; "
                         f"see {work / 'daemon.log'}")
            if now >= next_sample:
                photo = photos[i % len(photos)]
                daemon.publish(f"samples/{photo.stem.lower()}", file=photo)
                i += 1
                next_sample += args.sample_every
            if now >= next_train:
                if now > start + 60:
                    daemon.publish("cmd/train", '{"force": true}')
                next_train += args.train_every
            if now >= next_snap:
                daemon.publish("cmd/snapshot")
                next_snap += 60
            if now >= next_status:
                daemon.publish("cmd/status")
                next_status += 10
            if now >= next_rss:
                minute = (now - start) / 60
                st = (daemon.stats_since(0) or [{}])[-1]
                rss = daemon.rss_kib() / 1024
                if rss_1min is None and minute >= 1.0:
                    rss_1min = rss
                rows.append((minute, rss, st.get("frames"), st.get("fps")))
                print(f"{minute:6.1f} min  {rss:7.1f} MiB  frames {st.get('frames')}  "
                      f"fps {st.get('fps', 0):.2f}  head v{st.get('head_version')}", flush=True)
                next_rss += 30
            time.sleep(0.2)
        rss_end = daemon.rss_kib() / 1024
        last = (daemon.stats_since(0) or [{}])[-1]
    finally:
        daemon.stop()
        broker.stop()
    growth = (rss_end - rss_1min) / rss_1min if rss_1min else float("nan")
    summary = {
        "model": args.model, "minutes": args.minutes, "fps": args.fps,
        "rss_mib_1min": round(rss_1min or 0, 1), "rss_mib_end": round(rss_end, 1),
        "rss_mib_max": round(max(r[1] for r in rows), 1),
        "growth": round(growth, 4), "frames": last.get("frames"),
        "head_version": last.get("head_version"), "samples": sum(last.get("samples", {}).values()),
    }
    print(json.dumps(summary))
    sys.exit(0 if growth <= args.tolerance else 1)


if __name__ == "__main__":
    main()
