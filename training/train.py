"""Train the compact Y-channel SR model on CPU (deterministic given --seed).

Degradation matches the evaluation: LR = cv2.resize(HR_bgr_uint8, INTER_CUBIC),
network input = Y of cv2.cvtColor(LR, BGR2YCrCb) / 255, target = Y of HR / 255.

Example (the command used for models/default_x3.onnx is in models/MODEL_CARD.md):
  python training/train.py --iters 9000 --out training/runs/x3
"""
import argparse, json, math, os, time
import numpy as np
import cv2
import torch
import torch.nn.functional as F

from model import CompactSR, count_params, flops_per_input_pixel

HERE = os.path.dirname(os.path.abspath(__file__))


def load_bgr(path):
    im = cv2.imread(path, cv2.IMREAD_COLOR)
    if im is None:
        raise FileNotFoundError(path)
    return im


def make_pair(hr_bgr, s):
    H, W = hr_bgr.shape[0] - hr_bgr.shape[0] % s, hr_bgr.shape[1] - hr_bgr.shape[1] % s
    hr_bgr = np.ascontiguousarray(hr_bgr[:H, :W])
    lr_bgr = cv2.resize(hr_bgr, (W // s, H // s), interpolation=cv2.INTER_CUBIC)
    y_hr = cv2.cvtColor(hr_bgr, cv2.COLOR_BGR2YCrCb)[..., 0].copy()
    y_lr = cv2.cvtColor(lr_bgr, cv2.COLOR_BGR2YCrCb)[..., 0].copy()
    return y_lr, y_hr


def build_dataset(paths, s, pyramid, min_side):
    """Each image at several scales (INTER_AREA pre-downscale packs more detail per
    pixel and removes JPEG noise); every (image, scale) entry is sampled equally."""
    entries = []
    for p in paths:
        bgr = load_bgr(p)
        for f in pyramid:
            h, w = round(bgr.shape[0] * f), round(bgr.shape[1] * f)
            if min(h, w) < min_side:
                continue
            im = bgr if f == 1 else cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
            entries.append(make_pair(im, s))
    return entries


class PatchSampler:
    def __init__(self, entries, s, rng, flat_std, flat_keep):
        self.e, self.s, self.rng = entries, s, rng
        self.flat_std, self.flat_keep = flat_std, flat_keep

    def batch(self, bs, p):
        s, rng = self.s, self.rng
        xs, ys = np.empty((bs, 1, p, p), np.float32), np.empty((bs, 1, p * s, p * s), np.float32)
        for i in range(bs):
            while True:
                lr, hr = self.e[rng.integers(len(self.e))]
                y0 = int(rng.integers(lr.shape[0] - p + 1))
                x0 = int(rng.integers(lr.shape[1] - p + 1))
                a = lr[y0:y0 + p, x0:x0 + p]
                b = hr[y0 * s:(y0 + p) * s, x0 * s:(x0 + p) * s]
                # mostly skip flat patches (sky, bokeh): they teach nothing
                if b.std() >= self.flat_std or rng.random() < self.flat_keep:
                    break
            k = int(rng.integers(8))  # dihedral augmentation
            if k & 4:
                a, b = a[:, ::-1], b[:, ::-1]
            a, b = np.rot90(a, k & 3), np.rot90(b, k & 3)
            xs[i, 0], ys[i, 0] = a, b
        return torch.from_numpy(xs / 255.0), torch.from_numpy(ys / 255.0)


def psnr_y(model, pairs):
    model.eval()
    out = []
    with torch.no_grad():
        for lr, hr in pairs:
            x = torch.from_numpy(lr.astype(np.float32) / 255.0)[None, None]
            y = model(x)[0, 0].numpy() * 255.0
            y = np.clip(np.rint(y), 0, 255)
            s = model.scale
            d = (y - hr.astype(np.float64))[s:-s, s:-s]
            out.append(10 * np.log10(255.0 ** 2 / np.mean(d ** 2)))
    model.train()
    return float(np.mean(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=os.path.join(HERE, "data", "images.txt"))
    ap.add_argument("--out", default=os.path.join(HERE, "runs", "x3"))
    ap.add_argument("--scale", type=int, default=3)
    ap.add_argument("--feats", type=int, default=32)
    ap.add_argument("--n-body", type=int, default=7)
    ap.add_argument("--iters", type=int, default=9000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch-min", type=int, default=48)
    ap.add_argument("--patch-max", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min", type=float, default=1e-6)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--pyramid", default="1,0.5,0.3333")
    ap.add_argument("--min-side", type=int, default=200)
    ap.add_argument("--flat-std", type=float, default=4.0)
    ap.add_argument("--flat-keep", type=float, default=0.1)
    ap.add_argument("--val-names", default="skimage_coffee.png,friends_by_Aitzol_Berasategi.jpg",
                    help="held-out images (not trained on), used only for logging")
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "train.log"), "a")

    def say(msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log.write(line + "\n"); log.flush()

    paths = [l.strip() for l in open(a.images) if l.strip()]
    val_names = set(n for n in a.val_names.split(",") if n)
    train_paths = [p for p in paths if os.path.basename(p) not in val_names]
    val_paths = [p for p in paths if os.path.basename(p) in val_names]
    pyramid = [float(f) for f in a.pyramid.split(",")]
    t0 = time.time()
    entries = build_dataset(train_paths, a.scale, pyramid, a.min_side)
    val = []
    for p in val_paths:  # centre 480x480 HR crop of the half-size image
        bgr = load_bgr(p)
        bgr = cv2.resize(bgr, (bgr.shape[1] // 2, bgr.shape[0] // 2), interpolation=cv2.INTER_AREA) \
            if min(bgr.shape[:2]) > 1000 else bgr
        h, w = bgr.shape[:2]
        val.append(make_pair(bgr[(h - 480) // 2:(h + 480) // 2, (w - 480) // 2:(w + 480) // 2], a.scale))
    npx = sum(e[1].size for e in entries)
    say(f"args {json.dumps(vars(a))}")
    say(f"{len(train_paths)} train images -> {len(entries)} pyramid entries, {npx / 1e6:.1f} MPix HR; "
        f"{len(val)} val images; data prep {time.time() - t0:.1f}s")

    model = CompactSR(a.scale, a.feats, a.n_body)
    say(f"params {count_params(model)}, ~{flops_per_input_pixel(a.scale, a.feats, a.n_body)} FLOP/input px")
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.99))
    sampler = PatchSampler(entries, a.scale, rng, a.flat_std, a.flat_keep)

    if val:
        bic = np.mean([10 * np.log10(255.0 ** 2 / np.mean((cv2.resize(lr, hr.shape[::-1], interpolation=cv2.INTER_CUBIC)
                      .astype(np.float64) - hr)[a.scale:-a.scale, a.scale:-a.scale] ** 2)) for lr, hr in val])
        say(f"val PSNR-Y: bicubic {bic:.3f} dB, untrained model (bilinear) {psnr_y(model, val):.3f} dB")
    start = 0
    ck = os.path.join(a.out, "last.pt")
    if os.path.exists(ck):  # resume (bit-exact: RNG states are restored)
        st = torch.load(ck, weights_only=False)
        model.load_state_dict(st["model"]); opt.load_state_dict(st["opt"])
        rng.bit_generator.state = st["np_rng"]; torch.set_rng_state(st["torch_rng"])
        start = st["iter"]
        say(f"resumed from iteration {start}")

    def lr_at(i):
        if i < a.warmup:
            return a.lr * (i + 1) / a.warmup
        t = (i - a.warmup) / max(1, a.iters - a.warmup)
        return a.lr_min + 0.5 * (a.lr - a.lr_min) * (1 + math.cos(math.pi * t))

    t_start, ema = time.time(), None
    for it in range(start, a.iters):
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        p = int(rng.integers(a.patch_min, a.patch_max + 1))
        x, y = sampler.batch(a.batch, p)
        loss = F.l1_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        done = it + 1
        if done % 100 == 0:
            el = time.time() - t_start
            say(f"it {done}/{a.iters} loss {ema:.5f} lr {lr_at(it):.2e} "
                f"{el / (done - start):.3f}s/it elapsed {el / 60:.1f}min")
        if done % a.val_every == 0 or done == a.iters:
            if val:
                say(f"it {done} val PSNR-Y {psnr_y(model, val):.3f} dB")
        if done % a.ckpt_every == 0 or done == a.iters:
            st = dict(model=model.state_dict(), opt=opt.state_dict(), iter=done,
                      np_rng=rng.bit_generator.state, torch_rng=torch.get_rng_state(),
                      config=dict(scale=a.scale, feats=a.feats, n_body=a.n_body))
            torch.save(st, ck + ".tmp"); os.replace(ck + ".tmp", ck)
    torch.save(dict(model=model.state_dict(), config=dict(scale=a.scale, feats=a.feats, n_body=a.n_body),
                    iters=a.iters, seed=a.seed),
               os.path.join(a.out, "final.pt"))
    say(f"done: {a.iters - start} iterations in {(time.time() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
