#!/usr/bin/env python3
"""Independent reference values for adaptd's Rust tests.

Builds, with Pillow + numpy only (no torch, no adaptd code), the exact input
tensors that the manifests in models/*.toml describe, runs them through
onnxruntime (CPUExecutionProvider, 1 thread) and writes
tests/reference/reference.json.

Usage:
    python3 tests/reference/make_reference.py [--models DIR] [--images DIR] [--out FILE]

Defaults: --models models (where models/fetch places the files; run
`models/fetch --mirror ../shared/models` first), --images ../shared/images
(relative to the repository root), --out tests/reference/reference.json.

Needs: numpy, Pillow, onnxruntime, onnx (the `onnx` package is only used to add
the embedding tensor as an extra graph output in an in-memory copy of the model).
See README.md next to this file for what every field means.
"""

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

IMAGES = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "camera.png"]
N_SAMPLES = 256

# ---------------------------------------------------------------------------
# Preprocessing (mirrors models/*.toml; written from the manifests, not from adaptd)
# ---------------------------------------------------------------------------

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
HALF = [0.5, 0.5, 0.5]
NANODET_MEAN_BGR = [103.53, 116.28, 123.675]
NANODET_STD_BGR = [57.375, 57.12, 58.395]


def load_rgb(path):
    """Open an image and convert to 8-bit RGB (greyscale 'L' is replicated to 3 channels)."""
    return Image.open(path).convert("RGB")


def resize_short_center_crop(img, resize_short=256, crop=224, resample=Image.BILINEAR):
    """torchvision eval geometry: Resize(resize_short) then CenterCrop(crop).

    torchvision's Resize(int) keeps the aspect ratio: the shorter side becomes
    `resize_short` and the longer side int(resize_short * long / short) (truncated).
    CenterCrop: top = int(round((h - crop) / 2.0)), left likewise.
    Returns an HxWx3 uint8 array.
    """
    w, h = img.size
    if w <= h:
        new_w, new_h = resize_short, int(resize_short * h / w)
    else:
        new_w, new_h = int(resize_short * w / h), resize_short
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample)
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    return np.asarray(img, dtype=np.uint8)


def letterbox_center(img, size=416, pad_value=0, resample=Image.BILINEAR):
    """Letterbox to size x size, image placed at the centre.

    scale = min(size/w, size/h); new size = round(w*scale), round(h*scale)
    (round half away from zero; no .5 case occurs for the test images);
    pad_x = (size - new_w) // 2, pad_y = (size - new_h) // 2; the border is the
    raw pixel value `pad_value` (before normalisation).
    Returns (HxWx3 uint8 array, geometry dict).
    """
    w, h = img.size
    scale = min(size / w, size / h)
    new_w = int(math.floor(w * scale + 0.5))
    new_h = int(math.floor(h * scale + 0.5))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample)
    pad_x = (size - new_w) // 2
    pad_y = (size - new_h) // 2
    canvas = np.full((size, size, 3), pad_value, dtype=np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = np.asarray(img, dtype=np.uint8)
    geom = {"scale": scale, "new_w": new_w, "new_h": new_h, "pad_x": pad_x, "pad_y": pad_y}
    return canvas, geom


def normalise_nchw(hwc_u8, scale, mean, std, bgr=False):
    """uint8 HWC RGB -> float32 [1,3,H,W]; value = (x*scale - mean[c]) / std[c].

    The arithmetic is done in float64 and rounded once to float32, so it is the
    correctly rounded value of the formula (an f32 implementation may differ by
    an ulp or two).  mean/std are given in tensor channel order.
    """
    x = hwc_u8.astype(np.float64)
    if bgr:
        x = x[:, :, ::-1]
    x = x * scale
    x = (x - np.asarray(mean, dtype=np.float64)) / np.asarray(std, dtype=np.float64)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None].astype(np.float32))


def prep_classify(img, mean, std, resize_short=256, crop=224):
    return normalise_nchw(resize_short_center_crop(img, resize_short, crop), 1.0 / 255.0, mean, std)


