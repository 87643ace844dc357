//! What a file says about its image besides the pixels (EXIF, XMP, the ICC profile), carried
//! from the upload to the result.
//!
//! Where it sits: [`crate::decode`] fills [`Image::exif`](crate::Image::exif),
//! [`xmp`](crate::Image::xmp) and [`icc_profile`](crate::Image::icc_profile);
//! [`crate::encode`] writes them back into PNG (`eXIf`, `iTXt` `XML:com.adobe.xmp`, `iCCP`),
//! JPEG (`APP1 Exif`, `APP1` XMP, `APP2 ICC_PROFILE`) and WebP (`EXIF`, `XMP `, `ICCP` in an
//! extended container) unless told to strip them.
//!
//! Hand-written here, and small: the two edits no crate makes for us. Decoding applies the
//! EXIF orientation to the pixels, so the copied EXIF must say "upright" (orientation 1) or
//! viewers would turn the result again: [`upright_exif`] patches that one tag in place,
//! leaving every other byte (camera, date, GPS, maker notes) as it was. And the codecs'
//! writers cannot add XMP to a JPEG or metadata to a lossy WebP, so [`jpeg_with_xmp`] inserts
//! the standard segment and [`webp_container`] builds the RIFF container. Every reader here
//! is bounds-checked: metadata is untrusted input like the pixels.

/// The prefix of EXIF data in a JPEG `APP1` segment (and some WebP writers).
const EXIF_PREFIX: &[u8] = b"Exif\0\0";
/// The EXIF tag of the orientation.
const ORIENTATION: u16 = 0x0112;
/// The namespace that opens an XMP `APP1` segment in a JPEG.
const XMP_JPEG_NAMESPACE: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";

/// EXIF as the encoders take it (the TIFF structure, without the `Exif\0\0` prefix), with
/// the orientation set to 1 (upright). `None` when it is not a TIFF structure at all, so
/// damaged EXIF is dropped rather than copied.
pub fn upright_exif(exif: &[u8]) -> Option<Vec<u8>> {
    let tiff = exif.strip_prefix(EXIF_PREFIX).unwrap_or(exif);
    let mut out = tiff.to_vec();
    let big = match out.get(..4)? {
        [b'I', b'I', 42, 0] => false,
        [b'M', b'M', 0, 42] => true,
        _ => return None,
    };
    let u16_at = |b: &[u8], at: usize| -> Option<u16> {
        let v: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        })
    };
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        let v: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        })
    };
    let ifd = u32_at(&out, 4)? as usize;
    let entries = u16_at(&out, ifd)? as usize;
    for i in 0..entries {
        let entry = ifd + 2 + 12 * i;
        let Some(tag) = u16_at(&out, entry) else {
            break;
        };
        // A SHORT (type 3) with one value, stored in the first two bytes of the value field.
        if tag == ORIENTATION
            && u16_at(&out, entry + 2) == Some(3)
            && u32_at(&out, entry + 4) == Some(1)
        {
            let one = if big {
                1u16.to_be_bytes()
            } else {
                1u16.to_le_bytes()
            };
            if let Some(value) = out.get_mut(entry + 8..entry + 10) {
                value.copy_from_slice(&one);
            }
        }
    }
    Some(out)
}

/// The orientation an EXIF block states (1 to 8), if it states one. For tests and checks.
pub fn exif_orientation(exif: &[u8]) -> Option<u16> {
    let tiff = exif.strip_prefix(EXIF_PREFIX).unwrap_or(exif);
    let big = match tiff.get(..4)? {
        [b'I', b'I', 42, 0] => false,
        [b'M', b'M', 0, 42] => true,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let v: [u8; 2] = tiff.get(at..at + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        })
    };
    let ifd = {
        let v: [u8; 4] = tiff.get(4..8)?.try_into().ok()?;
        (if big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }) as usize
    };
    (0..u16_at(ifd)? as usize)
        .map(|i| ifd + 2 + 12 * i)
        .find(|&e| u16_at(e) == Some(ORIENTATION))
        .and_then(|e| u16_at(e + 8))
}

