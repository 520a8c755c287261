#!/usr/bin/env python3
"""Soak test of `adaptd run`: resident memory over 30 minutes or more (not part of CI).

The daemon replays the photos of a folder (looping) through a detector with sub-labels or a
classifier, while this script keeps it busy the way a household does: a labeled sample over
MQTT every 20 s, a `train` command every 5 minutes (both adjustable) (so heads are trained, deployed and
swapped), a `snapshot` every minute and a `status` every 10 s. Resident memory (VmRSS) is read
every 30 s; after `--settle` minutes (default 3: the models, the allocator's arenas, the frame
ring and the caches have filled), the verdict compares the median reading of the rest of the
run's first half with that of its second half (single readings swing with the allocator).

With a detector (`--model nanodet-m`: sub-labels by mobilenetv2 on `person`) every photo of the
replay is a new scene, so objects start and end all the time: tracked objects, events in
SQLite, snapshots on disk and the frame ring all turn over. The stores get small bounds
(`--max-events`, `--snapshot-mb`, `--ring-mb`) so they reach them within minutes, and every
row also reads the event store's row count and the snapshot folder's size; the verdict then
also requires both to stay within their bounds.

    benches/soak.py [--minutes 30] [--model mobilenetv2] [--fps 5] [--adaptd target/release/adaptd]

Prints a table of (minute, RSS MiB, frames, fps[, events, snapshot MiB]) and one JSON summary
line. Exits 1 if the daemon died, RSS grew by more than --tolerance (default 10 %) after the
first minute, or a store grew past its bound.
"""

import json
import shutil
import sqlite3
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
    ap.add_argument("--settle", type=float, default=3.0,
                    help="minutes before the reference reading (the frame ring and the first "
                         "heads take a few minutes to reach their size)")
    ap.add_argument("--train-every", type=float, default=300.0, help="seconds between `train` commands")
    ap.add_argument("--sample-every", type=float, default=20.0, help="seconds between samples")
    ap.add_argument("--max-per-label", type=int, default=40,
                    help="[samples].max_per_label: with a small cap the store reaches its steady "
                         "state (each new sample evicts the oldest) during the run")
    ap.add_argument("--max-events", type=int, default=40, help="[events].max_events (detectors)")
    ap.add_argument("--snapshot-mb", type=int, default=2, help="[snapshots].max_mb (detectors)")
    ap.add_argument("--ring-mb", type=int, default=16, help="[frames].max_mb (detectors)")
    ap.add_argument("--repeat", type=int, default=16,
                    help="frames per photo (detectors): each photo stays on screen long enough "
                         "for its objects to be confirmed and announced")
    args = ap.parse_args()

    work = Path(h.workdir())
    frames, photos = h.frames_dir(args.images, work / "frames")
    detector = args.model in ("nanodet-m",)
    if detector:
        for p in photos:
            for k in range(1, args.repeat):
                shutil.copy(frames / p.name, frames / f"{p.stem}_{k:02d}{p.suffix}")
    model = f'[model]\nname = "{args.model}"\n'
    if detector:
        # max_lost_s under a photo's time on screen: each photo's objects end before the next
        # photo's begin, so every photo makes events and snapshots.
        model += ('sublabel_model = "mobilenetv2"\n[detect]\nsublabel_classes = ["person"]\n'
                  f'[events]\nmax_events = {args.max_events}\n'
                  f'[snapshots]\nmax_mb = {args.snapshot_mb}\n'
                  f'[frames]\nmax_mb = {args.ring_mb}\n'
                  '[track]\nmax_lost_s = 0.5\nmax_occluded_s = 0.5\n')
    broker = h.Broker(work)
    daemon = h.Daemon(
        args.adaptd, args.model_dir, work,
        model + f'[source]\nkind = "dir"\npath = "{frames}"\nfps = {args.fps}\nloop = true\n'
        f'[samples]\nmax_per_label = {args.max_per_label}\n',
        broker.port)
    state = work / "state"
    start = time.time()
    end = start + args.minutes * 60
    rows, rss_settled = [], None
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
                if rss_settled is None and minute >= args.settle:
                    rss_settled = rss
                events, snap_mib = (event_rows(state), snapshot_mib(state)) if detector else (0, 0)
                rows.append((minute, rss, st.get("frames"), st.get("fps"), events, snap_mib))
                print(f"{minute:6.1f} min  {rss:7.1f} MiB  frames {st.get('frames')}  "
                      f"fps {st.get('fps', 0):.2f}  head v{st.get('head_version')}"
                      + (f"  events {events}  snapshots {snap_mib:.2f} MiB" if detector else ""),
                      flush=True)
                next_rss += 30
            time.sleep(0.2)
        rss_end = daemon.rss_kib() / 1024
        last = (daemon.stats_since(0) or [{}])[-1]
    finally:
        daemon.stop()
        broker.stop()
    # The allocator gives memory back in steps, so single readings swing by 10-20 MB: growth
    # compares the median of the settled readings' first half with that of their second half.
    settled = [r[1] for r in rows if r[0] >= args.settle]
    half = len(settled) // 2
    first, second = (h.median(settled[:half]), h.median(settled[half:])) if half else (0, 0)
    growth = (second - first) / first if first else float("nan")
    summary = {
        "model": args.model, "minutes": args.minutes, "fps": args.fps,
        "settle_min": args.settle, "rss_mib_settled": round(rss_settled or 0, 1),
        "rss_mib_median_first_half": round(first, 1), "rss_mib_median_second_half": round(second, 1),
        "rss_mib_end": round(rss_end, 1),
        "rss_mib_max": round(max(r[1] for r in rows), 1),
        "growth": round(growth, 4), "frames": last.get("frames"),
        "head_version": last.get("head_version"), "samples": sum(last.get("samples", {}).values()),
    }
    within = growth <= args.tolerance
    if detector:
        summary.update({
            "events_max": max(r[4] for r in rows), "events_bound": args.max_events,
            "snapshot_mib_max": round(max(r[5] for r in rows), 2),
            "snapshot_mib_bound": args.snapshot_mb,
        })
        within = (within and summary["events_max"] <= args.max_events
                  and summary["snapshot_mib_max"] <= args.snapshot_mb)
    print(json.dumps(summary))
    sys.exit(0 if within else 1)


def event_rows(state):
    """Rows of the daemon's event store (read-only; WAL lets a reader in while it writes)."""
    path = state / "events.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as c:
        return c.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def snapshot_mib(state):
    """Bytes of every file under the snapshot folder, in MiB."""
    root = state / "snapshots"
    if not root.exists():
        return 0.0
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20


if __name__ == "__main__":
    main()