def prep_nanodet(img):
    canvas, geom = letterbox_center(img, 416, 0)
    return normalise_nchw(canvas, 1.0, NANODET_MEAN_BGR, NANODET_STD_BGR, bgr=True), geom


# ---------------------------------------------------------------------------
# onnxruntime helpers
# ---------------------------------------------------------------------------

def make_session(model_path, extra_outputs=()):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if extra_outputs:
        import onnx

        m = onnx.load(model_path)
        have = {o.name for o in m.graph.output}
        for name in extra_outputs:
            if name not in have:
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        data = m.SerializeToString()
        return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


def run(sess, x):
    name = sess.get_inputs()[0].name
    outs = sess.run(None, {name: x})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def softmax(v):
    v = np.asarray(v, dtype=np.float64)
    e = np.exp(v - v.max())
    return e / e.sum()


def sig7(v):
    return float(f"{float(v):.7g}")


def f32(v):
    # float32 values are exactly representable as JSON doubles; 9 significant
    # digits are enough to round-trip any float32.
    return float(f"{float(np.float32(v)):.9g}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sample_indices(size):
    rng = np.random.default_rng(0)
    return sorted(int(i) for i in rng.choice(size, N_SAMPLES, replace=False))


def tensor_summary(x, idx):
    flat = x.reshape(-1)
    return {
        "shape": list(x.shape),
        "channel_sums": [float(x[0, c].astype(np.float64).sum()) for c in range(x.shape[1])],
        "sample_values": [f32(flat[i]) for i in idx],
    }


# ---------------------------------------------------------------------------

CLASSIFIERS = [
    # (manifest name, file, mean, std, embedding tensor, images with a full embedding)
    ("mobilenetv2", "mobilenetv2_imagenet.onnx", IMAGENET_MEAN, IMAGENET_STD,
     "/Flatten_output_0", {"chelsea.png", "coffee.png"}),
    ("mobilenetv2-int8", "mobilenetv2_imagenet_int8_mixed.onnx", IMAGENET_MEAN, IMAGENET_STD,
     "/Flatten_output_0", {"chelsea.png"}),
    ("efficientnet-lite0", "efficientnet_lite0_imagenet.onnx", HALF, HALF,
     "/Reshape_output_0", {"chelsea.png", "coffee.png"}),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=os.path.join(REPO, "models"))
    ap.add_argument("--images", default=os.path.join(REPO, "..", "shared", "images"))
    ap.add_argument("--out", default=os.path.join(HERE, "reference.json"))
    args = ap.parse_args()

    import onnxruntime as ort

    imagenet_labels = open(os.path.join(args.models, "imagenet_labels.txt")).read().splitlines()
    coco_labels = open(os.path.join(args.models, "coco_labels.txt")).read().splitlines()
    imgs = {n: load_rgb(os.path.join(args.images, n)) for n in IMAGES}

    out = {
        "about": (
            "Independent reference values for adaptd's tests: input tensors built with "
            "Pillow+numpy exactly as models/*.toml describe, model outputs from onnxruntime "
            "(CPUExecutionProvider, 1 thread, ORT_ENABLE_ALL). Generated by "
            "tests/reference/make_reference.py (deterministic: rerunning with the same onnxruntime, "
            "numpy and Pillow versions gives the same file); see tests/reference/README.md."
        ),
        "generator": "tests/reference/make_reference.py",
        "onnxruntime_version": ort.__version__,
        "numpy_version": np.__version__,
        "pillow_version": Image.__version__,
        "resize_filter": "PIL.Image.BILINEAR (Pillow's area-aware bilinear: the filter support widens when downscaling)",
        "sample_indices_rule": "sorted(numpy.random.default_rng(0).choice(tensor_size, 256, replace=False)) over the flattened NCHW input tensor",
        "images": {n: {"sha256": sha256(os.path.join(args.images, n)),
                       "width": imgs[n].size[0], "height": imgs[n].size[1],
                       "mode": Image.open(os.path.join(args.images, n)).mode,
                       # sums of the decoded 8-bit pixels after convert('RGB'), per channel R, G, B:
                       # tells a decoder difference (JPEG!) apart from a resize difference
                       "pixel_sums_rgb": [int(v) for v in np.asarray(imgs[n], dtype=np.int64).sum(axis=(0, 1))]}
                   for n in IMAGES},
        "models": {},
    }

    for name, fname, mean, std, emb, emb_images in CLASSIFIERS:
        path = os.path.join(args.models, fname)
        sess = make_session(path, extra_outputs=[emb])
        idx = sample_indices(1 * 3 * 224 * 224)
        entry = {
            "file": fname,
            "sha256": sha256(path),
            "input": {"name": "input", "geometry": "resize shorter side to 256 (Pillow BILINEAR), centre crop 224",
                      "scale": 1.0 / 255.0, "mean": mean, "std": std, "color": "rgb", "layout": "nchw"},
            "embedding_tensor": emb,
            "sample_indices": idx,
            "images": {},
        }
        for n in IMAGES:
            x = prep_classify(imgs[n], mean, std)
            o = run(sess, x)
            logits = o["logits"][0]
            p = softmax(logits)
            top = np.argsort(-p, kind="stable")[:5]
            e = o[emb].reshape(-1).astype(np.float64)
            rec = {
                "input": tensor_summary(x, idx),
                "top5": [{"index": int(i), "label": imagenet_labels[i], "prob": sig7(p[i]),
                          "logit": sig7(logits[i])} for i in top],
                "logits_sum": float(logits.astype(np.float64).sum()),
                "embedding_dim": int(e.size),
                "embedding_l2": float(np.linalg.norm(e)),
                "embedding_sum": float(e.sum()),
            }
            if n in emb_images:
                rec["embedding"] = [sig7(v) for v in e]
            entry["images"][n] = rec
            print(f"{name:20s} {n:14s} top1 {int(top[0]):4d} {imagenet_labels[top[0]]!r} p={p[top[0]]:.3f}",
                  file=sys.stderr)
        out["models"][name] = entry

    # NanoDet-m: raw outputs only (no decoding, so nothing here depends on a decoder).
    fname = "nanodet_m_416_coco.onnx"
    path = os.path.join(args.models, fname)
    sess = make_session(path)
    idx = sample_indices(1 * 3 * 416 * 416)
    entry = {
        "file": fname,
        "sha256": sha256(path),
        "input": {"name": "input_1:0",
                  "geometry": "letterbox 416 centred: scale=min(416/w,416/h), new=round(w*scale),round(h*scale) "
                              "(Pillow BILINEAR), pad_x=(416-new_w)//2, pad_y=(416-new_h)//2, border pixel 0 "
                              "(normalised like any pixel)",
                  "scale": 1.0, "mean": NANODET_MEAN_BGR, "std": NANODET_STD_BGR, "color": "bgr", "layout": "nchw"},
        "sample_indices": idx,
        "images": {},
    }
    for n in IMAGES:
        x, geom = prep_nanodet(imgs[n])
        o = run(sess, x)
        outs = []
        for oname, v in o.items():
            flat = v.reshape(-1)
            am = int(np.argmax(flat))
            rec = {"name": oname, "shape": list(v.shape), "sum": float(flat.astype(np.float64).sum()),
                   "max": f32(flat[am]), "argmax": am}
            if v.shape[-1] == 80:
                # scores: the 5 highest (cell, class) pairs, raw sigmoid probabilities
                top = np.argsort(-flat, kind="stable")[:5]
                rec["top5"] = [{"flat": int(i), "cell": int(i // 80), "class": int(i % 80),
                                "label": coco_labels[i % 80], "score": f32(flat[i])} for i in top]
            outs.append(rec)
        entry["images"][n] = {"letterbox": geom, "input": tensor_summary(x, idx), "outputs": outs}
        best = max((r for r in outs if "top5" in r), key=lambda r: r["max"])
        print(f"{'nanodet-m':20s} {n:14s} best {best['top5'][0]['label']!r} {best['max']:.3f} in {best['name']}",
              file=sys.stderr)
    out["models"]["nanodet-m"] = entry

    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