/// A JPEG file with an XMP packet inserted as an `APP1` segment after the segments that
/// open the file (`APP0` JFIF, `APP1` EXIF, `APP2` ICC), where readers look for it. `None`
/// when the packet does not fit one segment (64 KiB; extended XMP is not written) or the
/// bytes are not a JPEG.
pub fn jpeg_with_xmp(jpeg: &[u8], xmp: &[u8]) -> Option<Vec<u8>> {
    let len = 2 + XMP_JPEG_NAMESPACE.len() + xmp.len();
    let len = u16::try_from(len).ok()?;
    if jpeg.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    // Skip SOI, then every APPn segment (FF E0..EF with a 2-byte length).
    let mut at = 2;
    while let Some(&[0xFF, marker]) = jpeg.get(at..at + 2) {
        if !(0xE0..=0xEF).contains(&marker) {
            break;
        }
        let seg = u16::from_be_bytes(jpeg.get(at + 2..at + 4)?.try_into().ok()?) as usize;
        at += 2 + seg;
    }
    if at > jpeg.len() {
        return None;
    }
    let mut out = Vec::with_capacity(jpeg.len() + len as usize + 2);
    out.extend_from_slice(&jpeg[..at]);
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(XMP_JPEG_NAMESPACE);
    out.extend_from_slice(xmp);
    out.extend_from_slice(&jpeg[at..]);
    Some(out)
}

/// Metadata for a WebP container.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebpMetadata<'a> {
    pub icc: Option<&'a [u8]>,
    pub exif: Option<&'a [u8]>,
    pub xmp: Option<&'a [u8]>,
}

