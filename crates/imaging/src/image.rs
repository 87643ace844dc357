//! The decoded image: samples, channel layout, depth, alpha and colour profile.

/// Colour channels of an image, alpha excluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorKind {
    Gray,
    /// Red, green, blue, interleaved in that order.
    Rgb,
}

impl ColorKind {
    pub fn channels(self) -> usize {
        match self {
            ColorKind::Gray => 1,
            ColorKind::Rgb => 3,
        }
    }
}

/// Interleaved samples at 8 or 16 bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

impl Samples {
    pub fn len(&self) -> usize {
        match self {
            Samples::U8(v) => v.len(),
            Samples::U16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_16bit(&self) -> bool {
        matches!(self, Samples::U16(_))
    }
}

/// A decoded image. `color` holds `width * height * color.channels()` samples; `alpha`, if
/// any, is a separate plane of `width * height` samples at the same depth.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub color_kind: ColorKind,
    pub color: Samples,
    pub alpha: Option<Samples>,
    /// The embedded ICC colour profile, carried to the output unchanged.
    pub icc_profile: Option<Vec<u8>>,
}

impl Image {
    /// An 8-bit image without alpha or profile.
    pub fn from_u8(width: usize, height: usize, color_kind: ColorKind, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width * height * color_kind.channels());
        Image {
            width,
            height,
            color_kind,
            color: Samples::U8(data),
            alpha: None,
            icc_profile: None,
        }
    }

    pub fn pixel_count(&self) -> usize {
        self.width * self.height
    }

    pub fn is_16bit(&self) -> bool {
        self.color.is_16bit()
    }
}
