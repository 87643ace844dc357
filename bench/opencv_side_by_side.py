#!/usr/bin/env python3
"""Side-by-side timing of OpenCV's DNN module and superres on the same model and input size.

usage: python3 bench/opencv_side_by_side.py MODEL.pb WxH [WxH ...] [--runs N] [--rounds R] [--threads T]
                                            [--superres target/release/superres]

Both engines time the network's forward pass only (no decoding or colour conversion), after
one warm-up, on the same synthetic input, in alternating rounds within one process run (so
a change of load between the two is spread over both), and the script prints each round's
ratio, their median, and the ratio of the best times seen. OpenCV: `cv2.dnn.readNetFromTensorflow` + `setInput` +
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


class OpenCV:
    """One network, loaded once; `time` returns the median and best of `runs` forward passes."""

    def __init__(self, model, w, h, threads):
        cv2.setNumThreads(threads)
        cv2.dnn_superres.DnnSuperResImpl_create()
        self.net = cv2.dnn.readNetFromTensorflow(model)
        # The channel count follows the model family: EDSR takes 3, the Y-channel models 1.
        channels = 3 if "EDSR" in os.path.basename(model).upper() else 1
        rng = np.random.default_rng(0)
        self.blob = rng.random((1, channels, h, w), dtype=np.float32)
        self.net.setInput(self.blob)
        self.net.forward()

    def time(self, runs):
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            self.net.setInput(self.blob)
            self.net.forward()
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
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds per size (OpenCV first in odd rounds, superres first in even ones)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--superres", default="target/release/superres")
    a = ap.parse_args()
    print(f"OpenCV {cv2.__version__}, {a.threads} threads, {a.rounds} rounds of {a.runs} runs, "
          f"model {os.path.basename(a.model)}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'size':>9} {'round':>5} {'OpenCV ms':>10} {'superres ms':>12} {'speed-up':>9} {'superres GFLOP/s':>17}")
    for size in a.sizes:
        w, h = (int(v) for v in size.lower().split("x"))
        cv = OpenCV(a.model, w, h, a.threads)
        ratios, best_cv, best_sr = [], float("inf"), float("inf")
        for r in range(a.rounds):
            if r % 2 == 0:
                cv_med, cv_min = cv.time(a.runs)
                sr_med, sr_min, gflops = superres_times(a.superres, a.model, w, h, a.runs, a.threads)
            else:
                sr_med, sr_min, gflops = superres_times(a.superres, a.model, w, h, a.runs, a.threads)
                cv_med, cv_min = cv.time(a.runs)
            ratios.append(cv_med / sr_med)
            best_cv, best_sr = min(best_cv, cv_min), min(best_sr, sr_min)
            print(f"{size:>9} {r + 1:>5} {cv_med:>10.1f} {sr_med:>12.1f} {cv_med / sr_med:>8.2f}x {gflops or 0:>17.1f}")
        print(f"{size:>9} {'all':>5} speed-up: median of rounds {statistics.median(ratios):.2f}x, "
              f"best time against best time {best_cv / best_sr:.2f}x "
              f"({best_cv:.1f} ms / {best_sr:.1f} ms); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
