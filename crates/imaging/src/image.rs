//! The decoded image: samples, channel layout, depth, alpha and colour profile.
//!
//! Where it sits in the data path: [`decode`](crate::decode()) produces an [`Image`], the
//! pipeline reads and replaces its planes, [`encode`](crate::encode()) writes it out. Alpha is
//! a separate plane because the networks only see colour: the alpha plane is resampled on
//! its own ([`resize_plane_bicubic_u8`](crate::resize_plane_bicubic_u8)) and put back.

use crate::error::ImageError;

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

    /// The samples at 8 bits: 16-bit values are rounded to the nearest 8-bit value
    /// (`round(v / 257)`), 8-bit ones are copied.
    pub fn to_u8(&self) -> Vec<u8> {
        match self {
            Samples::U8(v) => v.clone(),
            Samples::U16(v) => v.iter().map(|&s| u16_to_u8(s)).collect(),
        }
    }

    /// The samples at 16 bits: 8-bit values are widened exactly (`v * 257`, so 255 becomes
    /// 65535), 16-bit ones are copied.
    pub fn to_u16(&self) -> Vec<u16> {
        match self {
            Samples::U8(v) => v.iter().map(|&s| u8_to_u16(s)).collect(),
            Samples::U16(v) => v.clone(),
        }
    }

    /// Whether every sample is the largest value of its depth (an opaque alpha plane).
    pub fn is_all_max(&self) -> bool {
        match self {
            Samples::U8(v) => v.iter().all(|&s| s == u8::MAX),
            Samples::U16(v) => v.iter().all(|&s| s == u16::MAX),
        }
    }
}

/// A 16-bit sample rounded to the nearest 8-bit one: `round(v * 255 / 65535)`. No value
/// lies exactly halfway, so there is no tie rule to choose.
#[inline]
pub fn u16_to_u8(v: u16) -> u8 {
    ((v as u32 + 128) / 257) as u8
}

/// An 8-bit sample widened to 16 bits so that 0 and 255 map to 0 and 65535.
#[inline]
pub fn u8_to_u16(v: u8) -> u16 {
    v as u16 * 257
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
    /// The EXIF of the file (the TIFF structure, no `Exif\0\0` prefix), its orientation set
    /// to 1 since decoding turned the pixels upright (see [`crate::metadata`]).
    pub exif: Option<Vec<u8>>,
    /// The XMP packet of the file.
    pub xmp: Option<Vec<u8>>,
}

impl Image {
    /// Takes `other`'s metadata (ICC profile, EXIF, XMP): for a result made from it.
    pub fn copy_metadata(&mut self, other: &Image) {
        self.icc_profile.clone_from(&other.icc_profile);
        self.exif.clone_from(&other.exif);
        self.xmp.clone_from(&other.xmp);
    }

