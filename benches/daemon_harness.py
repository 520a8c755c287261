"""Shared plumbing for the daemon benchmarks (e2e_fps.py, soak.py): a broker, a daemon
process, its `stats` stream and its resident memory.

Only the Python standard library, Mosquitto and its command-line tools (Debian:
`apt-get install mosquitto mosquitto-clients`) are needed.
"""

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEVICE = "bench"
BASE = f"adaptd/{DEVICE}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Broker:
    """Mosquitto on a free loopback port, or None when it is not installed."""

    def __init__(self, workdir):
        self.port = free_port()
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        conf = Path(workdir) / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_port(self.port):
            self.stop()
            raise RuntimeError("mosquitto did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Daemon:
    """`adaptd run` on a config written from `sections` (TOML text), with a `stats` reader."""

    def __init__(self, adaptd, model_dir, workdir, sections, port):
        self.workdir = Path(workdir)
        self.port = port
        config = self.workdir / "adaptd.toml"
        config.write_text(
            f'state_dir = "{self.workdir / "state"}"\n{sections}\n'
            f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\ndevice_id = "{DEVICE}"\n'
            "stats_interval_secs = 2\nmax_packet_bytes = 4194304\n")
        self.log = open(self.workdir / "daemon.log", "wb")
        self.proc = subprocess.Popen(
            [adaptd, "--model-dir", str(model_dir), "--config", str(config), "run"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.stats = []
        self.lock = threading.Lock()
        self.sub = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", f"{BASE}/stats"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read_stats, daemon=True).start()

    def _read_stats(self):
        for line in self.sub.stdout:
            try:
                s = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.stats.append((time.time(), s))

    def stats_since(self, t0, camera="default"):
        """The `stats` messages received since `t0`, each with `camera`'s own figures
        (`stats.cameras.<camera>`: fps, frames, skipped_frames...) laid over the device's
        (uptime, samples, mqtt_*). `camera="default"` is the legacy single `[source]`."""
        with self.lock:
            return [{**s, **(s.get("cameras") or {}).get(camera, {})}
                    for (t, s) in self.stats if t >= t0]

    def rss_kib(self, field="VmRSS"):
        """Resident set size of the daemon (VmRSS; VmHWM for its peak), in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return None

    def cpu_seconds(self):
        """User + system CPU time of the daemon so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick

    def publish(self, topic, payload=None, file=None):
        cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-q", "1",
               "-t", f"{BASE}/{topic}"]
        cmd += ["-f", str(file)] if file else ["-m", payload or "{}"]
        subprocess.run(cmd, check=True)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.sub.kill()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def running(args, work, sections):
    """A Mosquitto broker and `adaptd run` (args.adaptd, args.model_dir) on a config made of
    `sections`, in `work`; both are stopped on the way out, whatever happened."""
    broker = Broker(work)
    daemon = None
    try:
        daemon = Daemon(args.adaptd, args.model_dir, work, sections, broker.port)
        yield daemon
    finally:
        if daemon:
            daemon.stop()
        broker.stop()


def workdir():
    return tempfile.mkdtemp(prefix="adaptd-bench-")


def frames_dir(images, dest, n=None):
    """Copies the JPEG/PNG photos of `images` into `dest` (the replay folder)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    photos = sorted(p for p in Path(images).iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for p in photos[:n]:
        shutil.copy(p, dest / p.name)
    return dest, photos[:n]


def median(xs):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def arg_parser(doc):
    """The options every daemon benchmark takes: which binary, models, photos and model."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--adaptd", default=str(REPO / "target/release/adaptd"))
    ap.add_argument("--model-dir", default=str(REPO / "models"))
    ap.add_argument("--images", default=str(REPO / "../shared/images"))
    ap.add_argument("--model", default="mobilenetv2")
    return ap
