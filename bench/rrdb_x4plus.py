#!/usr/bin/env python3
"""Writes an RRDBNet ×4 of RealESRGAN_x4plus's shape (num_feat 64, num_block 23,
num_grow_ch 32; 16.7 M parameters) with seeded random weights as a .safetensors state dict,
for measuring tiling, memory and time on a network of that depth without the real weights.

The initialisation is BasicSR's: the dense blocks' convolutions Kaiming-normal (fan-in)
scaled by 0.1 with zero biases (`default_init_weights(..., 0.1)`), every other convolution
PyTorch's default (uniform in ±1/sqrt(fan_in), weights and biases). Needs only NumPy.

    python3 bench/rrdb_x4plus.py /tmp/rrdb_x4plus.safetensors [--seed 0]
"""

import argparse
import json
import struct

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-feat", type=int, default=64)
    ap.add_argument("--num-block", type=int, default=23)
    ap.add_argument("--num-grow-ch", type=int, default=32)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    nf, gc = a.num_feat, a.num_grow_ch
    tensors = {}

    def default(name, cout, cin):
        bound = 1.0 / np.sqrt(cin * 9)
        tensors[name + ".weight"] = rng.uniform(-bound, bound, (cout, cin, 3, 3))
        tensors[name + ".bias"] = rng.uniform(-bound, bound, (cout,))

    def dense(name, cout, cin):
        std = np.sqrt(2.0 / (cin * 9))
        tensors[name + ".weight"] = rng.normal(0.0, std, (cout, cin, 3, 3)) * 0.1
        tensors[name + ".bias"] = np.zeros((cout,))

    default("conv_first", nf, 3)
    for b in range(a.num_block):
        for m in range(1, 4):
            p = f"body.{b}.rdb{m}"
            for k in range(1, 5):
                dense(f"{p}.conv{k}", gc, nf + (k - 1) * gc)
            dense(f"{p}.conv5", nf, nf + 4 * gc)
    for name in ["conv_body", "conv_up1", "conv_up2", "conv_hr"]:
        default(name, nf, nf)
    default("conv_last", 3, nf)

    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name], dtype="<f4")
        b = t.tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(b)],
        }
        blobs.append(b)
        offset += len(b)
    header["__metadata__"] = {"format": "pt", "note": f"random RRDBNet x4, seed {a.seed}"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(a.out, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    params = sum(t.size for t in tensors.values())
    print(f"{a.out}: {params} parameters, {offset} bytes of f32")


if __name__ == "__main__":
    main()
