#!/usr/bin/env python3
"""Start-up time of `adaptd run` to READY=1, and the binary's size.

READY=1 is what systemd waits for (Type=notify): the models are loaded and optimised, the
sample store is open, the head is in service and the pipeline runs. The script binds the
notify socket itself (as systemd would), starts the daemon with NOTIFY_SOCKET pointing at it,
and measures from spawn to the READY datagram; median of --runs starts per model.

    benches/startup.py [--adaptd target/release/adaptd] [--runs 5] [--model mobilenetv2 ...]
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import daemon_harness as h  # noqa: E402


def time_to_ready(adaptd, model_dir, work, model, frames, port):
    sock_path = work / "notify.sock"
    if sock_path.exists():
        sock_path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    sub = 'sublabel_model = "mobilenetv2"\n' if model == "nanodet-m" else ""
    config = work / "adaptd.toml"
    config.write_text(
        f'state_dir = "{work / "state"}"\n[model]\nname = "{model}"\n{sub}'
        f'[source]\nkind = "dir"\npath = "{frames}"\nfps = 1.0\nloop = true\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\ndevice_id = "startup"\n')
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path))
    t0 = time.perf_counter()
    proc = subprocess.Popen([adaptd, "--model-dir", str(model_dir), "--config", str(config),
                             "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while True:
            msg = sock.recv(4096).decode()
            if "READY=1" in msg.splitlines():
                return time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        sock.close()


def main():
    ap = h.arg_parser(__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["mobilenetv2", "mobilenetv2-int8",
                                                      "efficientnet-lite0", "nanodet-m"])
    args = ap.parse_args()
    work = Path(h.workdir())
    frames, _ = h.frames_dir(args.images, work / "frames", n=2)
    # No broker needed: the link connects in the background; READY does not wait for it.
    port = h.free_port()
    out = {"binary": args.adaptd, "binary_mib": round(os.path.getsize(args.adaptd) / 2**20, 2)}
    for model in args.models:
        times = [time_to_ready(args.adaptd, args.model_dir, work, model, frames, port)
                 for _ in range(args.runs)]
        out[model] = {"ready_ms_median": round(1000 * h.median(times), 1),
                      "ready_ms_max": round(1000 * max(times), 1)}
        print(f"{model}: {out[model]}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
