#!/usr/bin/env python3
"""Writes the PyTorch-reader fixtures of crates/import/tests/fixtures/pytorch/.

Each architecture is defined here (small re-statements of Real-ESRGAN's SRVGGNetCompact and
RRDBNet and of the original ESRGAN key layout), built with seeded random weights at tiny
widths, saved as a `.pth` state dict (torch.save) and/or a `.safetensors` file (written by
hand below, so the `safetensors` package is not needed), with a small input and PyTorch's
output as float32 NCHW `.npy` files:

    NAME.pth / NAME.safetensors, NAME_in.npy, NAME_out.npy

It also writes `malicious.pth`, a torch.save-shaped zip whose pickle calls `os.system`
(the reader must refuse it by name and never run it).

Usage: python3 tools/pytorch_fixtures.py [span]   (torch 2.x and numpy; CPU is enough;
`span` writes only the SPAN fixtures)
"""

import io
import json
import os
import struct
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "crates", "import", "tests", "fixtures", "pytorch"
)


# --- architectures -----------------------------------------------------------------------


class SRVGGNetCompact(nn.Module):
    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu"):
        super().__init__()
        self.upscale = upscale
        self.body = nn.ModuleList()

        def act():
            if act_type == "relu":
                return nn.ReLU()
            if act_type == "prelu":
                return nn.PReLU(num_parameters=num_feat)
            return nn.LeakyReLU(negative_slope=0.1)

        self.body.append(nn.Conv2d(num_in_ch, num_feat, 3, 1, 1))
        self.body.append(act())
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(act())
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