/// A WebP file holding the image of `webp` (any simple or extended WebP a encoder wrote)
/// with `meta` added: the extended format's `VP8X` header and the chunks in the order the
/// specification gives (`ICCP`, the image's `ALPH`/`VP8 `/`VP8L`, `EXIF`, `XMP `). The image
/// itself is not re-encoded. `None` when `webp` is not a WebP file or is animated.
pub fn webp_container(
    webp: &[u8],
    width: u32,
    height: u32,
    meta: WebpMetadata<'_>,
) -> Option<Vec<u8>> {
    if webp.get(..4)? != b"RIFF" || webp.get(8..12)? != b"WEBP" {
        return None;
    }
    let mut image_chunks: Vec<(&[u8], &[u8])> = Vec::new();
    let mut at = 12;
    let mut alpha = false;
    while at + 8 <= webp.len() {
        let fourcc = &webp[at..at + 4];
        let size = u32::from_le_bytes(webp[at + 4..at + 8].try_into().ok()?) as usize;
        let data = webp.get(at + 8..at + 8 + size)?;
        match fourcc {
            b"ALPH" => {
                alpha = true;
                image_chunks.push((fourcc, data));
            }
            b"VP8L" => {
                // Lossless: the alpha bit of its header says whether alpha is used.
                alpha |= data.get(4).is_some_and(|b| b & 0x10 != 0);
                image_chunks.push((fourcc, data));
            }
            b"VP8 " => image_chunks.push((fourcc, data)),
            b"ANIM" | b"ANMF" => return None,
            _ => {} // VP8X and any metadata already there are rewritten.
        }
        at += 8 + size + (size & 1);
    }
    if image_chunks.is_empty() || width == 0 || height == 0 || width > 1 << 24 || height > 1 << 24 {
        return None;
    }
    let mut flags = 0u8;
    if meta.icc.is_some() {
        flags |= 0x20;
    }
    if alpha {
        flags |= 0x10;
    }
    if meta.exif.is_some() {
        flags |= 0x08;
    }
    if meta.xmp.is_some() {
        flags |= 0x04;
    }
    let mut vp8x = vec![flags, 0, 0, 0];
    vp8x.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    let mut chunk = |fourcc: &[u8], data: &[u8]| -> Option<()> {
        body.extend_from_slice(fourcc);
        body.extend_from_slice(&u32::try_from(data.len()).ok()?.to_le_bytes());
        body.extend_from_slice(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
        Some(())
    };
    chunk(b"VP8X", &vp8x)?;
    if let Some(icc) = meta.icc {
        chunk(b"ICCP", icc)?;
    }
    for (fourcc, data) in &image_chunks {
        chunk(fourcc, data)?;
    }
    if let Some(exif) = meta.exif {
        chunk(b"EXIF", exif)?;
    }
    if let Some(xmp) = meta.xmp {
        chunk(b"XMP ", xmp)?;
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&u32::try_from(body.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little- or big-endian TIFF with IFD0 holding `tags` (tag, type, count, value).
    pub(crate) fn tiff(big: bool, tags: &[(u16, u16, u32, u32)]) -> Vec<u8> {
        let p16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let p32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut t = if big {
            b"MM\0*".to_vec()
        } else {
            b"II*\0".to_vec()
        };
        t.extend_from_slice(&p32(8));
        t.extend_from_slice(&p16(tags.len() as u16));
        for &(tag, ty, count, value) in tags {
            t.extend_from_slice(&p16(tag));
            t.extend_from_slice(&p16(ty));
            t.extend_from_slice(&p32(count));
            if ty == 3 {
                t.extend_from_slice(&p16(value as u16));
                t.extend_from_slice(&[0, 0]);
            } else {
                t.extend_from_slice(&p32(value));
            }
        }
        t.extend_from_slice(&[0; 4]);
        t
    }

    #[test]
    fn the_orientation_is_set_upright_and_nothing_else_changes() {
        for big in [false, true] {
            let exif = tiff(big, &[(0x010F, 2, 4, 0x41424300), (ORIENTATION, 3, 1, 6)]);
            assert_eq!(exif_orientation(&exif), Some(6));
            let mut prefixed = EXIF_PREFIX.to_vec();
            prefixed.extend_from_slice(&exif);
            let upright = upright_exif(&prefixed).unwrap();
            assert_eq!(exif_orientation(&upright), Some(1));
            let changed: Vec<usize> = (0..exif.len()).filter(|&i| exif[i] != upright[i]).collect();
            assert_eq!(changed.len(), 1, "one byte of the value: {changed:?}");
        }
    }

    #[test]
    fn damaged_exif_is_dropped_or_left_alone_never_a_panic() {
        assert_eq!(upright_exif(b"not exif"), None);
        assert_eq!(upright_exif(b""), None);
        let exif = tiff(false, &[(ORIENTATION, 3, 1, 8)]);
        for cut in 0..exif.len() {
            let _ = upright_exif(&exif[..cut]);
            let _ = exif_orientation(&exif[..cut]);
        }
        // An IFD offset beyond the data.
        let mut far = exif.clone();
        far[4] = 0xFF;
        assert_eq!(upright_exif(&far), None);
    }

    #[test]
    fn xmp_goes_after_the_opening_segments_of_a_jpeg() {
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2, 0xFF, 0xDB, 0, 2, 0xFF, 0xD9,
        ];
        let out = jpeg_with_xmp(&jpeg, b"<x/>").unwrap();
        assert_eq!(&out[..8], &jpeg[..8]);
        assert_eq!(&out[8..10], &[0xFF, 0xE1]);
        let len = u16::from_be_bytes([out[10], out[11]]) as usize;
        assert_eq!(&out[12..12 + XMP_JPEG_NAMESPACE.len()], XMP_JPEG_NAMESPACE);
        assert_eq!(&out[10 + len - 4..10 + len], b"<x/>");
        assert_eq!(&out[10 + len..], &jpeg[8..]);
        assert_eq!(jpeg_with_xmp(b"GIF89a", b"<x/>"), None);
        assert_eq!(jpeg_with_xmp(&jpeg, &vec![b' '; 70_000]), None);
    }

    #[test]
    fn a_webp_container_gets_the_extended_header_and_the_chunks_in_order() {
        let mut simple = b"RIFF\0\0\0\0WEBPVP8 ".to_vec();
        simple.extend_from_slice(&3u32.to_le_bytes());
        simple.extend_from_slice(&[1, 2, 3, 0]);
        let meta = WebpMetadata {
            icc: Some(b"icc"),
            exif: Some(b"II*\0"),
            xmp: Some(b"<x/>"),
        };
        let out = webp_container(&simple, 300, 200, meta).unwrap();
        assert_eq!(&out[..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize,
            out.len() - 8
        );
        let mut fourccs = Vec::new();
        let mut at = 12;
        while at + 8 <= out.len() {
            let size = u32::from_le_bytes(out[at + 4..at + 8].try_into().unwrap()) as usize;
            fourccs.push(String::from_utf8_lossy(&out[at..at + 4]).into_owned());
            if &out[at..at + 4] == b"VP8X" {
                assert_eq!(out[at + 8], 0x20 | 0x08 | 0x04, "ICC, EXIF and XMP flags");
                let w = u32::from_le_bytes([out[at + 12], out[at + 13], out[at + 14], 0]) + 1;
                let h = u32::from_le_bytes([out[at + 15], out[at + 16], out[at + 17], 0]) + 1;
                assert_eq!((w, h), (300, 200));
            }
            at += 8 + size + (size & 1);
        }
        assert_eq!(fourccs, ["VP8X", "ICCP", "VP8 ", "EXIF", "XMP "]);
        assert_eq!(webp_container(b"RIFF\0\0\0\0WAVE", 1, 1, meta), None);
    }
}
