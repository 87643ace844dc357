//! Family detection in one place: which pre- and post-processing a network expects, from its
//! file format and its channel count, and which architecture it is (see [`architecture`]).
//! Every reader goes through [`detect`] (via
//! [`crate::describe`]); `--family` overrides are checked against [`Family::channels`].

use superres_graph::{Activation, BinaryOp, Graph, Op, ResizeMode, ValueId};

use crate::Format;

/// The pre- and post-processing a network expects around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// OpenCV's EDSR convention: 3 channels, BGR order, `value - DIV2K mean`, output likewise.
    Edsr,
    /// OpenCV's ESPCN/FSRCNN/LapSRN convention: the Y of YCrCb divided by 255; chroma is
    /// upscaled bilinearly outside the network.
    YChannel,
    /// The common ONNX convention (Real-ESRGAN and most PyTorch exports): RGB in `[0, 1]`.
    Rgb,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Edsr => "edsr",
            Family::YChannel => "y",
            Family::Rgb => "rgb",
        }
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "edsr" | "bgr" => Ok(Family::Edsr),
            "y" | "ychannel" | "y-channel" | "espcn" | "fsrcnn" | "lapsrn" => Ok(Family::YChannel),
            "rgb" => Ok(Family::Rgb),
            other => Err(format!(
                "unknown model family '{other}' (expected edsr, y or rgb)"
            )),
        }
    }
}

impl Family {
    /// The image channels a network of this family takes and returns.
    pub fn channels(self) -> usize {
        match self {
            Family::Edsr | Family::Rgb => 3,
            Family::YChannel => 1,
        }
    }
}

/// The family a network of `format` taking `channels` channels expects: one channel is
/// always the Y of YCrCb; three channels are OpenCV's EDSR convention in a TensorFlow
/// GraphDef (the only 3-channel `.pb` models are OpenCV's EDSR), RGB in `[0, 1]` in every
/// other format (PyTorch and its ONNX and ncnn exports). `None` for any other count.
pub fn detect(format: Format, channels: usize) -> Option<Family> {
    match (format, channels) {
        (_, 1) => Some(Family::YChannel),
        (Format::TensorFlow, 3) => Some(Family::Edsr),
        (Format::Onnx | Format::PyTorch | Format::Ncnn, 3) => Some(Family::Rgb),
        _ => None,
    }
}

