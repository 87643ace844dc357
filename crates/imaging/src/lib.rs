//! Pixels in and out of superres.
//!
//! Where it sits in the data path: bytes are decoded here into an [`Image`] (alpha split off,
//! orientation applied, ICC profile kept); the pipeline converts it with the exact colour
//! arithmetic of [`opencv`] and cuts it into overlapping [`tiles`]; the result is encoded
//! back to bytes here.

pub mod image;
pub mod opencv;
pub mod tiles;

pub use image::{ColorKind, Image, Samples};