    /// Drops the metadata.
    pub fn strip_metadata(&mut self) {
        (self.icc_profile, self.exif, self.xmp) = (None, None, None);
    }

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
            exif: None,
            xmp: None,
        }
    }

    pub fn pixel_count(&self) -> usize {
        self.width * self.height
    }

    pub fn is_16bit(&self) -> bool {
        self.color.is_16bit()
    }

    /// An image from its parts, checked with [`Image::validate`].
    pub fn new(
        width: usize,
        height: usize,
        color_kind: ColorKind,
        color: Samples,
        alpha: Option<Samples>,
    ) -> Result<Self, ImageError> {
        let image = Image {
            width,
            height,
            color_kind,
            color,
            alpha,
            icc_profile: None,
            exif: None,
            xmp: None,
        };
        image.validate()?;
        Ok(image)
    }

    /// A 16-bit image without alpha or profile.
    pub fn from_u16(width: usize, height: usize, color_kind: ColorKind, data: Vec<u16>) -> Self {
        assert_eq!(data.len(), width * height * color_kind.channels());
        Image {
            width,
            height,
            color_kind,
            color: Samples::U16(data),
            alpha: None,
            icc_profile: None,
            exif: None,
            xmp: None,
        }
    }

    /// Checks that the planes hold `width * height` pixels each and that alpha has the depth
    /// of the colour samples. The fields are public, so code that reads the planes of an image
    /// it did not build itself calls this first instead of trusting the lengths.
    pub fn validate(&self) -> Result<(), ImageError> {
        let pixels = self.width.checked_mul(self.height).ok_or_else(|| {
            ImageError::internal(format!(
                "image of {}x{} pixels overflows the address space",
                self.width, self.height
            ))
        })?;
        let expected = pixels
            .checked_mul(self.color_kind.channels())
            .ok_or_else(|| ImageError::internal("image size overflows the address space"))?;
        if self.color.len() != expected {
            return Err(ImageError::internal(format!(
                "a {}x{} {:?} image needs {expected} colour samples, it has {}",
                self.width,
                self.height,
                self.color_kind,
                self.color.len()
            )));
        }
        if let Some(alpha) = &self.alpha {
            if alpha.len() != pixels {
                return Err(ImageError::internal(format!(
                    "a {}x{} image needs {pixels} alpha samples, it has {}",
                    self.width,
                    self.height,
                    alpha.len()
                )));
            }
            if alpha.is_16bit() != self.color.is_16bit() {
                return Err(ImageError::internal(
                    "the alpha plane and the colour samples differ in bit depth",
                ));
            }
        }
        Ok(())
    }

    pub fn has_alpha(&self) -> bool {
        self.alpha.is_some()
    }

    /// Bits per sample: 8 or 16.
    pub fn bit_depth(&self) -> u8 {
        if self.is_16bit() { 16 } else { 8 }
    }

    /// Whether the alpha plane exists and every pixel is fully opaque.
    pub fn alpha_is_opaque(&self) -> bool {
        self.alpha.as_ref().is_some_and(Samples::is_all_max)
    }

    /// Removes an alpha plane that is fully opaque, since it carries no information and would
    /// otherwise be resampled and written for nothing. Returns whether it was removed.
    pub fn drop_opaque_alpha(&mut self) -> bool {
        if self.alpha_is_opaque() {
            self.alpha = None;
            true
        } else {
            false
        }
    }

    /// The same image at 8 bits per sample (colour and alpha), 16-bit samples rounded to the
    /// nearest 8-bit value. An 8-bit image is returned unchanged.
    pub fn to_8bit(&self) -> Image {
        if !self.is_16bit() {
            return self.clone();
        }
        Image {
            color: Samples::U8(self.color.to_u8()),
            alpha: self.alpha.as_ref().map(|a| Samples::U8(a.to_u8())),
            icc_profile: self.icc_profile.clone(),
            exif: self.exif.clone(),
            xmp: self.xmp.clone(),
            ..*self
        }
    }

    /// The same image at 16 bits per sample (colour and alpha), widened exactly (`v * 257`).
    /// A 16-bit image is returned unchanged.
    pub fn to_16bit(&self) -> Image {
        if self.is_16bit() {
            return self.clone();
        }
        Image {
            color: Samples::U16(self.color.to_u16()),
            alpha: self.alpha.as_ref().map(|a| Samples::U16(a.to_u16())),
            icc_profile: self.icc_profile.clone(),
            exif: self.exif.clone(),
            xmp: self.xmp.clone(),
            ..*self
        }
    }

    /// The same image with RGB colour: each gray sample repeated three times. Depth, alpha and
    /// profile are kept. An RGB image is returned unchanged.
    pub fn gray_to_rgb(&self) -> Image {
        if self.color_kind == ColorKind::Rgb {
            return self.clone();
        }
        fn triple<T: Copy>(v: &[T]) -> Vec<T> {
            v.iter().flat_map(|&s| [s, s, s]).collect()
        }
        let color = match &self.color {
            Samples::U8(v) => Samples::U8(triple(v)),
            Samples::U16(v) => Samples::U16(triple(v)),
        };
        Image {
            color_kind: ColorKind::Rgb,
            color,
            alpha: self.alpha.clone(),
            icc_profile: self.icc_profile.clone(),
            exif: self.exif.clone(),
            xmp: self.xmp.clone(),
            ..*self
        }
    }

    /// Colour and alpha interleaved per pixel at 8 bits (`RGBA`, `LA`, `RGB` or `L`), the
    /// layout encoders take. 16-bit samples are rounded.
    pub fn interleaved_u8(&self) -> Vec<u8> {
        interleave(
            &self.color.to_u8(),
            self.alpha.as_ref().map(|a| a.to_u8()).as_deref(),
            self.color_kind.channels(),
        )
    }

    /// Colour and alpha interleaved per pixel at 16 bits; 8-bit samples are widened.
    pub fn interleaved_u16(&self) -> Vec<u16> {
        interleave(
            &self.color.to_u16(),
            self.alpha.as_ref().map(|a| a.to_u16()).as_deref(),
            self.color_kind.channels(),
        )
    }
}

/// Colour samples of `channels` per pixel followed by that pixel's alpha sample, if any.
fn interleave<T: Copy>(color: &[T], alpha: Option<&[T]>, channels: usize) -> Vec<T> {
    match alpha {
        None => color.to_vec(),
        Some(alpha) => {
            let mut out = Vec::with_capacity(color.len() + alpha.len());
            for (px, &a) in color.chunks_exact(channels).zip(alpha) {
                out.extend_from_slice(px);
                out.push(a);
            }
            out
        }
    }
}

