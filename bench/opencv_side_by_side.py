#!/usr/bin/env python3
"""Side-by-side timing of OpenCV's DNN module and superres on the same model and input size.

usage: python3 bench/opencv_side_by_side.py MODEL.pb WxH [WxH ...] [--runs N] [--threads T]
                                            [--superres target/release/superres]

Both engines time the network's forward pass only (no decoding or colour conversion), after
one warm-up, on the same synthetic input, back to back in one process run, so the ratio is
comparable even on a noisy machine. OpenCV: `cv2.dnn.readNetFromTensorflow` + `setInput` +
`forward` with `cv2.setNumThreads(T)` (a DnnSuperResImpl is created first so its
DepthToSpace layer is registered). superres: `superres bench --json` with RAYON_NUM_THREADS=T.

Needs: pip install opencv-contrib-python-headless==4.14.0.94 numpy
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import cv2
import numpy as np


def opencv_times(model, w, h, runs, threads):
    cv2.setNumThreads(threads)
    cv2.dnn_superres.DnnSuperResImpl_create()
    net = cv2.dnn.readNetFromTensorflow(model)
    # The channel count follows the model family: EDSR takes 3, the Y-channel models 1.
    channels = 3 if "EDSR" in os.path.basename(model).upper() else 1
    rng = np.random.default_rng(0)
    blob = rng.random((1, channels, h, w), dtype=np.float32)
    net.setInput(blob)
    net.forward()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        net.setInput(blob)
        net.forward()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times)


def superres_times(binary, model, w, h, runs, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        [binary, "bench", "--model", model, "--size", f"{w}x{h}", "--runs", str(runs), "--device", "cpu", "--json"],
        check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out)
    return r["median_ms"], r["min_ms"], r.get("gflops")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("sizes", nargs="+")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--superres", default="target/release/superres")
    a = ap.parse_args()
    print(f"OpenCV {cv2.__version__}, {a.threads} threads, {a.runs} runs, model {os.path.basename(a.model)}")
    print(f"{'size':>9} {'OpenCV ms':>10} {'superres ms':>12} {'speed-up':>9} {'superres GFLOP/s':>17}")
    for size in a.sizes:
        w, h = (int(v) for v in size.lower().split("x"))
        cv_med, _ = opencv_times(a.model, w, h, a.runs, a.threads)
        sr_med, _, gflops = superres_times(a.superres, a.model, w, h, a.runs, a.threads)
        print(f"{size:>9} {cv_med:>10.1f} {sr_med:>12.1f} {cv_med / sr_med:>8.2f}x {gflops or 0:>17.1f}")


if __name__ == "__main__":
    main()
