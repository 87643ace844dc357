"""Set5 PSNR-Y / SSIM-Y evaluation of an ONNX Y-channel SR model (OpenCV protocol).

HR = cv2.imread (BGR uint8) cropped to a multiple of s; LR = cv2.resize INTER_CUBIC;
SR: Y of cv2.cvtColor(BGR2YCrCb) / 255 -> network (onnxruntime), Cr/Cb upscaled with
cv2.resize INTER_LINEAR, merged, x255 round-half-even + saturate, YCrCb2BGR.
s pixels are cut from every border; PSNR on Y = 16 + (65.481 R + 128.553 G + 24.966 B)/255
(float64, [0,255] values).

Usage: python training/eval_set5.py [--model models/default_x3.onnx] [--scale 3]
"""
import argparse, glob, os, sys
import numpy as np
import cv2

SET5 = "/work/shared/images/set5"
REFERENCE_X3 = {"bicubic (reference)": 29.64, "FSRCNN_x3 (OpenCV)": 30.60,
                "ESPCN_x3 (OpenCV)": 30.62}


def y_bt601(bgr):
    b, g, r = [bgr[..., i].astype(np.float64) for i in range(3)]
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def psnr(a, b):
    mse = np.mean((a - b) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def ssim(a, b):
    """SSIM on [0,255] float64 (Gaussian 11x11, sigma 1.5, as in Wang et al.)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    w = k @ k.T
    f = lambda x: cv2.filter2D(x, -1, w)[5:-5, 5:-5]
    mu1, mu2 = f(a), f(b)
    s11, s22, s12 = f(a * a) - mu1 ** 2, f(b * b) - mu2 ** 2, f(a * b) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))
    return float(m.mean())


def to_u8(x):
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)  # rint = round half to even


def sr_onnx(sess, lr_bgr, s):
    ycc = cv2.cvtColor(lr_bgr, cv2.COLOR_BGR2YCrCb)
    y = ycc[..., 0].astype(np.float32)[None, None] / 255.0
    out = sess.run(None, {"input": y})[0][0, 0]
    h, w = lr_bgr.shape[0] * s, lr_bgr.shape[1] * s
    crcb = cv2.resize(ycc, (w, h), interpolation=cv2.INTER_LINEAR)
    crcb[..., 0] = to_u8(out * 255.0)
    return cv2.cvtColor(crcb, cv2.COLOR_YCrCb2BGR)


def evaluate(model_path, s=3, verbose=True, images=SET5):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"]) if model_path else None
    rows = []
    for f in sorted(glob.glob(os.path.join(images, "*.png"))):
        hr = cv2.imread(f, cv2.IMREAD_COLOR)
        H, W = hr.shape[0] - hr.shape[0] % s, hr.shape[1] - hr.shape[1] % s
        hr = hr[:H, :W]
        lr = cv2.resize(hr, (W // s, H // s), interpolation=cv2.INTER_CUBIC)
        bic = cv2.resize(lr, (W, H), interpolation=cv2.INTER_CUBIC)
        yh = y_bt601(hr)[s:-s, s:-s]
        yb = y_bt601(bic)[s:-s, s:-s]
        r = dict(name=os.path.basename(f), bic_psnr=psnr(yh, yb), bic_ssim=ssim(yh, yb))
        if sess is not None:
            ys = y_bt601(sr_onnx(sess, lr, s))[s:-s, s:-s]
            r.update(psnr=psnr(yh, ys), ssim=ssim(yh, ys))
        rows.append(r)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "name"}
    if verbose:
        for r in rows + [dict(name="MEAN", **mean)]:
            line = f"{r['name']:>14}  bicubic {r['bic_psnr']:.2f} dB / {r['bic_ssim']:.4f}"
            if "psnr" in r:
                line += f"   model {r['psnr']:.2f} dB / {r['ssim']:.4f}"
            print(line)
    return mean


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--model", default=os.path.join(here, "..", "models", "default_x3.onnx"))
    ap.add_argument("--scale", type=int, default=3)
    a = ap.parse_args()
    m = evaluate(a.model if a.model != "none" else None, a.scale)
    print(f"\nSet5 x{a.scale} mean PSNR-Y: model {m.get('psnr', float('nan')):.2f} dB "
          f"(SSIM {m.get('ssim', float('nan')):.4f}), bicubic {m['bic_psnr']:.2f} dB "
          f"(SSIM {m['bic_ssim']:.4f})")
    if a.scale == 3:
        for k, v in REFERENCE_X3.items():
            print(f"  {k}: {v:.2f} dB")
