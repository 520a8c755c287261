#!/usr/bin/env python3
"""Quality and speed of adaptd's on-device head trainer against scikit-learn.

WHAT IT MEASURES
  adaptd trains only a small classifier head on frozen backbone embeddings
  (MobileNetV2, 1280-d).  This script gives `adaptd bench-head` and
  scikit-learn EXACTLY the same embedding arrays and compares

  * few-shot quality: for n = 5, 10, 20 labeled samples per class (10 classes),
    over --draws random draws of which n of a fixed pool of 20 candidates per
    class are the labeled ones, the test accuracy (500 test images, 50 per
    class) of
      - ours:      `adaptd bench-head` (softmax head, default TrainConfig),
                   trained on the train split and early-stopped on the holdout
                   split, the split made with the sample store's rule (per
                   label, a new sample goes to holdout when that brings the
                   label's holdout count up to max(1, floor(n*0.2)) capped at
                   n-1, so 5 -> 1 holdout, 10 -> 2, 20 -> 4);
      - sk_all:    make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
                   fitted on train + holdout, i.e. ALL n labeled samples.  This
                   is the reference and the stronger baseline: our trainer does
                   not fit weights on the holdout samples (it only uses them for
                   early stopping and threshold calibration);
      - sk_train:  the same pipeline fitted on the train split only (the same
                   samples our trainer fits weights on), for fairness;
    with mean and standard deviation over the draws (at n = 20 every draw
    labels the whole pool, so the draws differ only in which 4 per class are
    holdout and in our trainer's seed, and sk_all is the same every time),
    the paired difference ours - sk_all in accuracy points, and the training
    times (ours: the `train_ms` that bench-head measures around the training
    call; sklearn: time.perf_counter around `.fit` only) and their ratio.
    For information the MLP head (`--head mlp`) is also run at n = 20.

  * speed: 200 samples per class (2,000 x 1280 x 10; 1,600 train + 400 holdout
    by the store's rule) -- our train_ms against sklearn's fit time on the same
    arrays (best and median of --speed-repeats runs each), plus both test
    accuracies.  Both single-threaded: this script sets OMP_NUM_THREADS=1,
    OPENBLAS_NUM_THREADS=1, MKL_NUM_THREADS=1 before numpy is imported (and
    checks with threadpoolctl when it is installed); adaptd's trainer is
    single-threaded.

DATA
  Fashion-MNIST from Debian's `dataset-fashion-mnist` package
  (/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz,
  override with --fashion-dir): real 28x28 greyscale product photos, 10 classes.
  Per class, with a fixed data seed (--data-seed): a pool of 20 candidates and
  200 speed-case samples from the train file (disjoint), and 50 test images
  from the t10k file.  2,700 images in all.

  Images are written as 32x32 greyscale PNGs: the 28x28 photo with a 2-pixel
  black border (Fashion-MNIST's background is 0, so the border is invisible).
  Why: adaptd resizes itself (MobileNetV2's manifest: shorter side to 256, then
  the centre 224x224, torchvision's eval transform), and that crop keeps
  224/256 = 7/8 of each side.  A bare 28x28 image would lose 1.75 px on every
  side -- sleeves, shoe tips and bag handles that touch the frame; a 32x32
  image loses exactly the 2-px border and the network sees the whole 28x28
  photo.  No upscaling is done here, so the resampling is adaptd's own (the
  one the product uses).  Greyscale PNGs are decoded to RGB by adaptd.

HOW TO RUN
  From the repository root, after a release build (`cargo build --release`):

    python3 benches/head_vs_sklearn.py \
        --adaptd /work/target/release/adaptd --model-dir models \
        --work /tmp/head_vs_sklearn --out /tmp/head_vs_sklearn.json

  The embeddings are cached in --work (embeddings_*.npy, keyed by the image
  list, the adaptd binary and the model directory); --force re-writes the images and re-embeds.  Embedding takes about a
  minute (2,700 images at 15-25 ms each, in three `adaptd embed` calls); the
  trainings take a few more.

NEEDS
  Python 3 with numpy, Pillow and scikit-learn (threadpoolctl optional); an
  adaptd binary with the `embed` and `bench-head` subcommands; the mobilenetv2
  model in --model-dir (`models/fetch`); the Fashion-MNIST files above.

OUTPUT
  A table on stdout; with --out FILE the same figures (and every individual
  run) as JSON.  Exit status 0, or 1 on error.
"""