/// The architecture a graph of `format` is recognised as, from its structure (the same
/// recogniser for every reader, so a PyTorch checkpoint and its ONNX or ncnn export read
/// alike). `None` when no known pattern fits:
///
/// - `RRDBNet` (ESRGAN, Real-ESRGAN x4plus, BSRGAN): dense blocks, 4 channel concatenations
///   per residual dense block;
/// - `SPAN`: one 4-input channel concatenation and 18 sigmoids (six blocks of two SiLUs and
///   one parameter-free attention);
/// - `SRVGGNetCompact` (Real-ESRGAN Compact): a plain convolution chain ending in one pixel
///   shuffle, added to a nearest upscale of the input (and possibly resized once more);
/// - `CUNet` (waifu2x): U-Nets of unpadded convolutions with squeeze-and-excitation blocks;
/// - `UpConv7` (waifu2x): seven unpadded convolutions, the last a transposed one, run behind
///   replicated edges;
/// - in a TensorFlow GraphDef (OpenCV's dnn_superres models): `EDSR` (3 channels), `LapSRN`
///   (several outputs or a Laplacian pyramid of pixel shuffles and adds), `FSRCNN` (PReLU, a
///   transposed convolution at the end), `ESPCN` (tanh, a pixel shuffle at the end).
pub fn architecture(format: Format, graph: &Graph) -> Option<&'static str> {
    let count = |f: &dyn Fn(&Op) -> bool| graph.nodes.iter().filter(|n| f(&n.op)).count();
    let concats = count(&|op| matches!(op, Op::Concat));
    let shuffles = count(&|op| matches!(op, Op::DepthToSpace { .. }));
    let adds = count(&|op| matches!(op, Op::Binary(BinaryOp::Add)));
    let activation = |want: fn(&Activation) -> bool| {
        graph.nodes.iter().any(|n| match &n.op {
            Op::Activation(a) => want(a),
            Op::Conv2d(c) => c.epilogue.activation.as_ref().is_some_and(want),
            _ => false,
        })
    };
    if format == Format::TensorFlow {
        let channels = graph.input_channels()?;
        return match channels {
            3 => Some("EDSR"),
            1 if graph.outputs.len() > 1 || (shuffles > 1 && adds > 0) => Some("LapSRN"),
            1 if activation(|a| matches!(a, Activation::PRelu(_))) => Some("FSRCNN"),
            1 if activation(|a| matches!(a, Activation::Tanh)) && shuffles == 1 => Some("ESPCN"),
            _ => None,
        };
    }
    let sigmoids = graph
        .nodes
        .iter()
        .filter(|n| match &n.op {
            Op::Activation(a) => matches!(a, Activation::Sigmoid),
            Op::Conv2d(c) => matches!(c.epilogue.activation, Some(Activation::Sigmoid)),
            _ => false,
        })
        .count();
    let four_way_concat = graph
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Concat) && n.inputs.len() == 4);
    let attention = count(&|op| matches!(op, Op::SqueezeExcite(_)));
    let unpadded = graph
        .nodes
        .get(1)
        .is_some_and(|n| matches!(n.op, Op::Border(_)));
    if unpadded && attention > 0 {
        return Some("CUNet");
    }
    let convs = count(&|op| matches!(op, Op::Conv2d(_)));
    if unpadded && attention == 0 && convs == 7 && shuffles == 1 && adds == 0 {
        return Some("UpConv7");
    }
    if concats == 1 && four_way_concat && sigmoids == 18 && shuffles <= 1 {
        return Some("SPAN");
    }
    if concats >= 4 && concats.is_multiple_of(4) {
        return Some("RRDBNet");
    }
    if concats == 0 && shuffles == 1 && is_compact_tail(graph) {
        return Some("SRVGGNetCompact");
    }
    None
}

/// Whether the first output is `pixel_shuffle(convs(x)) + nearest_upscale(x)` (or its
/// optimised form, `pixel_shuffle(convs(x) + spread(x))`), possibly resized once more (the ncnn packs of Real-ESRGAN's animevideov3 ×2 and ×3 resize a ×4
/// network's output).
fn is_compact_tail(graph: &Graph) -> bool {
    let Some((_, out)) = graph.outputs.first() else {
        return false;
    };
    let mut node = graph.node(*out);
    if let (Op::Resize { .. }, [inner]) = (&node.op, &node.inputs[..]) {
        node = graph.node(*inner);
    }
    let op = |v: ValueId| &graph.node(v).op;
    let is_input = |v: ValueId| matches!(op(v), Op::Input { .. });
    // Optimised: the input, spread by a 1×1 convolution, is the last convolution's residual
    // before the shuffle (`passes`' `skip_before_depth_to_space`).
    if let (Op::DepthToSpace { .. }, [conv]) = (&node.op, &node.inputs[..]) {
        let conv = graph.node(*conv);
        let spread_input = |v: &ValueId| {
            matches!(op(*v), Op::Conv2d(c) if c.kh == 1 && c.kw == 1)
                && graph.node(*v).inputs.first().is_some_and(|&x| is_input(x))
        };
        return matches!(&conv.op, Op::Conv2d(c) if c.epilogue.residual.is_some())
            && conv.inputs.get(1).is_some_and(spread_input);
    }
    if !matches!(node.op, Op::Binary(BinaryOp::Add)) || node.inputs.len() != 2 {
        return false;
    }
    let upscaled_input = |v: ValueId| {
        matches!(
            op(v),
            Op::Resize {
                mode: ResizeMode::Nearest,
                ..
            }
        ) && graph.node(v).inputs.first().is_some_and(|&x| is_input(x))
    };
    let shuffled = |v: ValueId| matches!(op(v), Op::DepthToSpace { .. });
    let (a, b) = (node.inputs[0], node.inputs[1]);
    (shuffled(a) && upscaled_input(b)) || (shuffled(b) && upscaled_input(a))
}
