//! Family detection in one place: which pre- and post-processing a network expects, from its
//! file format and its channel count. Every reader goes through [`detect`] (via
//! [`crate::describe`]); `--family` overrides are checked against [`Family::channels`].

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