class ResidualDenseBlock(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """Real-ESRGAN's RRDBNet (new key layout), generalised to `ups` ×2 upsamplings
    (2 for ×4, 3 for ×8) and a pixel-unshuffle of the input for ×2 (2) and ×1 (4)."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, ups=2, unshuffle=1):
        super().__init__()
        self.unshuffle = unshuffle
        self.ups = ups
        self.conv_first = nn.Conv2d(num_in_ch * unshuffle * unshuffle, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        for i in range(ups):
            setattr(self, f"conv_up{i + 1}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x):
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(self.ups):
            up = getattr(self, f"conv_up{i + 1}")
            feat = self.lrelu(up(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


class Conv3XC(nn.Module):
    """SPAN's re-parameterisable 3×3 convolution: at training time a 1×1 skip plus a
    1×1 → 3×3 (valid, on the zero-padded input) → 1×1 chain, `gain` times wider inside; at
    inference one 3×3 `eval_conv` holding the two folded together."""

    def __init__(self, c_in, c_out, gain=2):
        super().__init__()
        self.sk = nn.Conv2d(c_in, c_out, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_in * gain, 1),
            nn.Conv2d(c_in * gain, c_out * gain, 3),
            nn.Conv2d(c_out * gain, c_out, 1),
        )
        self.eval_conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    @torch.no_grad()
    def fold(self):
        a, b, c = self.conv
        # W[o, i] = sum W3[o, n] W2[n, m] W1[m, i] over the 3×3 taps, plus the skip in the centre.
        w = torch.einsum("on,nmyx,mi->oiyx", c.weight[:, :, 0, 0], b.weight, a.weight[:, :, 0, 0])
        w[:, :, 1, 1] += self.sk.weight[:, :, 0, 0]
        b2 = b.weight.sum((2, 3)) @ a.bias + b.bias
        bias = c.weight[:, :, 0, 0] @ b2 + c.bias + self.sk.bias
        self.eval_conv.weight.copy_(w)
        self.eval_conv.bias.copy_(bias)

    def forward(self, x):
        if self.training:
            return self.conv(F.pad(x, (1, 1, 1, 1))) + self.sk(x)
        self.fold()
        return self.eval_conv(x)


class SPAB(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1_r = Conv3XC(c, c)
        self.c2_r = Conv3XC(c, c)
        self.c3_r = Conv3XC(c, c)

    def forward(self, x):
        out1 = self.c1_r(x)
        out3 = self.c3_r(F.silu(self.c2_r(F.silu(out1))))
        return (out3 + x) * (torch.sigmoid(out3) - 0.5), out1


class SPAN(nn.Module):
    """SPAN (Swift Parameter-free Attention Network) with spandrel's key names: six SPABs,
    a 1×1 `conv_cat` over four feature maps, a pixel-shuffle upsampler. With `norm` the
    input is `(x - rgb_mean) * 255` (and the output is used as it is); without it the model
    holds a `no_norm` buffer."""

    def __init__(self, c=8, upscale=4, norm=True):
        super().__init__()
        self.norm = norm
        self.register_buffer("mean", torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1), persistent=False)
        if not norm:
            self.register_buffer("no_norm", torch.zeros(1))
        self.conv_1 = Conv3XC(3, c)
        for i in range(1, 7):
            setattr(self, f"block_{i}", SPAB(c))
        self.conv_cat = nn.Conv2d(4 * c, c, 1)
        self.conv_2 = Conv3XC(c, c)
        self.upsampler = nn.Sequential(nn.Conv2d(c, 3 * upscale * upscale, 3, padding=1), nn.PixelShuffle(upscale))

    def forward(self, x):
        if self.norm:
            x = (x - self.mean) * 255.0
        feat = self.conv_1(x)
        b, outs = feat, []
        for i in range(1, 7):
            b, out1 = getattr(self, f"block_{i}")(b)
            outs.append(b)
        out = self.conv_cat(torch.cat([feat, self.conv_2(b), outs[0], out1], 1))
        return self.upsampler(out)


def span_small(c, upscale, norm):
    """A SPAN whose width-c Conv3XC blocks share their `conv.{0,1,2}.weight` tensors (the
    bulk of the weights; torch.save stores a shared storage once, which keeps the fixtures
    small); the skips, the biases and so the folded `eval_conv`s are each block's own, so
    every block still computes something different."""
    m = SPAN(c, upscale, norm)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, Conv3XC) and mod is not m.conv_1 and mod is not m.conv_2:
                for k in range(3):
                    mod.conv[k].weight = m.conv_2.conv[k].weight
        if norm:
            # The input is scaled by 255: scale the first layer back, as training would.
            m.conv_1.sk.weight /= 255.0
            m.conv_1.conv[0].weight /= 255.0
    return m


def rrdb_old_keys(sd, ups):
    """The original ESRGAN layout of the same weights: model.0 = conv_first,
    model.1.sub.N.RDBm.convK.0 = body.N.rdbm.convK, model.1.sub.NB = conv_body,
    model.3k = conv_upk, then HR conv and last conv."""
    nb = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
    out = OrderedDict()
    for k, v in sd.items():
        kind = k.rsplit(".", 1)[1]
        if k.startswith("conv_first."):
            out[f"model.0.{kind}"] = v
        elif k.startswith("body."):
            _, n, rdb, conv, _ = k.split(".")
            out[f"model.1.sub.{n}.RDB{rdb[3:]}.{conv}.0.{kind}"] = v
        elif k.startswith("conv_body."):
            out[f"model.1.sub.{nb}.{kind}"] = v
        elif k.startswith("conv_up"):
            out[f"model.{3 * int(k[7])}.{kind}"] = v
        elif k.startswith("conv_hr."):
            out[f"model.{3 * ups + 2}.{kind}"] = v
        elif k.startswith("conv_last."):
            out[f"model.{3 * ups + 4}.{kind}"] = v
        else:
            raise KeyError(k)
    return out


# --- writing -----------------------------------------------------------------------------


def npy(name, t):
    np.save(os.path.join(OUT, name), t.detach().numpy().astype(np.float32))


def save_safetensors(path, sd, dtype="F32", metadata=None):
    """The safetensors format: u64 LE header length, a JSON header (offsets relative to the
    end of the header, padded with spaces to 8 bytes), then the raw little-endian data."""
    tdt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for k in sorted(sd):
        t = sd[k].detach().to(tdt).contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[k] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def bf16_exact(model):
    """Rounds every weight to bfloat16 (and checks it is then exact in float16 too), so that
    the F32, F16 and BF16 files of one model hold the same values."""
    with torch.no_grad():
        for p in model.parameters():
            q = p.to(torch.bfloat16).float()
            q[q.abs() < 2.0**-14] = 0.0
            assert torch.equal(q.half().float(), q)
            p.copy_(q)


def reference(name, model, h, w, seed):
    model.eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g)
    with torch.no_grad():
        y = model(x)
    npy(f"{name}_in.npy", x)
    npy(f"{name}_out.npy", y)
    return y


def malicious():
    """A zip laid out like torch.save whose pickle is `os.system('touch PWNED')`."""
    cmd = b"touch superres_pwned_by_pickle"
    pkl = b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(cmd)) + cmd + b"\x85R."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("malicious/data.pkl", pkl)
        z.writestr("malicious/byteorder", "little")
        z.writestr("malicious/version", "3\n")
    with open(os.path.join(OUT, "malicious.pth"), "wb") as f:
        f.write(buf.getvalue())


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)

    # SRVGGNetCompact: PReLU ×4 in every file flavour.
    m = SRVGGNetCompact(num_feat=8, num_conv=4, upscale=4, act_type="prelu")
    bf16_exact(m)
    reference("srvgg_prelu_x4", m, 6, 8, 1)
    sd = m.state_dict()
    torch.save(sd, os.path.join(OUT, "srvgg_prelu_x4.pth"))
    for dt in ("F32", "F16", "BF16"):
        suffix = "" if dt == "F32" else "_" + dt.lower()
        save_safetensors(os.path.join(OUT, f"srvgg_prelu_x4{suffix}.safetensors"), sd, dt)

    # LeakyReLU(0.1) ×3, named in the safetensors metadata; ReLU ×2 without a hint.
    m = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=3, act_type="leakyrelu")
    reference("srvgg_lrelu_x3", m, 5, 7, 2)
    save_safetensors(os.path.join(OUT, "srvgg_lrelu_x3.safetensors"), m.state_dict(), metadata={"act_type": "leakyrelu"})
    m = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2, act_type="relu")
    reference("srvgg_relu_x2", m, 5, 7, 3)
    save_safetensors(os.path.join(OUT, "srvgg_relu_x2.safetensors"), m.state_dict())

    # RRDBNet ×4: new layout (.pth wrapped as Real-ESRGAN's {'params_ema': ...} and
    # .safetensors); one block in the old ESRGAN layout.
    m = RRDBNet(num_feat=8, num_block=2, num_grow_ch=4, ups=2)
    reference("rrdb_x4", m, 6, 8, 4)
    sd = m.state_dict()
    torch.save({"params_ema": sd}, os.path.join(OUT, "rrdb_x4.pth"))
    save_safetensors(os.path.join(OUT, "rrdb_x4.safetensors"), sd)
    m = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, ups=2)
    reference("rrdb_x4_old", m, 6, 8, 8)
    torch.save(rrdb_old_keys(m.state_dict(), 2), os.path.join(OUT, "rrdb_x4_old.pth"))

    # ×8 in the old layout, ×2 and ×1 (pixel-unshuffle) in the new one; one block each.
    # ×1 is saved as float16 tensors (HalfStorage), its weights rounded to be exact in it.
    m = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, ups=3)
    reference("rrdb_x8_old", m, 4, 6, 5)
    torch.save(rrdb_old_keys(m.state_dict(), 3), os.path.join(OUT, "rrdb_x8_old.pth"))
    m = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, ups=2, unshuffle=2)
    reference("rrdb_x2", m, 6, 8, 6)
    save_safetensors(os.path.join(OUT, "rrdb_x2.safetensors"), m.state_dict())
    m = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, ups=2, unshuffle=4)
    bf16_exact(m)
    reference("rrdb_x1", m, 8, 12, 7)
    half = OrderedDict((k, v.half()) for k, v in m.state_dict().items())
    torch.save({"params": half}, os.path.join(OUT, "rrdb_x1.pth"))

    malicious()
    span_fixtures()


def span_fixtures():
    """SPAN ×2 with its normalisation, saved after folding (eval_conv and the train-time
    branches, as update_params leaves a checkpoint), and SPAN ×4 without it (`no_norm`),
    saved with the train-time branches only, as float16 (its weights rounded to be exact)."""
    torch.manual_seed(10)
    m = span_small(8, 2, norm=True)
    reference("span_x2", m, 6, 8, 11)
    torch.save(m.state_dict(), os.path.join(OUT, "span_x2.pth"))
    m = span_small(8, 4, norm=False)
    bf16_exact(m)
    reference("span_x4_train", m, 5, 7, 12)
    halves = {}  # one float16 copy per shared tensor, so its storage is still saved once
    half = OrderedDict(
        (k, halves.setdefault(v.untyped_storage().data_ptr(), v.half())) for k, v in m.state_dict().items() if ".eval_conv." not in k
    )
    torch.save(half, os.path.join(OUT, "span_x4_train.pth"))


if __name__ == "__main__":
    if sys.argv[1:] == ["span"]:
        os.makedirs(OUT, exist_ok=True)
        span_fixtures()
    else:
        main()
