#!/usr/bin/env python3
"""What live viewers of the web page cost the daemon: CPU and processed fps with 0 and with N
viewers (default 3), interleaved (0, N, 0, N...) in one run so the machine's noise hits both.

A viewer does what the page's Live view does: it holds `GET /api/stream` open (server-sent
events) and, on each `<camera>/detections` message, fetches `/api/cameras/<camera>/latest.jpg`
unless its previous fetch is still in flight. By default the viewers are Python threads (they
cost this machine almost nothing, so the daemon's figures are not disturbed by three browsers
competing for two cores); `--browsers` uses real headless chromium pages instead.

    benches/web_viewers.py [--viewers 3] [--rounds 3] [--seconds 40] [--model nanodet-m]
                           [--fps 5] [--adaptd target/release/adaptd] [--browsers]

Prints one line per phase and a JSON summary: the daemon's CPU (percent of one core) and its
processed fps with and without viewers, their ratios, and the frames the viewers received.
The goal (docs/PERFORMANCE.md): with 3 viewers at most 10 % more CPU and the same fps.
"""

import http.client
import json
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import daemon_harness as h  # noqa: E402


class Viewer(threading.Thread):
    """One page's Live view, in Python."""

    def __init__(self, port, stop):
        super().__init__(daemon=True)
        self.port, self.stop, self.frames, self.messages = port, stop, 0, 0

    def run(self):
        while not self.stop.is_set():
            try:
                self.watch()
            except (OSError, http.client.HTTPException):
                time.sleep(0.5)

    def watch(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", "/api/stream")
        resp = conn.getresponse()
        jpeg = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            line = resp.fp.readline()
            if not line:
                return
            if not line.startswith(b"data: "):
                continue
            self.messages += 1
            msg = json.loads(line[6:])
            topic = msg.get("topic", "")
            if topic.endswith("/detections") and msg["payload"].get("width"):
                camera = topic.split("/")[0]
                jpeg.request("GET", f"/api/cameras/{camera}/latest.jpg")
                r = jpeg.getresponse()
                if r.read() and r.status == 200:
                    self.frames += 1


def browsers(port, n, stop, counts):
    """N real chromium pages on the Live view; counts[0] = frames they loaded."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium",
                              args=["--no-sandbox", "--disable-gpu",
                                    "--disable-background-networking"])
        pages = []
        for _ in range(n):
            page = b.new_context().new_page()
            page.on("response", lambda r: counts.__setitem__(0, counts[0] + 1)
                    if "latest.jpg" in r.url else None)
            page.goto(f"http://127.0.0.1:{port}/#live")
            pages.append(page)
        while not stop.is_set():
            pages[0].wait_for_timeout(200)
        b.close()


def main():
    ap = h.arg_parser(__doc__)
    ap.set_defaults(model="nanodet-m")
    ap.add_argument("--viewers", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--browsers", action="store_true", help="real chromium pages as viewers")
    args = ap.parse_args()

    work = Path(h.workdir())
    frames, _ = h.frames_dir(args.images, work / "frames")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        http_port = s.getsockname()[1]
    sections = (f'[model]\nname = "{args.model}"\n'
                f'[source]\nkind = "dir"\npath = "{frames}"\nfps = {args.fps}\nloop = true\n'
                f'[http]\nlisten = "127.0.0.1:{http_port}"\n')
    results = {0: [], args.viewers: []}
    with h.running(args, work, sections) as daemon:
        if not h.wait_port(http_port, 30):
            sys.exit(f"the web server did not come up; see {work / 'daemon.log'}")
        time.sleep(15)  # models loaded, first frames through, caches warm
        for rnd in range(args.rounds):
            for n in (0, args.viewers):
                stop = threading.Event()
                viewers, counts, runner = [], [0], None
                if n and args.browsers:
                    runner = threading.Thread(target=browsers, args=(http_port, n, stop, counts),
                                              daemon=True)
                    runner.start()
                elif n:
                    viewers = [Viewer(http_port, stop) for _ in range(n)]
                    for v in viewers:
                        v.start()
                time.sleep(3)  # viewers connected
                t0, cpu0 = time.time(), daemon.cpu_seconds()
                s0 = (daemon.stats_since(0) or [{}])[-1].get("frames", 0)
                f0 = sum(v.frames for v in viewers) + counts[0]
                time.sleep(args.seconds)
                t1, cpu1 = time.time(), daemon.cpu_seconds()
                s1 = (daemon.stats_since(0) or [{}])[-1].get("frames", 0)
                f1 = sum(v.frames for v in viewers) + counts[0]
                stop.set()
                if runner:
                    runner.join(timeout=30)
                cpu = 100 * (cpu1 - cpu0) / (t1 - t0)
                fps = (s1 - s0) / (t1 - t0)
                served = (f1 - f0) / (t1 - t0)
                results[n].append((cpu, fps, served))
                print(f"round {rnd + 1} viewers {n}: daemon CPU {cpu:5.1f} %  processed "
                      f"{fps:4.2f} fps  frames served {served:4.2f}/s", flush=True)
                time.sleep(2)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    base, load = results[0], results[args.viewers]
    summary = {
        "model": args.model, "fps": args.fps, "viewers": args.viewers,
        "viewer_kind": "chromium" if args.browsers else "python",
        "cpu_pct_0": round(mean([r[0] for r in base]), 1),
        "cpu_pct_n": round(mean([r[0] for r in load]), 1),
        "fps_0": round(mean([r[1] for r in base]), 2),
        "fps_n": round(mean([r[1] for r in load]), 2),
        "frames_served_per_s": round(mean([r[2] for r in load]), 2),
    }
    summary["cpu_ratio"] = round(summary["cpu_pct_n"] / max(summary["cpu_pct_0"], 1e-9), 3)
    summary["fps_ratio"] = round(summary["fps_n"] / max(summary["fps_0"], 1e-9), 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
