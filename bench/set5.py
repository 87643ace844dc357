#!/usr/bin/env python3
"""Set5 PSNR-Y of `superres upscale` itself, on the protocol of
../shared/reference/set5_metrics.json: HR cropped to a multiple of the scale, LR made with
cv2.resize(INTER_CUBIC), PSNR on Y (MATLAB rgb2ycbcr, float64) with `scale` pixels of border.

Each configuration is a set of extra `superres upscale` arguments, run side by side on the
same LR images, so options can be compared (e.g. --tta against none):

    python3 bench/set5.py --model default --scale 3 --config none --config=--tta

Prints per-image and mean PSNR-Y and the wall time of each configuration. Needs numpy and
opencv-python-headless (training/requirements.txt); the binary is $SUPERRES_BIN, default
target/release/superres.
"""
import argparse
import glob
import os
import shlex
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SUPERRES_SHARED", os.path.join(ROOT, "..", "shared"))


def y_bt601(bgr):
    b, g, r = [bgr[..., i].astype(np.float64) for i in range(3)]
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def psnr_y(sr, hr, border):
    a, b = y_bt601(sr), y_bt601(hr)
    a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--scale", type=int, default=3)
    ap.add_argument("--config", action="append", default=None,
                    help="a configuration: a string of extra upscale arguments (repeat to "
                         "compare; 'none' for none)")
    a = ap.parse_args()
    binary = os.environ.get("SUPERRES_BIN", os.path.join(ROOT, "target", "release", "superres"))
    files = sorted(glob.glob(os.path.join(SHARED, "images", "set5", "*.png")))
    if not files:
        sys.exit(f"no Set5 images under {SHARED}/images/set5")
    s = a.scale
    with tempfile.TemporaryDirectory() as tmp:
        pairs = []
        for f in files:
            hr = cv2.imread(f, cv2.IMREAD_COLOR)
            h, w = hr.shape[0] - hr.shape[0] % s, hr.shape[1] - hr.shape[1] % s
            hr = hr[:h, :w]
            lr = cv2.resize(hr, (w // s, h // s), interpolation=cv2.INTER_CUBIC)
            name = os.path.splitext(os.path.basename(f))[0]
            path = os.path.join(tmp, f"{name}.png")
            cv2.imwrite(path, lr)
            pairs.append((name, path, hr))
        results = []
        for config in a.config or ["none"]:
            config = "" if config == "none" else config
            out = os.path.join(tmp, f"out{len(results)}")
            cmd = [binary, "upscale", *[p for _, p, _ in pairs], "-o", out, "--model", a.model,
                   "--quiet", *shlex.split(config)]
            started = time.monotonic()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            secs = time.monotonic() - started
            scores = {}
            for name, _, hr in pairs:
                sr = cv2.imread(os.path.join(out, f"{name}.png"), cv2.IMREAD_COLOR)
                scores[name] = psnr_y(sr, hr, s)
            results.append((config or "(none)", scores, secs))
    names = [n for n, _, _ in pairs]
    print(f"Set5 x{s}, model {a.model}, PSNR-Y (dB)")
    print(f"{'configuration':<24}" + "".join(f"{n:>10}" for n in names) + f"{'mean':>10}{'time s':>9}")
    for config, scores, secs in results:
        mean = float(np.mean(list(scores.values())))
        print(f"{config:<24}" + "".join(f"{scores[n]:10.3f}" for n in names) + f"{mean:10.3f}{secs:9.2f}")


if __name__ == "__main__":
    main()
