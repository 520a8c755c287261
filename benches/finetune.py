#!/usr/bin/env python3
"""Fine-tuning the backbone's last block against head-only training (issue 21).

WHAT IT MEASURES
  `adaptd bench-finetune` on two image sets, each with a pool to draw labeled samples
  from and a test set never trained on:

  * domain-shifted: Fashion-MNIST (Debian `dataset-fashion-mnist`), 10 classes of 28x28
    greyscale product photos, far from ImageNet. Per class a pool of 60 train-file images
    and 50 test-file images (fixed data seed), written as 32x32 PNGs with a 2-px black
    border (see benches/head_vs_sklearn.py for why).
  * in-domain: crops of the repository's photos (../shared/images: chelsea, coffee,
    rocket, astronaut, camera), 5 classes, 30 pool and 20 test crops each, of random
    position and size. ImageNet-like, so head-only is already near perfect, and the guard
    should keep head-only.

  For each of --seeds seeds, --per-class samples per class are drawn from the pool and split
  by the sample store's rule (20 -> 16 train + 4 holdout); a head is trained head-only, the
  tail (MobileNetV2's final 1x1 conv 320 -> 1280) and head are fine-tuned from it for at most
  --epochs epochs on one core, and both are scored on the test set. Printed: mean test
  accuracy of each, the gain in points, how often the guard deployed the fine-tuned model,
  the fine-tuning time per run and the process's peak resident memory.

HOW TO RUN
  cargo build --release   (or set ADAPTD to a binary)
  python3 benches/finetune.py [--params all|biases] [--seeds 5] [--per-class 20]
"""

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion(root, out, pool, test, seed):
    rng = np.random.default_rng(seed)
    for part, n, split in (("train", pool, "pool"), ("t10k", test, "test")):
        imgs = read_idx(os.path.join(root, f"{part}-images-idx3-ubyte.gz"))
        labs = read_idx(os.path.join(root, f"{part}-labels-idx1-ubyte.gz"))
        for c in range(10):
            d = os.path.join(out, split, f"c{c}")
            os.makedirs(d, exist_ok=True)
            for i in rng.choice(np.flatnonzero(labs == c), n, replace=False):
                p = os.path.join(d, f"{int(i):05d}.png")
                if not os.path.exists(p):
                    canvas = np.zeros((32, 32), dtype=np.uint8)
                    canvas[2:30, 2:30] = imgs[i]
                    Image.fromarray(canvas, mode="L").save(p)


def photos(images, out, pool, test, seed):
    rng = np.random.default_rng(seed)
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "camera.png"):
        img = Image.open(os.path.join(images, name)).convert("RGB")
        w, h = img.size
        label = name.split(".")[0]
        for split, n in (("pool", pool), ("test", test)):
            d = os.path.join(out, split, label)
            os.makedirs(d, exist_ok=True)
            for k in range(n):
                f = rng.uniform(0.5, 0.9)
                cw, ch = int(w * f), int(h * f)
                x, y = int(rng.uniform(0, w - cw)), int(rng.uniform(0, h - ch))
                p = os.path.join(d, f"{k:03d}.png")
                if not os.path.exists(p):
                    img.crop((x, y, x + cw, y + ch)).save(p)


def bench(adaptd, model_dir, data, a):
    cmd = [adaptd, "--model-dir", model_dir, "bench-finetune", "--images", data,
           "--per-class", str(a.per_class), "--seeds", str(a.seeds), "--epochs", str(a.epochs),
           "--params", a.params, "--json"]
    env = dict(os.environ, RAYON_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--images", default=os.path.join(REPO, "..", "shared", "images"))
    p.add_argument("--model-dir", default=os.path.join(REPO, "models"))
    p.add_argument("--work", default="/var/tmp/adaptd-finetune-bench")
    p.add_argument("--params", default="all", choices=["all", "biases"])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--only", choices=["fashion", "photos"])
    a = p.parse_args()
    adaptd = os.environ.get("ADAPTD") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "adaptd")
    if not os.path.exists(adaptd):
        sys.exit(f"{adaptd} missing: cargo build --release, or set ADAPTD")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"{os.cpu_count()} cores; adaptd {adaptd}")
    sets = []
    if a.only in (None, "fashion"):
        if not os.path.exists(os.path.join(a.fashion_dir, "train-images-idx3-ubyte.gz")):
            sys.exit(f"{a.fashion_dir}: apt-get install dataset-fashion-mnist")
        d = os.path.join(a.work, "fashion")
        fashion(a.fashion_dir, d, 60, 50, 7)
        sets.append(("Fashion-MNIST (domain-shifted)", d))
    if a.only in (None, "photos"):
        d = os.path.join(a.work, "photos")
        photos(a.images, d, 30, 20, 7)
        sets.append(("photo crops (in-domain)", d))
    for name, d in sets:
        r = bench(adaptd, a.model_dir, d, a)
        print(f"\n{name}: {r['classes']} classes x {a.per_class}, {a.seeds} seeds, "
              f"params {r['params']}, lr_ratio {r['lr_ratio']}, epochs <= {r['epochs_max']}")
        print(f"  head-only accuracy   {100 * r['head_only_accuracy']:.1f} %")
        print(f"  fine-tuned accuracy  {100 * r['finetuned_accuracy']:.1f} % "
              f"({r['gain_points']:+.1f} points)")
        print(f"  served (guard)       {100 * r['served_accuracy']:.1f} %, fine-tuned deployed "
              f"in {r['guard_deployed']} of {a.seeds}")
        print(f"  fine-tuning          {r['finetune_seconds']:.1f} s per run (head-only "
              f"{r['head_ms']:.0f} ms), peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"({r['peak_rss_before_training_mib']:.0f} MiB before training), "
              f"estimate {r['runs'][0]['memory_estimate_mib']:.1f} MiB")
        for run in r["runs"]:
            print(f"    seed {run['seed']}: {100 * run['head_only_accuracy']:.1f} -> "
                  f"{100 * run['finetuned_accuracy']:.1f} %, held-out F1 "
                  f"{run['head_only_holdout_f1']:.3f} -> {run['finetuned_holdout_f1']:.3f}, "
                  f"{run['finetune_s']:.1f} s, best epoch {run['best_epoch']}/{run['epochs']}")


if __name__ == "__main__":
    main()
