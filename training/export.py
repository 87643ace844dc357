"""Export a trained checkpoint to ONNX (opset 17) and verify it with onnxruntime.

The graph is written explicitly with onnx.helper so it contains only
Conv, PRelu, DepthToSpace (mode CRD), Resize (linear, half_pixel, scales) and Add:
  input [1,1,H,W] float32 (Y/255)  ->  output [1,1,sH,sW] float32 (Y/255, unclipped)

Usage: python training/export.py --ckpt training/runs/x3/final.pt --out models/default_x3.onnx
"""
import argparse, os
import numpy as np
import onnx
from onnx import helper, TensorProto, numpy_helper
import torch

from model import CompactSR

HERE = os.path.dirname(os.path.abspath(__file__))


def build_onnx(model):
    s = model.scale
    inits, nodes = [], []
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    prelus = [m for m in model.body if isinstance(m, torch.nn.PReLU)]
    x = "input"
    for i, conv in enumerate(convs):
        w, b = f"conv{i}.weight", f"conv{i}.bias"
        inits += [numpy_helper.from_array(conv.weight.detach().numpy().astype(np.float32), w),
                  numpy_helper.from_array(conv.bias.detach().numpy().astype(np.float32), b)]
        y = f"conv{i}"
        nodes.append(helper.make_node("Conv", [x, w, b], [y], name=y, kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1))
        x = y
        if i < len(prelus):
            sl = f"prelu{i}.slope"
            inits.append(numpy_helper.from_array(
                prelus[i].weight.detach().numpy().astype(np.float32).reshape(-1, 1, 1), sl))
            y = f"prelu{i}"
            nodes.append(helper.make_node("PRelu", [x, sl], [y], name=y))
            x = y
    nodes.append(helper.make_node("DepthToSpace", [x], ["residual"], name="depth_to_space",
                                  blocksize=s, mode="CRD"))
    inits.append(numpy_helper.from_array(np.array([1, 1, s, s], np.float32), "resize.scales"))
    nodes.append(helper.make_node("Resize", ["input", "", "resize.scales"], ["base"], name="resize",
                                  mode="linear", coordinate_transformation_mode="half_pixel"))
    nodes.append(helper.make_node("Add", ["residual", "base"], ["output"], name="add"))
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, "H", "W"])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, f"H*{s}", f"W*{s}"])
    graph = helper.make_graph(nodes, f"compact_sr_x{s}", [inp], [out], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                          producer_name="superres-training")
    m.ir_version = 8
    m.doc_string = (f"Y-channel x{s} super-resolution (SRVGGNetCompact-style, F={model.feats}, "
                    f"n={model.n_body}). input: Y/255 of BT.601 YCrCb (OpenCV), output: Y/255.")
    onnx.checker.check_model(m, full_check=True)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=os.path.join(HERE, "runs", "x3", "final.pt"))
    ap.add_argument("--out", default=os.path.join(HERE, "..", "models", "default_x3.onnx"))
    a = ap.parse_args()
    st = torch.load(a.ckpt, map_location="cpu", weights_only=False)
    model = CompactSR(**st["config"])
    model.load_state_dict(st["model"])
    model.eval()
    m = build_onnx(model)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    onnx.save(m, a.out)
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes)")
    print("ops:", sorted({n.op_type for n in m.graph.node}))

    import onnxruntime as ort
    sess = ort.InferenceSession(a.out, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for h, w in [(17, 23), (64, 48), (120, 161)]:
        x = rng.random((1, 1, h, w), dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"input": x})[0]
        assert got.shape == ref.shape, (got.shape, ref.shape)
        worst = max(worst, float(np.abs(got - ref).max()))
    print(f"onnxruntime vs PyTorch: max abs diff {worst:.2e}")
    assert worst < 1e-4, "ONNX export does not match PyTorch"


if __name__ == "__main__":
    main()
