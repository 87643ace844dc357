//! Pixels in and out of superres.
//!
//! Where it sits in the data path: uploaded bytes are [`decode()`]d here into an [`Image`]
//! (format recognised from the content, size checked against [`Limits`] before decoding,
//! orientation applied, alpha split off, ICC profile, EXIF and XMP kept); the pipeline converts it with the
//! exact colour arithmetic of [`opencv`], cuts it into overlapping [`tiles`], and upscales
//! alpha or shrinks oversized inputs with the helpers of [`resample`]; the result is
//! [`encode()`]d back to PNG, JPEG or WebP bytes here. Every failure is an [`ImageError`]
//! whose [`kind`](ImageError::kind) maps to an HTTP status.

pub mod decode;
pub mod encode;
pub mod error;
pub mod image;
pub mod metadata;
pub mod opencv;
pub mod resample;
pub mod tiles;

pub use self::decode::{
    ACCEPTED_FORMATS, Header, InputFormat, Limits, decode, probe, probe_header, sniff_format,
};
pub use self::encode::{EncodeOptions, OutputFormat, PngCompression, encode, encode_to};
pub use self::error::{ErrorKind, ImageError};
pub use self::image::{ColorKind, Image, Samples};
pub use self::resample::{
    downscale_lanczos, fit_within, resize_lanczos, resize_plane_bicubic, resize_plane_bicubic_u8,
    resize_plane_bicubic_u16,
};
