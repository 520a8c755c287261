#!/usr/bin/env python3
"""onnxruntime timing (and optional output dump) for comparing adaptd/tract against it.

usage: python3 benches/ort_reference.py --model FILE.onnx --input TENSOR.npy
           [--threads 1] [--warmup 5] [--iters 50] [--outputs NAME1,NAME2]
           [--dump-outputs FILE.npz]

Loads FILE.onnx in onnxruntime (CPUExecutionProvider, intra_op_num_threads =
--threads, inter_op_num_threads = 1, graph optimisation ORT_ENABLE_ALL,
sequential execution), feeds TENSOR.npy (cast to float32) to the model's first
input, runs --warmup untimed runs, then times --iters runs of session.run()
each (wall clock, time.perf_counter) and prints ONE JSON line on stdout:

  {"runtime": "onnxruntime", "version": ..., "threads": ..., "iters": ...,
   "median_ms": ..., "p95_ms": ..., "mean_ms": ..., "min_ms": ...}

(plus "model", "input_shape", "outputs", "warmup" and "max_ms" for the record).
p95 is numpy's linear-interpolated 95th percentile.

--outputs NAME1,NAME2 fetches those tensors (graph outputs, or intermediate
tensors, which are then added as extra graph outputs to an in-memory copy of
the model; that needs the `onnx` package) instead of all graph outputs.
--dump-outputs FILE.npz saves the fetched outputs of the last timed run, keyed
by tensor name, for parity checks.

Errors go to stderr, exit status 1 (2 for bad arguments).
"""

import argparse
import json
import sys
import time


def fail(msg):
    print(f"ort_reference: error: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="ONNX file")
    ap.add_argument("--input", required=True, help=".npy tensor for the first input (cast to float32)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    ap.add_argument("--iters", type=int, default=50, help="timed runs (default 50)")
    ap.add_argument("--outputs", default="", help="comma-separated tensor names to fetch (default: all graph outputs)")
    ap.add_argument("--dump-outputs", metavar="FILE.npz", help="save the fetched outputs of the last run")
    args = ap.parse_args()
    if args.threads < 1 or args.iters < 1 or args.warmup < 0:
        ap.error("--threads and --iters must be >= 1, --warmup >= 0")

    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        fail(f"{e} (pip install numpy onnxruntime)")

    try:
        x = np.load(args.input, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - report any load error
        fail(f"cannot load {args.input}: {e}")
    if not isinstance(x, np.ndarray):
        fail(f"{args.input} is not a single .npy array")
    x = np.ascontiguousarray(x, dtype=np.float32)

    wanted = [n.strip() for n in args.outputs.split(",") if n.strip()]

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3

    model = args.model
    try:
        if wanted:
            # Add intermediate tensors as graph outputs if they are not outputs already.
            probe = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
            graph_outs = {o.name for o in probe.get_outputs()}
            del probe
            extra = [n for n in wanted if n not in graph_outs]
            if extra:
                try:
                    import onnx
                except ImportError:
                    fail(f"{extra} are not graph outputs; adding them needs the onnx package (pip install onnx)")
                m = onnx.load(args.model)
                produced = {o for node in m.graph.node for o in node.output}
                missing = [n for n in extra if n not in produced]
                if missing:
                    fail(f"no tensor named {missing} in {args.model}")
                for n in extra:
                    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
                model = m.SerializeToString()
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        fail(f"cannot load {args.model}: {e}")

    inp = sess.get_inputs()[0]
    fetch = wanted or [o.name for o in sess.get_outputs()]
    feed = {inp.name: x}

    try:
        for _ in range(args.warmup):
            sess.run(fetch, feed)
        times = []
        outs = None
        for _ in range(args.iters):
            t0 = time.perf_counter()
            outs = sess.run(fetch, feed)
            times.append((time.perf_counter() - t0) * 1000.0)
    except Exception as e:  # noqa: BLE001
        fail(f"inference failed (input {inp.name} {list(x.shape)} vs model {inp.shape}): {e}")

    if args.dump_outputs:
        try:
            np.savez(args.dump_outputs, **{n: v for n, v in zip(fetch, outs)})
        except Exception as e:  # noqa: BLE001
            fail(f"cannot write {args.dump_outputs}: {e}")

    t = np.asarray(times)
    print(json.dumps({
        "runtime": "onnxruntime",
        "version": ort.__version__,
        "threads": args.threads,
        "iters": args.iters,
        "median_ms": round(float(np.median(t)), 4),
        "p95_ms": round(float(np.percentile(t, 95)), 4),
        "mean_ms": round(float(t.mean()), 4),
        "min_ms": round(float(t.min()), 4),
        "max_ms": round(float(t.max()), 4),
        "warmup": args.warmup,
        "model": args.model,
        "input_shape": list(x.shape),
        "outputs": fetch,
    }), flush=True)


if __name__ == "__main__":
    main()