/// Splits `channels + 1` interleaved samples per pixel into colour and alpha planes.
pub(crate) fn deinterleave<T: Copy>(data: &[T], channels: usize) -> (Vec<T>, Vec<T>) {
    let pixels = data.len() / (channels + 1);
    let mut color = Vec::with_capacity(pixels * channels);
    let mut alpha = Vec::with_capacity(pixels);
    for px in data.chunks_exact(channels + 1) {
        color.extend_from_slice(&px[..channels]);
        alpha.push(px[channels]);
    }
    (color, alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u16_to_u8_rounds_to_nearest_for_every_value() {
        for v in 0..=u16::MAX {
            let expected = (v as f64 * 255.0 / 65535.0).round() as u8;
            assert_eq!(u16_to_u8(v), expected, "16-bit value {v}");
        }
    }

    #[test]
    fn u8_round_trips_through_16_bits() {
        for v in 0..=u8::MAX {
            assert_eq!(u16_to_u8(u8_to_u16(v)), v, "8-bit value {v}");
        }
        assert_eq!(u8_to_u16(255), 65535);
    }

    fn rgba16() -> Image {
        Image::new(
            2,
            1,
            ColorKind::Rgb,
            Samples::U16(vec![0, 128, 65535, 257, 32896, 65407]),
            Some(Samples::U16(vec![65535, 0])),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn to_8bit_rounds_colour_and_alpha_and_keeps_the_rest() {
        let mut image = rgba16();
        image.icc_profile = Some(vec![1, 2, 3]);
        let small = image.to_8bit();
        assert_eq!(small.color, Samples::U8(vec![0, 0, 255, 1, 128, 255]));
        assert_eq!(small.alpha, Some(Samples::U8(vec![255, 0])));
        assert_eq!(small.icc_profile, image.icc_profile);
        assert_eq!(
            (small.width, small.height, small.color_kind),
            (2, 1, ColorKind::Rgb)
        );
        assert_eq!(small.to_16bit().to_8bit(), small, "8 → 16 → 8 is lossless");
        assert_eq!(small.to_8bit(), small, "8-bit input is unchanged");
    }

    #[test]
    fn gray_to_rgb_repeats_samples_and_keeps_alpha() {
        let gray = Image::new(
            3,
            1,
            ColorKind::Gray,
            Samples::U8(vec![10, 20, 30]),
            Some(Samples::U8(vec![1, 2, 3])),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let rgb = gray.gray_to_rgb();
        assert_eq!(rgb.color_kind, ColorKind::Rgb);
        assert_eq!(
            rgb.color,
            Samples::U8(vec![10, 10, 10, 20, 20, 20, 30, 30, 30])
        );
        assert_eq!(rgb.alpha, gray.alpha);
        assert_eq!(rgb.gray_to_rgb(), rgb, "RGB input is unchanged");
    }

    #[test]
    fn interleaving_puts_alpha_after_each_pixel() {
        let image = rgba16();
        assert_eq!(
            image.interleaved_u16(),
            vec![0, 128, 65535, 65535, 257, 32896, 65407, 0]
        );
        assert_eq!(image.interleaved_u8(), vec![0, 0, 255, 255, 1, 128, 255, 0]);
        let (c, a) = deinterleave(&image.interleaved_u16(), 3);
        assert_eq!(Samples::U16(c), image.color);
        assert_eq!(Some(Samples::U16(a)), image.alpha);
    }

    #[test]
    fn validate_reports_mismatched_planes() {
        let bad_color = Image::new(2, 2, ColorKind::Rgb, Samples::U8(vec![0; 11]), None);
        let e = bad_color.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("needs 12 colour samples, it has 11"),
            "got {e:?}"
        );
        let bad_alpha = Image::new(
            2,
            2,
            ColorKind::Gray,
            Samples::U8(vec![0; 4]),
            Some(Samples::U8(vec![0; 3])),
        );
        assert!(bad_alpha.is_err(), "short alpha plane accepted");
        let mixed = Image::new(
            1,
            1,
            ColorKind::Gray,
            Samples::U8(vec![0]),
            Some(Samples::U16(vec![0])),
        );
        assert!(mixed.is_err(), "alpha at another depth accepted");
    }

    #[test]
    fn opaque_alpha_is_dropped_and_translucent_kept() {
        let mut image = rgba16();
        assert!(!image.drop_opaque_alpha(), "a 0 alpha sample is not opaque");
        image.alpha = Some(Samples::U16(vec![65535, 65535]));
        assert!(image.drop_opaque_alpha());
        assert!(!image.has_alpha());
    }
}
