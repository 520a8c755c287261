#!/usr/bin/env python3
"""Which cell point does NanoDet-m's box regression use: (col, row)*stride or (col+0.5, row+0.5)*stride?

Ground-truth-free check by mirror symmetry: run the letterboxed image and its
horizontal mirror (for these images the letterbox has no horizontal padding, so
mirroring the tensor equals letterboxing the mirrored photo), decode both with
a candidate offset, mirror the second set of boxes back and compare.  With the
wrong offset every box is shifted by (0.5 - offset)*stride in the original and
the opposite way in the mirror, so the pairs disagree by about one stride in x;
with the right offset they coincide.

usage: python3 tests/reference/nanodet_center_offset.py [--models DIR] [--images DIR]

This is a numpy sketch of the decoder described in the models README (softmax
over 11 bins per side, expectation * stride), for this one question only; it is
not a reference for adaptd's decoder output.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import REPO, load_rgb, make_session, prep_nanodet, run  # noqa: E402

LEVELS = [("Identity_2:0", "Identity_5:0", 32), ("Identity_1:0", "Identity_4:0", 16), ("Identity:0", "Identity_3:0", 8)]


def decode(outs, offset, threshold=0.3):
    dets = []
    for sname, bname, stride in LEVELS:
        scores = outs[sname][0]
        dist = outs[bname][0].reshape(-1, 4, 11)
        g = 416 // stride
        p = np.exp(dist - dist.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        d = (p * np.arange(11)).sum(-1) * stride  # left, top, right, bottom distances
        cell = np.arange(scores.shape[0])
        cx = (cell % g + offset) * stride
        cy = (cell // g + offset) * stride
        boxes = np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], 1)
        cls, best = scores.argmax(1), scores.max(1)
        for i in np.nonzero(best > threshold)[0]:
            dets.append((float(best[i]), int(cls[i]), boxes[i], stride))
    return sorted(dets, key=lambda t: -t[0])


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=os.path.join(REPO, "..", "shared", "models"))
    ap.add_argument("--images", default=os.path.join(REPO, "..", "shared", "images"))
    args = ap.parse_args()
    labels = open(os.path.join(args.models, "coco_labels.txt")).read().splitlines()
    sess = make_session(os.path.join(args.models, "nanodet_m_416_coco.onnx"))
    summary = {}
    for name in ["astronaut.png", "chelsea.png", "camera.png", "coffee.png"]:
        x, geom = prep_nanodet(load_rgb(os.path.join(args.images, name)))
        assert geom["pad_x"] == 0, "mirror test needs no horizontal padding"
        o, om = run(sess, x), run(sess, np.ascontiguousarray(x[:, :, :, ::-1]))
        for offset in (0.0, 0.5):
            a, b = decode(o, offset)[:3], decode(om, offset)
            parts = []
            for score, cls, box, stride in a:
                back = [(np.array([416 - bb[2], bb[1], 416 - bb[0], bb[3]])) for _, cb, bb, _ in b if cb == cls]
                if not back:
                    continue
                mb = max(back, key=lambda m: iou(box, m))
                dx = ((box[0] + box[2]) - (mb[0] + mb[2])) / 2
                summary.setdefault(offset, []).append(iou(box, mb))
                parts.append(f"{labels[cls]}@{stride} p={score:.2f} dx={dx:+.1f} IoU={iou(box, mb):.3f}")
            print(f"{name:14s} offset {offset}: " + "; ".join(parts))
    for offset, v in summary.items():
        print(f"offset {offset}: mean mirror IoU {np.mean(v):.3f} over {len(v)} detections")


if __name__ == "__main__":
    main()
