#!/usr/bin/env python3
"""Builds the ONNX fixtures of crates/import/tests and their ONNX Runtime outputs.

Regenerate (from the repository root):

    python3 -m venv /tmp/onnxenv && /tmp/onnxenv/bin/pip install onnx onnxruntime numpy
    /tmp/onnxenv/bin/python tools/onnx_fixtures/make_srvgg.py

Writes into crates/import/tests/fixtures/:

* srvgg_compact_x4.onnx: the shape of Real-ESRGAN's SRVGGNetCompact (conv 3->F, PReLU,
  N x (conv F->F, PReLU), conv F->3*s*s, pixel shuffle, plus the nearest-upsampled input),
  F=16, N=4, s=4, random weights; the pixel shuffle is DepthToSpace CRD.
* srvgg_compact_x4_reshape.onnx: the same network with the pixel shuffle written as
  PyTorch's opset-9 export does it: Reshape [N,C,r,r,H,W] -> Transpose [0,1,4,2,5,3] ->
  Reshape [N,C,H*r,W*r].
* srvgg_compact_x4_in.npy / _out.npy: a 1x3x12x10 input and ONNX Runtime's output.
* op_<name>.onnx with op_<name>_in.npy and op_<name>_out<k>.npy (one per graph output):
  small graphs, one per operator family.
* bad_<name>.onnx: models the importer must reject with a clear error.

Everything is deterministic (fixed seeds); no torch needed.
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "crates", "import", "tests", "fixtures")


def f32(a):
    return np.asarray(a, dtype=np.float32)


def init(name, arr, raw=True):
    """An initializer stored as raw_data (raw=True) or as float_data/int64_data."""
    arr = np.asarray(arr)
    if raw:
        return numpy_helper.from_array(arr, name)
    dtype = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}[arr.dtype]
    return helper.make_tensor(name, dtype, arr.shape, arr.flatten().tolist(), raw=False)


def image_info(name, c, h="H", w="W"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", c, h, w])


def save_model(name, nodes, inits, inputs, outputs, opset=17):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(OUT, name + ".onnx")
    onnx.save(model, path)
    return path


def run_and_save(name, path, x, prefix=None):
    prefix = prefix or name
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    np.save(os.path.join(OUT, prefix + "_in.npy"), x)
    for k, o in enumerate(outs):
        np.save(os.path.join(OUT, f"{prefix}_out{k}.npy"), f32(o))
    return outs


def conv_node(name, x, w, b, y, **attrs):
    inputs = [x, w] + ([b] if b else [])
    return helper.make_node("Conv", inputs, [y], name=name, **attrs)


def srvgg(rng, variant):
    F, N, S = 16, 4, 4
    nodes, inits = [], []

    def conv(i, cin, cout, x, y):
        w = f32(rng.normal(0, (2.0 / (9 * cin)) ** 0.5, (cout, cin, 3, 3)))
        b = f32(rng.normal(0, 0.05, cout))
        inits.extend([init(f"body.{i}.weight", w), init(f"body.{i}.bias", b)])
        nodes.append(conv_node(f"/body.{i}/Conv", x, f"body.{i}.weight", f"body.{i}.bias", y,
                               kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]))

    def prelu(i, c, x, y):
        a = f32(rng.uniform(0.05, 0.3, (c, 1, 1)))
        inits.append(init(f"body.{i}.weight", a))
        nodes.append(helper.make_node("PRelu", [x, f"body.{i}.weight"], [y], name=f"/body.{i}/PRelu"))

    conv(0, 3, F, "input", "c0")
    prelu(1, F, "c0", "a0")
    cur, idx = "a0", 2
    for k in range(N):
        conv(idx, F, F, cur, f"c{k + 1}")
        prelu(idx + 1, F, f"c{k + 1}", f"a{k + 1}")
        cur, idx = f"a{k + 1}", idx + 2
    conv(idx, F, 3 * S * S, cur, "last")
    if variant == "d2s":
        nodes.append(helper.make_node("DepthToSpace", ["last"], ["shuffled"], name="/upsampler/DepthToSpace",
                                      blocksize=S, mode="CRD"))
    else:
        H, W = 12, 10
        inits.append(init("shape6", np.array([1, 3, S, S, H, W], dtype=np.int64)))
        inits.append(init("shape4", np.array([1, 3, H * S, W * S], dtype=np.int64)))
        nodes += [
            helper.make_node("Reshape", ["last", "shape6"], ["r6"], name="/upsampler/Reshape"),
            helper.make_node("Transpose", ["r6"], ["t6"], name="/upsampler/Transpose", perm=[0, 1, 4, 2, 5, 3]),
            helper.make_node("Reshape", ["t6", "shape4"], ["shuffled"], name="/upsampler/Reshape_1"),
        ]
    inits.append(init("scales", f32([1, 1, S, S])))
    nodes.append(helper.make_node("Resize", ["input", "", "scales"], ["base"], name="/Resize", mode="nearest"))
    nodes.append(helper.make_node("Add", ["shuffled", "base"], ["output"], name="/Add"))
    if variant == "d2s":
        inputs, outputs = [image_info("input", 3)], [image_info("output", 3)]
        name = "srvgg_compact_x4"
    else:
        inputs, outputs = [image_info("input", 3, 12, 10)], [image_info("output", 3, 48, 40)]
        name = "srvgg_compact_x4_reshape"
    return save_model(name, nodes, inits, inputs, outputs)


def make_srvgg():
    x = f32(np.random.default_rng(7).uniform(0, 1, (1, 3, 12, 10)))
    p1 = srvgg(np.random.default_rng(1), "d2s")
    o1 = run_and_save("srvgg_compact_x4", p1, x)
    p2 = srvgg(np.random.default_rng(1), "reshape")
    o2 = run_and_save("srvgg_compact_x4_reshape", p2, x, prefix="srvgg_compact_x4_reshape")
    assert np.allclose(o1[0], o2[0], atol=1e-6), "the two pixel shuffles disagree"
    # The reshape variant shares the input and the output; keep one copy of each.
    os.remove(os.path.join(OUT, "srvgg_compact_x4_reshape_in.npy"))
    os.remove(os.path.join(OUT, "srvgg_compact_x4_reshape_out0.npy"))


def op_models():
    rng = np.random.default_rng(42)
    C, H, W = 4, 5, 6
    x = f32(rng.normal(0, 1, (1, C, H, W)))

    def out(name):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None] * 4)

    def simple(name, nodes, inits, outs, c=C, h="H", w="W", opset=17, inp=None):
        p = save_model("op_" + name, nodes, inits, [image_info("x", c, h, w)], [out(o) for o in outs], opset)
        run_and_save("op_" + name, p, x if inp is None else inp)

    # Conv: explicit asymmetric pads, bias inline as float_data.
    simple("conv_pads", [conv_node("conv", "x", "w", "b", "y", pads=[1, 0, 2, 1])],
           [init("w", f32(rng.normal(0, 0.3, (6, C, 3, 3))), raw=False), init("b", f32(rng.normal(0, 0.1, 6)), raw=False)],
           ["y"])
    # Conv: stride 2, dilation 2, 2 groups.
    simple("conv_stride_group", [conv_node("conv", "x", "w", "b", "y", pads=[2, 2, 2, 2], strides=[2, 2],
                                           dilations=[2, 2], group=2)],
           [init("w", f32(rng.normal(0, 0.3, (8, C // 2, 3, 3)))), init("b", f32(rng.normal(0, 0.1, 8)))], ["y"])
    # Conv: even kernel with SAME_UPPER and SAME_LOWER, no bias.
    simple("conv_autopad", [
        conv_node("upper", "x", "w", None, "y0", auto_pad="SAME_UPPER"),
        conv_node("lower", "x", "w", None, "y1", auto_pad="SAME_LOWER"),
        conv_node("valid", "x", "w", None, "y2", auto_pad="VALID"),
    ], [init("w", f32(rng.normal(0, 0.3, (3, C, 4, 2))))], ["y0", "y1", "y2"])
    # ConvTranspose: the usual x2 (k4 s2 p1) and an FSRCNN-like x3 (k9 s3 p4 output_padding 2).
    simple("conv_transpose", [
        helper.make_node("ConvTranspose", ["x", "w", "b"], ["y0"], name="up2", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["x", "w9"], ["y1"], name="up3", strides=[3, 3], pads=[4, 4, 4, 4],
                         output_padding=[2, 2]),
        helper.make_node("ConvTranspose", ["x", "w3"], ["y2"], name="up2k3", strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1]),
    ], [init("w", f32(rng.normal(0, 0.3, (C, 3, 4, 4)))), init("b", f32(rng.normal(0, 0.1, 3))),
        init("w9", f32(rng.normal(0, 0.3, (C, 1, 9, 9)))), init("w3", f32(rng.normal(0, 0.3, (C, 2, 3, 3))))],
           ["y0", "y1", "y2"])
    # Binary operators: image-image, per-channel, scalar and constant-first operands.
    simple("binary", [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Add", ["x", "r"], ["y0"], name="add_tensor"),
        helper.make_node("Sub", ["x", "pc"], ["y1"], name="sub_per_channel"),
        helper.make_node("Mul", ["x", "s"], ["y2"], name="mul_scalar"),
        helper.make_node("Div", ["x", "pc3"], ["y3"], name="div_per_channel"),
        helper.make_node("Sub", ["s", "x"], ["y4"], name="sub_const_first"),
        helper.make_node("Mul", ["pc", "x"], ["y5"], name="mul_const_first"),
        helper.make_node("Add", ["x", "one"], ["y6"], name="add_rank1_scalar"),
        helper.make_node("Mul", ["x", "r"], ["y7"], name="mul_tensor"),
    ], [init("pc", f32(rng.uniform(0.5, 2, (1, C, 1, 1)))), init("s", f32(1.5), raw=False),
        init("pc3", f32(rng.uniform(0.5, 2, (C, 1, 1)))), init("one", f32([0.25]))],
           ["y0", "y1", "y2", "y3", "y4", "y5", "y6", "y7"])
    # Activations.
    simple("activations", [
        helper.make_node("Relu", ["x"], ["y0"], name="relu"),
        helper.make_node("PRelu", ["x", "slope_c"], ["y1"], name="prelu_c"),
        helper.make_node("PRelu", ["x", "slope_1"], ["y2"], name="prelu_1"),
        helper.make_node("LeakyRelu", ["x"], ["y3"], name="leaky", alpha=0.2),
        helper.make_node("LeakyRelu", ["x"], ["y4"], name="leaky_default"),
        helper.make_node("Sigmoid", ["x"], ["y5"], name="sigmoid"),
        helper.make_node("Tanh", ["x"], ["y6"], name="tanh"),
        helper.make_node("Clip", ["x", "lo", "hi"], ["y7"], name="clip"),
        helper.make_node("Clip", ["x", "", "hi"], ["y8"], name="clip_max_only"),
    ], [init("slope_c", f32(rng.uniform(0, 0.5, (C, 1, 1)))), init("slope_1", f32([0.3])),
        init("lo", f32(-0.5)), init("hi", f32(0.75))], [f"y{k}" for k in range(9)])
    # Clip with attributes (opset 10).
    simple("clip_attrs", [helper.make_node("Clip", ["x"], ["y"], name="clip", min=-0.25, max=0.5)], [], ["y"],
           opset=10)
    # DepthToSpace in both modes.
    x8 = f32(rng.normal(0, 1, (1, 8, 3, 4)))
    simple("depth_to_space", [
        helper.make_node("DepthToSpace", ["x"], ["y0"], name="dcr", blocksize=2),
        helper.make_node("DepthToSpace", ["x"], ["y1"], name="crd", blocksize=2, mode="CRD"),
    ], [], ["y0", "y1"], c=8, inp=x8)
    # Resize: nearest/linear by scales, nearest by sizes (fixed input), asymmetric floor x3.
    simple("resize", [
        helper.make_node("Resize", ["x", "", "sc2"], ["y0"], name="nearest2", mode="nearest"),
        helper.make_node("Resize", ["x", "", "sc2"], ["y1"], name="linear2", mode="linear"),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y2"], name="sizes3", mode="nearest"),
        helper.make_node("Resize", ["x", "", "sc3"], ["y3"], name="asym3", mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Resize", ["x", "roi", "sc4"], ["y4"], name="linear4_pytorch", mode="linear",
                         coordinate_transformation_mode="pytorch_half_pixel"),
    ], [init("sc2", f32([1, 1, 2, 2])), init("sc3", f32([1, 1, 3, 3])), init("sc4", f32([1, 1, 4, 4])),
        init("sizes", np.array([1, C, 3 * H, 3 * W], dtype=np.int64)), init("roi", f32([]))],
           ["y0", "y1", "y2", "y3", "y4"], h=H, w=W)
    # Upsample (opset 9, scales as an input).
    simple("upsample", [helper.make_node("Upsample", ["x", "sc"], ["y"], name="up", mode="nearest")],
           [init("sc", f32([1, 1, 2, 2]))], ["y"], opset=9)
    # Concat along channels, Constant and Identity.
    cval = helper.make_tensor("cval", TensorProto.FLOAT, [1, C, 1, 1], rng.normal(0, 1, C).tolist())
    simple("concat_constant", [
        helper.make_node("Constant", [], ["k"], name="const", value=cval),
        helper.make_node("Constant", [], ["kf"], name="const_float", value_float=0.5),
        helper.make_node("Add", ["x", "k"], ["a"], name="add_const"),
        helper.make_node("Mul", ["x", "kf"], ["m"], name="mul_const"),
        helper.make_node("Identity", ["a"], ["ai"], name="ident"),
        helper.make_node("Concat", ["ai", "x", "m"], ["y0"], name="concat", axis=1),
        helper.make_node("Concat", ["x", "ai"], ["y1"], name="concat_neg", axis=-3),
    ], [], ["y0", "y1"])
    # A dynamic-size nearest x2 whose sizes come from Shape/Gather/Cast/Mul/Unsqueeze/Concat,
    # the way older PyTorch exports write F.interpolate(scale_factor=2).
    nodes = [helper.make_node("Shape", ["x"], ["shp"], name="shape")]
    parts = []
    for ax in (2, 3):
        nodes += [
            helper.make_node("Gather", ["shp", f"i{ax}"], [f"g{ax}"], name=f"gather{ax}", axis=0),
            helper.make_node("Cast", [f"g{ax}"], [f"f{ax}"], name=f"cast{ax}", to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"f{ax}", "two"], [f"m{ax}"], name=f"mul{ax}"),
            helper.make_node("Floor", [f"m{ax}"], [f"fl{ax}"], name=f"floor{ax}"),
            helper.make_node("Cast", [f"fl{ax}"], [f"c{ax}"], name=f"cast_back{ax}", to=TensorProto.INT64),
            helper.make_node("Unsqueeze", [f"c{ax}", "axes0"], [f"u{ax}"], name=f"unsqueeze{ax}"),
        ]
        parts.append(f"u{ax}")
    nodes += [
        helper.make_node("Slice", ["shp", "st", "en"], ["nc"], name="slice"),
        helper.make_node("Concat", ["nc"] + parts, ["sizes"], name="concat_sizes", axis=0),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="resize", mode="nearest"),
    ]
    simple("shape_subgraph", nodes, [
        init("i2", np.array(2, dtype=np.int64)), init("i3", np.array(3, dtype=np.int64)),
        init("two", f32(2.0)), init("axes0", np.array([0], dtype=np.int64)),
        init("st", np.array([0], dtype=np.int64)), init("en", np.array([2], dtype=np.int64)),
    ], ["y"])


def bad_models():
    C = 3
    # An operator the importer does not know, on a named node.
    save_model("bad_unsupported_op", [helper.make_node("Softmax", ["x"], ["y"], name="my_softmax", axis=1)], [],
               [image_info("x", C)], [image_info("y", C)])
    # Weights in an external file.
    w = numpy_helper.from_array(f32(np.zeros((C, C, 1, 1))), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="weights.bin")
    graph = helper.make_graph([conv_node("conv", "x", "w", None, "y")], "ext", [image_info("x", C)],
                              [image_info("y", C)], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, os.path.join(OUT, "bad_external_data.onnx"))
    # A Reshape that is not part of a pixel shuffle.
    save_model("bad_reshape", [helper.make_node("Reshape", ["x", "shape"], ["y"], name="flatten_it")],
               [init("shape", np.array([1, -1], dtype=np.int64))], [image_info("x", C, 4, 4)],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])])


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make_srvgg()
    op_models()
    bad_models()
    for f in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, f)):8d}  {f}")