import os

# Single-threaded BLAS/OpenMP for scikit-learn: must be set before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
import sklearn  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
POOL_PER_CLASS = 20
TEST_PER_CLASS = 50
SPEED_PER_CLASS = 200
SHOTS = (5, 10, 20)
HOLDOUT_FRACTION = 0.2


def fail(msg):
    print(f"head_vs_sklearn: error: {msg}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------- data

def read_idx(path):
    """An idx file (gzip'ed) as a numpy array (uint8 images [n, 28, 28] or labels [n])."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        fail(f"{path}: not an unsigned-byte idx file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        fail(f"{path}: {arr.size} bytes of data for shape {dims}")
    return arr.reshape(dims)


def select(labels, per_class_counts, rng):
    """Per class, disjoint random index lists of the given sizes (in file order of the draw)."""
    out = {name: [] for name in per_class_counts}
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(labels == c)
        total = sum(per_class_counts.values())
        if idx.size < total:
            fail(f"class {c} has only {idx.size} images, {total} needed")
        chosen = rng.choice(idx, size=total, replace=False)
        start = 0
        for name, k in per_class_counts.items():
            out[name].append(np.sort(chosen[start:start + k]))
            start += k
    return out  # name -> [array of indices per class]


def write_pngs(images, indices_per_class, directory, prefix):
    """32x32 greyscale PNGs (2-px black border); returns (paths, labels) in class order."""
    os.makedirs(directory, exist_ok=True)
    paths, ys = [], []
    for c, idx in enumerate(indices_per_class):
        for i in idx:
            path = os.path.join(directory, f"{prefix}_c{c}_{int(i):05d}.png")
            if not os.path.exists(path):
                canvas = np.zeros((32, 32), dtype=np.uint8)
                canvas[2:30, 2:30] = images[i]
                Image.fromarray(canvas, mode="L").save(path)
            paths.append(path)
            ys.append(c)
    return paths, np.asarray(ys, dtype=np.int64)


def embed(adaptd, model_dir, paths, out, force):
    """Embeds `paths` in one `adaptd embed` call, cached by the files, binary and model."""
    st = os.stat(adaptd)
    ident = [os.path.realpath(adaptd), str(st.st_size), str(st.st_mtime_ns),
             os.path.realpath(model_dir), *paths]
    key = hashlib.sha256("\n".join(ident).encode()).hexdigest()[:16]
    stamp = out + ".key"
    if not force and os.path.exists(out) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read().strip() == key:
                x = np.load(out)
                if x.shape[0] == len(paths):
                    return x, None
    cmd = [adaptd, "--model-dir", model_dir, "embed", "--model", "mobilenetv2",
           "--out", out, *paths]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        fail(f"adaptd embed exited with {r.returncode}: {r.stderr.strip()[-2000:]}")
    x = np.load(out)
    if x.shape != (len(paths), 1280) or x.dtype != np.float32:
        fail(f"{out}: expected float32 [{len(paths)}, 1280], got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        fail(f"{out}: non-finite embeddings")
    with open(stamp, "w") as f:
        f.write(key + "\n")
    return x, seconds


# --------------------------------------------------------------------------- splits

def holdout_target(n, fraction=HOLDOUT_FRACTION):
    """src/store/policy.rs holdout_target: max(1, floor(n*f)) capped at n-1, 0 below 2."""
    if n < 2:
        return 0
    return min(max(int(np.floor(n * fraction + 1e-9)), 1), n - 1)


def store_split(order):
    """Split of samples added one by one in `order` (one label): (train, holdout) lists.

    A new sample is holdout exactly when that brings the label's holdout count up to
    holdout_target(n), n counting the new sample (src/store/policy.rs split_for_next)."""
    train, holdout = [], []
    for s in order:
        if len(holdout) < holdout_target(len(train) + len(holdout) + 1):
            holdout.append(s)
        else:
            train.append(s)
    return train, holdout


def split_rows(labels, rng):
    """Per class, the rows of `labels` in a random insertion order, split by the store rule."""
    tr, ho = [], []
    for c in range(len(CLASSES)):
        rows = np.flatnonzero(labels == c)
        t, h = store_split(list(rng.permutation(rows)))
        tr += t
        ho += h
    return np.asarray(tr), np.asarray(ho)


# --------------------------------------------------------------------------- trainers

def save_npy(directory, name, arr):
    path = os.path.join(directory, name)
    np.save(path, arr)
    return path


def run_ours(adaptd, tmp, xtr, ytr, xho, yho, xte, yte, head, seed):
    args = [adaptd, "bench-head",
            "--train", save_npy(tmp, "xtr.npy", xtr.astype(np.float32)),
            "--train-y", save_npy(tmp, "ytr.npy", ytr.astype(np.float32)),
            "--test", save_npy(tmp, "xte.npy", xte.astype(np.float32)),
            "--test-y", save_npy(tmp, "yte.npy", yte.astype(np.float32)),
            "--head", head, "--seed", str(seed)]
    # Extra trainer overrides for tuning experiments, e.g. ADAPTD_HEAD_ARGS="--c 1".
    args += os.environ.get("ADAPTD_HEAD_ARGS", "").split()
    if xho is not None and len(xho):
        args += ["--holdout", save_npy(tmp, "xho.npy", xho.astype(np.float32)),
                 "--holdout-y", save_npy(tmp, "yho.npy", yho.astype(np.float32))]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"adaptd bench-head exited with {r.returncode}: {r.stderr.strip()[-2000:]}")
    lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        fail(f"adaptd bench-head printed no JSON: {r.stdout!r} {r.stderr!r}")
    res = json.loads(lines[-1])
    # accuracy as a percentage for the tables (bench-head reports a fraction)
    res["accuracy_pct"] = 100.0 * res["accuracy"]
    return res


def run_sklearn(x, y, xte, yte):
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        model.fit(x, y)
        fit_ms = (time.perf_counter() - t0) * 1e3
    acc = float((model.predict(xte) == yte).mean())
    lr = model[-1]
    return {
        "accuracy": acc,
        "accuracy_pct": 100.0 * acc,
        "fit_ms": fit_ms,
        "n_iter": int(np.max(lr.n_iter_)),
        "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
        "n_fit": int(len(y)),
    }


def mean_std(values):
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


# --------------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--adaptd", default="/work/target/release/adaptd")
    p.add_argument("--model-dir", default="models")
    p.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "head_vs_sklearn"))
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--draws", type=int, default=5, help="random draws per n")
    p.add_argument("--data-seed", type=int, default=20240601)
    p.add_argument("--speed-repeats", type=int, default=3)
    p.add_argument("--force", action="store_true", help="re-write images and re-embed")
    a = p.parse_args()

    if not os.access(a.adaptd, os.X_OK):
        fail(f"{a.adaptd}: no executable adaptd binary (build with cargo build --release)")
    for part in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        if not os.path.exists(os.path.join(a.fashion_dir, f"{part}-ubyte.gz")):
            fail(f"{a.fashion_dir}/{part}-ubyte.gz missing (apt install dataset-fashion-mnist)")

    blas = None
    try:
        from threadpoolctl import threadpool_info
        blas = [(i.get("internal_api"), i.get("num_threads")) for i in threadpool_info()]
        if any(n != 1 for _, n in blas):
            print(f"warning: thread pools not single-threaded: {blas}", file=sys.stderr)
    except ImportError:
        pass

    # ---- images
    rng = np.random.default_rng(a.data_seed)
    tr_img = read_idx(os.path.join(a.fashion_dir, "train-images-idx3-ubyte.gz"))
    tr_lab = read_idx(os.path.join(a.fashion_dir, "train-labels-idx1-ubyte.gz"))
    te_img = read_idx(os.path.join(a.fashion_dir, "t10k-images-idx3-ubyte.gz"))
    te_lab = read_idx(os.path.join(a.fashion_dir, "t10k-labels-idx1-ubyte.gz"))
    sel_tr = select(tr_lab, {"pool": POOL_PER_CLASS, "speed": SPEED_PER_CLASS}, rng)
    sel_te = select(te_lab, {"test": TEST_PER_CLASS}, rng)
    img_dir = os.path.join(a.work, "images")
    if a.force and os.path.isdir(img_dir):
        for f in os.listdir(img_dir):
            os.remove(os.path.join(img_dir, f))
    pool_paths, y_pool = write_pngs(tr_img, sel_tr["pool"], img_dir, "pool")
    speed_paths, y_speed = write_pngs(tr_img, sel_tr["speed"], img_dir, "speed")
    test_paths, y_test = write_pngs(te_img, sel_te["test"], img_dir, "test")

    # ---- embeddings (three adaptd calls)
    embed_s = {}
    x_pool, embed_s["pool"] = embed(a.adaptd, a.model_dir, pool_paths,
                                    os.path.join(a.work, "embeddings_pool.npy"), a.force)
    x_test, embed_s["test"] = embed(a.adaptd, a.model_dir, test_paths,
                                    os.path.join(a.work, "embeddings_test.npy"), a.force)
    x_speed, embed_s["speed"] = embed(a.adaptd, a.model_dir, speed_paths,
                                      os.path.join(a.work, "embeddings_speed.npy"), a.force)
    for k, s in embed_s.items():
        if s is not None:
            n = {"pool": len(pool_paths), "test": len(test_paths), "speed": len(speed_paths)}[k]
            print(f"embedded {n} {k} images in {s:.1f} s ({1e3 * s / n:.1f} ms/image, "
                  f"process start and model load included)", file=sys.stderr)

    tmp = os.path.join(a.work, "arrays")
    os.makedirs(tmp, exist_ok=True)
    results = {"few_shot": [], "mlp_n20": [], "speed": {}}
    runs = []

    # ---- few-shot
    for n in SHOTS:
        for d in range(a.draws):
            draw_rng = np.random.default_rng([a.data_seed, n, d])
            # which n of the 20 pool candidates per class are labeled, and in what order
            rows = np.concatenate([draw_rng.choice(np.flatnonzero(y_pool == c), n, replace=False)
                                   for c in range(len(CLASSES))])
            tr, ho = split_rows(y_pool[rows], draw_rng)  # positions in `rows`
            tr_rows, ho_rows = rows[tr], rows[ho]
            assert len(ho_rows) == len(CLASSES) * holdout_target(n)
            seed = 1000 * n + d
            ours = run_ours(a.adaptd, tmp, x_pool[tr_rows], y_pool[tr_rows],
                            x_pool[ho_rows], y_pool[ho_rows], x_test, y_test, "softmax", seed)
            all_rows = np.concatenate([tr_rows, ho_rows])
            sk_all = run_sklearn(x_pool[all_rows], y_pool[all_rows], x_test, y_test)
            sk_tr = run_sklearn(x_pool[tr_rows], y_pool[tr_rows], x_test, y_test)
            run = {"n_per_class": n, "draw": d, "seed": seed,
                   "n_train": int(len(tr_rows)), "n_holdout": int(len(ho_rows)),
                   "ours": ours, "sk_all": sk_all, "sk_train": sk_tr}
            if n == 20:
                run["ours_mlp"] = run_ours(a.adaptd, tmp, x_pool[tr_rows], y_pool[tr_rows],
                                           x_pool[ho_rows], y_pool[ho_rows], x_test, y_test,
                                           "mlp", seed)
            runs.append(run)
            print(f"n={n:2d} draw {d}: ours {ours['accuracy_pct']:5.1f} % "
                  f"({ours['train_ms']:.1f} ms, {ours['epochs']} ep, {ours['stopped_because']}) | "
                  f"sk all {sk_all['accuracy_pct']:5.1f} % ({sk_all['fit_ms']:.1f} ms) | "
                  f"sk train {sk_tr['accuracy_pct']:5.1f} %"
                  + (f" | mlp {run['ours_mlp']['accuracy_pct']:5.1f} %" if n == 20 else ""),
                  file=sys.stderr)

    def summary(rs, key):
        acc = mean_std([r[key]["accuracy_pct"] for r in rs])
        ms = mean_std([r[key].get("train_ms", r[key].get("fit_ms")) for r in rs])
        return {"acc_mean": acc[0], "acc_std": acc[1], "ms_mean": ms[0], "ms_std": ms[1]}

    for n in SHOTS:
        rs = [r for r in runs if r["n_per_class"] == n]
        row = {"n_per_class": n, "n_train": rs[0]["n_train"], "n_holdout": rs[0]["n_holdout"],
               "draws": len(rs),
               "ours": summary(rs, "ours"), "sk_all": summary(rs, "sk_all"),
               "sk_train": summary(rs, "sk_train")}
        diff_all = mean_std([r["ours"]["accuracy_pct"] - r["sk_all"]["accuracy_pct"] for r in rs])
        diff_tr = mean_std([r["ours"]["accuracy_pct"] - r["sk_train"]["accuracy_pct"] for r in rs])
        row["diff_vs_sk_all_pts"] = {"mean": diff_all[0], "std": diff_all[1]}
        row["diff_vs_sk_train_pts"] = {"mean": diff_tr[0], "std": diff_tr[1]}
        row["time_ratio_ours_over_sk_all"] = row["ours"]["ms_mean"] / row["sk_all"]["ms_mean"]
        row["ours_epochs"] = [r["ours"]["epochs"] for r in rs]
        row["ours_stopped_because"] = [r["ours"]["stopped_because"] for r in rs]
        row["sk_all_converged"] = all(r["sk_all"]["converged"] for r in rs)
        row["target_within_1pt"] = diff_all[0] >= -1.0
        if n == 20:
            row["ours_mlp"] = summary(rs, "ours_mlp")
            d = mean_std([r["ours_mlp"]["accuracy_pct"] - r["sk_all"]["accuracy_pct"] for r in rs])
            row["mlp_diff_vs_sk_all_pts"] = {"mean": d[0], "std": d[1]}
            row["ours_mlp_epochs"] = [r["ours_mlp"]["epochs"] for r in rs]
            row["ours_mlp_stopped_because"] = [r["ours_mlp"]["stopped_because"] for r in rs]
        results["few_shot"].append(row)

    # ---- speed: 200 per class, store split 160 + 40 per class
    sp_rng = np.random.default_rng([a.data_seed, 2000])
    tr, ho = split_rows(y_speed, sp_rng)
    assert len(tr) == 1600 and len(ho) == 400, (len(tr), len(ho))
    ours_runs, sk_runs = [], []
    for rep in range(a.speed_repeats):
        ours_runs.append(run_ours(a.adaptd, tmp, x_speed[tr], y_speed[tr], x_speed[ho],
                                  y_speed[ho], x_test, y_test, "softmax", 2000 + rep))
        sk_runs.append(run_sklearn(x_speed[np.concatenate([tr, ho])],
                                   y_speed[np.concatenate([tr, ho])], x_test, y_test))
        print(f"speed rep {rep}: ours {ours_runs[-1]['train_ms']:.1f} ms "
              f"({ours_runs[-1]['epochs']} ep, {ours_runs[-1]['stopped_because']}, "
              f"{ours_runs[-1]['accuracy_pct']:.1f} %) | sklearn {sk_runs[-1]['fit_ms']:.1f} ms "
              f"({sk_runs[-1]['n_iter']} it, {sk_runs[-1]['accuracy_pct']:.1f} %)", file=sys.stderr)
    sk_tr_speed = run_sklearn(x_speed[tr], y_speed[tr], x_test, y_test)
    o_ms = [r["train_ms"] for r in ours_runs]
    s_ms = [r["fit_ms"] for r in sk_runs]
    results["speed"] = {
        "n_train": 1600, "n_holdout": 400, "dim": int(x_speed.shape[1]), "classes": 10,
        "repeats": a.speed_repeats,
        "ours_ms_min": min(o_ms), "ours_ms_median": float(np.median(o_ms)),
        "sk_all_ms_min": min(s_ms), "sk_all_ms_median": float(np.median(s_ms)),
        "time_ratio_median": float(np.median(o_ms) / np.median(s_ms)),
        "ours_acc_pct": mean_std([r["accuracy_pct"] for r in ours_runs])[0],
        "sk_all_acc_pct": sk_runs[0]["accuracy_pct"],
        "sk_train_acc_pct": sk_tr_speed["accuracy_pct"],
        "sk_train_fit_ms": sk_tr_speed["fit_ms"],
        "sk_n_iter": sk_runs[0]["n_iter"], "sk_converged": sk_runs[0]["converged"],
        "ours_epochs": [r["epochs"] for r in ours_runs],
        "ours_stopped_because": [r["stopped_because"] for r in ours_runs],
        "ours_runs": ours_runs, "sk_runs": sk_runs,
    }

    # ---- table
    print()
    print("Few-shot quality: test accuracy (%) on 500 Fashion-MNIST test images, "
          f"mean ± std over {a.draws} draws; times in ms")
    hdr = (f"{'n/class':>7} {'train+ho':>8} | {'ours':>12} {'sk all':>12} {'Δ pts':>11} "
           f"{'sk train':>12} | {'ours ms':>8} {'sk ms':>8} {'ratio':>6} | epochs / stop")
    print(hdr)
    print("-" * len(hdr))
    for row in results["few_shot"]:
        o, s, t = row["ours"], row["sk_all"], row["sk_train"]
        d = row["diff_vs_sk_all_pts"]
        stops = sorted(set(row["ours_stopped_because"]))
        print(f"{row['n_per_class']:>7} {row['n_train']:>4}+{row['n_holdout']:<3} | "
              f"{o['acc_mean']:5.1f} ± {o['acc_std']:4.1f} {s['acc_mean']:5.1f} ± {s['acc_std']:4.1f} "
              f"{d['mean']:+5.1f} ± {d['std']:3.1f} {t['acc_mean']:5.1f} ± {t['acc_std']:4.1f} | "
              f"{o['ms_mean']:8.1f} {s['ms_mean']:8.1f} {row['time_ratio_ours_over_sk_all']:6.2f} | "
              f"{row['ours_epochs']} {','.join(map(str, stops))}")
    r20 = results["few_shot"][-1]
    m = r20["ours_mlp"]
    print(f"MLP head at n=20 (information): {m['acc_mean']:.1f} ± {m['acc_std']:.1f} % "
          f"(Δ vs sk all {r20['mlp_diff_vs_sk_all_pts']['mean']:+.1f} ± "
          f"{r20['mlp_diff_vs_sk_all_pts']['std']:.1f} pts), {m['ms_mean']:.1f} ms, "
          f"epochs {r20['ours_mlp_epochs']}")
    sp = results["speed"]
    print()
    print(f"Speed: {sp['n_train']} train + {sp['n_holdout']} holdout x {sp['dim']} dims x "
          f"{sp['classes']} classes, single-threaded, {sp['repeats']} runs each")
    print(f"  ours    : median {sp['ours_ms_median']:8.1f} ms (best {sp['ours_ms_min']:.1f}), "
          f"test acc {sp['ours_acc_pct']:.1f} %, epochs {sp['ours_epochs']} "
          f"({','.join(sorted(set(map(str, sp['ours_stopped_because']))))})")
    print(f"  sklearn : median {sp['sk_all_ms_median']:8.1f} ms (best {sp['sk_all_ms_min']:.1f}), "
          f"test acc {sp['sk_all_acc_pct']:.1f} % (train+holdout; {sp['sk_n_iter']} lbfgs iterations"
          f"{'' if sp['sk_converged'] else ', NOT converged'}); on train only "
          f"{sp['sk_train_acc_pct']:.1f} %")
    print(f"  ratio ours/sklearn (medians): {sp['time_ratio_median']:.3f}")

    if a.out:
        meta = {
            "adaptd": a.adaptd, "model": "mobilenetv2", "draws": a.draws,
            "data_seed": a.data_seed, "python": platform.python_version(),
            "numpy": np.__version__, "sklearn": sklearn.__version__,
            "thread_pools": blas, "nproc": os.cpu_count(),
            "embed_seconds": embed_s,
            "images": "32x32 greyscale PNG, 28x28 Fashion-MNIST photo + 2-px black border",
        }
        with open(a.out, "w") as f:
            json.dump({"meta": meta, "summary": results, "runs": runs}, f, indent=1)
        print(f"\nwrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
