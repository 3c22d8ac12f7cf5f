//! Previews of image outputs: PNG, JPEG and GIF as they are, and PPM (Netpbm P3 and P6), which browsers
//! cannot show, converted to a BMP, which they can. Pure, so the host tests check the conversion.

/// Images larger than this many pixels are not converted for a preview (they can still be downloaded).
const MAX_PREVIEW_PIXELS: u64 = 4096 * 4096;

/// A previewable image: its MIME type and the bytes to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    pub mime: &'static str,
    pub bytes: Vec<u8>,
}

/// The preview of an output file, if it is an image: recognised by its first bytes, not its name.
pub fn preview(bytes: &[u8]) -> Option<Preview> {
    let mime = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        "image/gif"
    } else if bytes.starts_with(b"P6") || bytes.starts_with(b"P3") {
        return ppm_to_bmp(bytes).map(|bytes| Preview { mime: "image/bmp", bytes });
    } else {
        return None;
    };
    Some(Preview { mime, bytes: bytes.to_vec() })
}

/// Reads the next header field of a Netpbm file: a decimal number after white space and `#` comments.
fn next_number(bytes: &[u8], at: &mut usize) -> Option<u32> {
    loop {
        match bytes.get(*at)? {
            b'#' => {
                while *bytes.get(*at)? != b'\n' {
                    *at += 1;
                }
            }
            byte if byte.is_ascii_whitespace() => *at += 1,
            _ => break,
        }
    }
    let start = *at;
    while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
        *at += 1;
    }
    std::str::from_utf8(&bytes[start..*at]).ok()?.parse().ok()
}

/// A PPM image as a 24-bit BMP; `None` when it is malformed, truncated or too large to preview.
pub fn ppm_to_bmp(bytes: &[u8]) -> Option<Vec<u8>> {
    let binary = bytes.starts_with(b"P6");
    let mut at = 2;
    let width = next_number(bytes, &mut at)?;
    let height = next_number(bytes, &mut at)?;
    let max_value = next_number(bytes, &mut at)?;
    if width == 0 || height == 0 || !(1..=65535).contains(&max_value) {
        return None;
    }
    if u64::from(width) * u64::from(height) > MAX_PREVIEW_PIXELS {
        return None;
    }
    let samples = width as usize * height as usize * 3;
    let scale = |value: u32| -> Option<u8> { (value <= max_value).then(|| (value * 255 / max_value) as u8) };
    let mut rgb = Vec::with_capacity(samples);
    if binary {
        // Exactly one white-space byte separates the header from the samples.
        at += 1;
        let width_of_sample = if max_value < 256 { 1 } else { 2 };
        let data = bytes.get(at..at + samples * width_of_sample)?;
        for sample in data.chunks_exact(width_of_sample) {
            let value = sample.iter().fold(0u32, |value, byte| value << 8 | u32::from(*byte));
            rgb.push(scale(value)?);
        }
    } else {
        for _ in 0..samples {
            rgb.push(scale(next_number(bytes, &mut at)?)?);
        }
    }

    // A BMP: bottom-up rows of blue, green, red, each padded to four bytes.
    let row_bytes = (width as usize * 3).div_ceil(4) * 4;
    let pixel_bytes = row_bytes * height as usize;
    let file_size = u32::try_from(54 + pixel_bytes).ok()?;
    let mut bmp = Vec::with_capacity(file_size as usize);
    bmp.extend_from_slice(b"BM");
    bmp.extend_from_slice(&file_size.to_le_bytes());
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&(width as i32).to_le_bytes());
    bmp.extend_from_slice(&(height as i32).to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&(pixel_bytes as u32).to_le_bytes());
    bmp.extend_from_slice(&[0; 16]);
    for row in rgb.chunks_exact(width as usize * 3).rev() {
        for pixel in row.chunks_exact(3) {
            bmp.extend_from_slice(&[pixel[2], pixel[1], pixel[0]]);
        }
        bmp.resize(bmp.len() + row_bytes - width as usize * 3, 0);
    }
    Some(bmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pixel at (x, y) of a 24-bit bottom-up BMP, as red, green, blue.
    fn bmp_pixel(bmp: &[u8], x: usize, y: usize) -> [u8; 3] {
        let width = i32::from_le_bytes(bmp[18..22].try_into().unwrap()) as usize;
        let height = i32::from_le_bytes(bmp[22..26].try_into().unwrap()) as usize;
        let row_bytes = (width * 3).div_ceil(4) * 4;
        let at = 54 + (height - 1 - y) * row_bytes + x * 3;
        [bmp[at + 2], bmp[at + 1], bmp[at]]
    }

    #[test]
    fn a_binary_ppm_becomes_a_bmp_with_the_same_pixels() {
        let mut ppm = b"P6\n# made by a test\n2 2\n255\n".to_vec();
        ppm.extend_from_slice(&[255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]);
        let preview = preview(&ppm).unwrap();
        assert_eq!(preview.mime, "image/bmp");
        let bmp = preview.bytes;
        assert_eq!(&bmp[..2], b"BM");
        assert_eq!(u32::from_le_bytes(bmp[2..6].try_into().unwrap()) as usize, bmp.len());
        assert_eq!(bmp.len(), 54 + 2 * 8);
        assert_eq!(bmp_pixel(&bmp, 0, 0), [255, 0, 0]);
        assert_eq!(bmp_pixel(&bmp, 1, 0), [0, 255, 0]);
        assert_eq!(bmp_pixel(&bmp, 0, 1), [0, 0, 255]);
        assert_eq!(bmp_pixel(&bmp, 1, 1), [10, 20, 30]);
    }

    #[test]
    fn ascii_and_sixteen_bit_ppms_are_scaled_to_eight_bits() {
        let bmp = ppm_to_bmp(b"P3 1 1 15\n15 0 5\n").unwrap();
        assert_eq!(bmp_pixel(&bmp, 0, 0), [255, 0, 85]);
        let mut wide = b"P6 1 1 65535\n".to_vec();
        wide.extend_from_slice(&[0xff, 0xff, 0x80, 0x00, 0x00, 0x00]);
        assert_eq!(bmp_pixel(&ppm_to_bmp(&wide).unwrap(), 0, 0), [255, 127, 0]);
    }

    #[test]
    fn other_images_pass_through_and_everything_else_has_no_preview() {
        assert_eq!(preview(b"\x89PNG\r\n\x1a\nrest").unwrap().mime, "image/png");
        assert_eq!(preview(&[0xff, 0xd8, 0xff, 0xe0]).unwrap().mime, "image/jpeg");
        assert_eq!(preview(b"hello"), None);
        for broken in
            [&b"P6 2 2 255\n\x00\x01"[..], b"P6 0 1 255\n", b"P3 1 1 9\n10 0 0", b"P6 99999 99999 255\n", b"P6"]
        {
            assert_eq!(ppm_to_bmp(broken), None, "{broken:?}");
        }
    }
}
