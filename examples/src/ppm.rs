//! Binary PPM (P6, 8-bit) images for the `imgfilter` example: parsing, writing, filters and a synthetic
//! test image.
//!
//! All arithmetic is integer arithmetic, so every filter gives the same bytes on every machine; that is what
//! lets replicas of an `imgfilter` chunk be compared byte for byte.

use std::fmt;
use std::str::FromStr;

/// An RGB image with 8 bits per channel, stored row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// `width * height * 3` bytes: red, green, blue for each pixel.
    pub pixels: Vec<u8>,
}

/// Why a byte string is not an image this module can read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PpmError {
    /// The data does not start with a PPM magic number.
    NotPpm,
    /// A Netpbm format other than binary PPM, such as ASCII PPM (P3) or PGM.
    UnsupportedFormat { magic: String },
    /// The header ended early or holds something other than a decimal number.
    BadHeader { field: &'static str, detail: String },
    /// Only 8-bit images (maxval 255) are supported.
    UnsupportedMaxval(u32),
    /// Width or height is zero, or the pixel count does not fit in memory.
    BadDimensions { width: u64, height: u64 },
    /// There are fewer pixel bytes than the header promises.
    Truncated { expected: usize, found: usize },
}

impl fmt::Display for PpmError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPpm => write!(formatter, "not a PPM image (it does not start with \"P6\")"),
            Self::UnsupportedFormat { magic } => {
                write!(formatter, "unsupported Netpbm format {magic:?}; only binary PPM (P6) is supported")
            }
            Self::BadHeader { field, detail } => {
                write!(formatter, "bad PPM header: {field}: {detail}")
            }
            Self::UnsupportedMaxval(maxval) => {
                write!(formatter, "unsupported PPM maxval {maxval}; only 8-bit images (maxval 255) are supported")
            }
            Self::BadDimensions { width, height } => {
                write!(formatter, "unusable PPM dimensions {width}x{height}")
            }
            Self::Truncated { expected, found } => {
                write!(formatter, "truncated PPM: expected {expected} bytes of pixel data, found {found}")
            }
        }
    }
}

impl std::error::Error for PpmError {}

/// Parses a binary PPM. Comments (`#` to the end of the line) may appear anywhere before the maxval, as the
/// Netpbm specification allows. Bytes after the raster (for example a second image) are ignored.
pub fn parse_ppm(bytes: &[u8]) -> Result<Image, PpmError> {
    match bytes.get(..2) {
        Some(b"P6") => {}
        Some([b'P', kind @ b'1'..=b'7']) => {
            return Err(PpmError::UnsupportedFormat { magic: format!("P{}", char::from(*kind)) });
        }
        _ => return Err(PpmError::NotPpm),
    }
    let mut reader = HeaderReader { bytes, position: 2 };
    let width = reader.number("width")?;
    let height = reader.number("height")?;
    let maxval = reader.number("maxval")?;
    // Exactly one whitespace byte separates the maxval from the raster; more would be read as pixels.
    match bytes.get(reader.position) {
        Some(byte) if byte.is_ascii_whitespace() => reader.position += 1,
        Some(_) => {
            return Err(PpmError::BadHeader { field: "maxval", detail: "not followed by whitespace".into() });
        }
        None => {
            return Err(PpmError::BadHeader { field: "maxval", detail: "no pixel data follows".into() });
        }
    }
    if maxval != 255 {
        return Err(PpmError::UnsupportedMaxval(maxval));
    }
    let bad_dimensions = PpmError::BadDimensions { width: width.into(), height: height.into() };
    if width == 0 || height == 0 {
        return Err(bad_dimensions);
    }
    let expected = usize::try_from(width)
        .ok()
        .zip(usize::try_from(height).ok())
        .and_then(|(width, height)| width.checked_mul(height)?.checked_mul(3))
        .ok_or(bad_dimensions)?;
    // Check the length before allocating, so a corrupt header cannot ask for gigabytes.
    let raster = &bytes[reader.position..];
    if raster.len() < expected {
        return Err(PpmError::Truncated { expected, found: raster.len() });
    }
    Ok(Image { width: width as usize, height: height as usize, pixels: raster[..expected].to_vec() })
}

/// Walks the text part of a PPM header.
struct HeaderReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl HeaderReader<'_> {
    /// Skips whitespace and comments, then reads one decimal number.
    fn number(&mut self, field: &'static str) -> Result<u32, PpmError> {
        loop {
            match self.bytes.get(self.position) {
                Some(byte) if byte.is_ascii_whitespace() => self.position += 1,
                Some(b'#') => {
                    while self.bytes.get(self.position).is_some_and(|&byte| byte != b'\n' && byte != b'\r') {
                        self.position += 1;
                    }
                }
                _ => break,
            }
        }
        let start = self.position;
        while self.bytes.get(self.position).is_some_and(u8::is_ascii_digit) {
            self.position += 1;
        }
        let digits = &self.bytes[start..self.position];
        if digits.is_empty() {
            let detail = match self.bytes.get(self.position) {
                None => "the header ends before it".to_string(),
                Some(&byte) => format!("expected a number, found {:?}", char::from(byte)),
            };
            return Err(PpmError::BadHeader { field, detail });
        }
        // The digits are ASCII, so this cannot fail; only the value can be out of range.
        let text = std::str::from_utf8(digits).unwrap_or_default();
        text.parse().map_err(|_| PpmError::BadHeader { field, detail: format!("{text} is too large") })
    }
}

/// Encodes an image as a binary PPM with a minimal header.
pub fn write_ppm(image: &Image) -> Vec<u8> {
    let header = format!("P6\n{} {}\n255\n", image.width, image.height);
    let mut bytes = Vec::with_capacity(header.len() + image.pixels.len());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&image.pixels);
    bytes
}

/// An image filter that `imgfilter -f NAME` can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Replaces each pixel by its luma (ITU-R BT.601 weights).
    Grayscale,
    /// Replaces each channel value `v` by `255 - v`.
    Invert,
    /// A 3x3 box blur; at the borders only the neighbours inside the image are averaged.
    Blur,
    /// The classic sepia tone matrix, clamped to 255.
    Sepia,
}

impl Filter {
    pub const ALL: [Filter; 4] = [Filter::Grayscale, Filter::Invert, Filter::Blur, Filter::Sepia];

    pub fn name(self) -> &'static str {
        match self {
            Self::Grayscale => "grayscale",
            Self::Invert => "invert",
            Self::Blur => "blur",
            Self::Sepia => "sepia",
        }
    }

    pub fn apply(self, image: &mut Image) {
        match self {
            Self::Grayscale => map_pixels(image, |[red, green, blue]| {
                let luma = luma(red, green, blue);
                [luma, luma, luma]
            }),
            Self::Invert => image.pixels.iter_mut().for_each(|value| *value = 255 - *value),
            Self::Blur => blur(image),
            Self::Sepia => map_pixels(image, |[red, green, blue]| {
                let mix = |weight_red: u32, weight_green: u32, weight_blue: u32| {
                    let value = (weight_red * u32::from(red)
                        + weight_green * u32::from(green)
                        + weight_blue * u32::from(blue)
                        + 500)
                        / 1000;
                    value.min(255) as u8
                };
                [mix(393, 769, 189), mix(349, 686, 168), mix(272, 534, 131)]
            }),
        }
    }
}

impl FromStr for Filter {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|filter| filter.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|filter| filter.name()).collect();
            format!("unknown filter {name:?} (expected one of {})", known.join(", "))
        })
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

fn luma(red: u8, green: u8, blue: u8) -> u8 {
    ((299 * u32::from(red) + 587 * u32::from(green) + 114 * u32::from(blue) + 500) / 1000) as u8
}

fn map_pixels(image: &mut Image, mut map: impl FnMut([u8; 3]) -> [u8; 3]) {
    for pixel in image.pixels.chunks_exact_mut(3) {
        let mapped = map([pixel[0], pixel[1], pixel[2]]);
        pixel.copy_from_slice(&mapped);
    }
}

fn blur(image: &mut Image) {
    let (width, height) = (image.width, image.height);
    let source = &image.pixels;
    let mut blurred = vec![0u8; source.len()];
    for y in 0..height {
        let rows = y.saturating_sub(1)..(y + 2).min(height);
        for x in 0..width {
            let columns = x.saturating_sub(1)..(x + 2).min(width);
            let neighbours = (rows.len() * columns.len()) as u32;
            for channel in 0..3 {
                let mut sum = 0u32;
                for row in rows.clone() {
                    for column in columns.clone() {
                        sum += u32::from(source[(row * width + column) * 3 + channel]);
                    }
                }
                // Rounds to nearest instead of truncating, so a flat area keeps its exact colour.
                blurred[(y * width + x) * 3 + channel] = ((sum + neighbours / 2) / neighbours) as u8;
            }
        }
    }
    image.pixels = blurred;
}

/// Largest width or height [`test_image`] accepts, so a typo cannot ask for gigabytes.
pub const MAX_TEST_IMAGE_SIDE: usize = 16_384;

/// A deterministic synthetic image: a colour gradient, a few filled discs and some noise, all derived from
/// `seed`. It gives the filters something visible to work on without shipping an image file.
///
/// # Panics
/// If `width` or `height` is 0 or above [`MAX_TEST_IMAGE_SIDE`]; callers validate user input first.
pub fn test_image(width: usize, height: usize, seed: u64) -> Image {
    assert!((1..=MAX_TEST_IMAGE_SIDE).contains(&width) && (1..=MAX_TEST_IMAGE_SIDE).contains(&height));
    let mut random = SplitMix64(seed);
    let blue_base = (random.next() % 256) as u32;
    let mut pixels = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let red = (x * 255 / (width - 1).max(1)) as u32;
            let green = (y * 255 / (height - 1).max(1)) as u32;
            let blue = (blue_base + (x + y) as u32) % 256;
            pixels.extend([red as u8, green as u8, blue as u8]);
        }
    }
    let mut image = Image { width, height, pixels };

    let disc_count = 4 + random.next() % 5;
    let largest_radius = (width.min(height) / 4).max(1) as u64;
    for _ in 0..disc_count {
        let centre_x = (random.next() % width as u64) as i64;
        let centre_y = (random.next() % height as u64) as i64;
        let radius = (1 + random.next() % largest_radius) as i64;
        let colour = random.next().to_le_bytes();
        for y in (centre_y - radius).max(0)..(centre_y + radius + 1).min(height as i64) {
            for x in (centre_x - radius).max(0)..(centre_x + radius + 1).min(width as i64) {
                let (dx, dy) = (x - centre_x, y - centre_y);
                if dx * dx + dy * dy <= radius * radius {
                    let offset = (y as usize * width + x as usize) * 3;
                    image.pixels[offset..offset + 3].copy_from_slice(&colour[..3]);
                }
            }
        }
    }

    // Mild noise, so that blur visibly changes every region and not only the edges.
    for value in &mut image.pixels {
        let noise = (random.next() % 17) as i16 - 8;
        *value = (i16::from(*value) + noise).clamp(0, 255) as u8;
    }
    image
}

/// SplitMix64: a tiny, well-mixed generator; the test image only needs determinism, not cryptography.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: usize, height: usize, pixels: &[u8]) -> Image {
        Image { width, height, pixels: pixels.to_vec() }
    }

    #[test]
    fn write_then_parse_round_trips() {
        let original = test_image(7, 5, 42);
        let bytes = write_ppm(&original);
        assert!(bytes.starts_with(b"P6\n7 5\n255\n"));
        assert_eq!(parse_ppm(&bytes), Ok(original));
    }

    #[test]
    fn parses_comments_and_odd_whitespace_in_the_header() {
        let mut bytes = b"P6 # made by hand\n# another comment\r\n 2\t1 #trailing\n255\n".to_vec();
        bytes.extend([1, 2, 3, 4, 5, 6, 99]);
        assert_eq!(parse_ppm(&bytes), Ok(image(2, 1, &[1, 2, 3, 4, 5, 6])));
    }

    #[test]
    fn the_byte_after_maxval_may_look_like_whitespace_in_the_raster() {
        // The raster starts right after one whitespace byte, even if the first pixel byte is a newline.
        let bytes = b"P6 1 1 255\n\n\n\n";
        assert_eq!(parse_ppm(bytes), Ok(image(1, 1, b"\n\n\n")));
    }

    #[test]
    fn rejects_malformed_input_with_clear_errors() {
        assert_eq!(parse_ppm(b""), Err(PpmError::NotPpm));
        assert_eq!(parse_ppm(b"GIF89a"), Err(PpmError::NotPpm));
        assert_eq!(parse_ppm(b"P3 1 1 255 0 0 0"), Err(PpmError::UnsupportedFormat { magic: "P3".into() }));
        assert_eq!(parse_ppm(b"P6 1 1 65535\n\0\0\0\0\0\0"), Err(PpmError::UnsupportedMaxval(65535)));
        assert_eq!(parse_ppm(b"P6 0 1 255\n"), Err(PpmError::BadDimensions { width: 0, height: 1 }));
        assert_eq!(parse_ppm(b"P6 2 2 255\n123"), Err(PpmError::Truncated { expected: 12, found: 3 }));
        assert!(matches!(parse_ppm(b"P6 2"), Err(PpmError::BadHeader { field: "height", .. })));
        assert!(matches!(parse_ppm(b"P6 x 2 255\n"), Err(PpmError::BadHeader { field: "width", .. })));
        assert!(matches!(parse_ppm(b"P6 99999999999 2 255\n"), Err(PpmError::BadHeader { field: "width", .. })));
        assert!(matches!(parse_ppm(b"P6 1 1 255"), Err(PpmError::BadHeader { field: "maxval", .. })));
        let message = parse_ppm(b"P6 2 2 255\n123").unwrap_err().to_string();
        assert_eq!(message, "truncated PPM: expected 12 bytes of pixel data, found 3");
    }

    #[test]
    fn huge_dimensions_do_not_allocate() {
        let result = parse_ppm(b"P6 4000000000 4000000000 255\n\0\0\0");
        assert!(matches!(result, Err(PpmError::BadDimensions { .. } | PpmError::Truncated { .. })));
    }

    #[test]
    fn point_filters() {
        let mut picture = image(2, 1, &[255, 0, 0, 10, 20, 30]);
        Filter::Invert.apply(&mut picture);
        assert_eq!(picture.pixels, [0, 255, 255, 245, 235, 225]);
        Filter::Invert.apply(&mut picture);
        Filter::Grayscale.apply(&mut picture);
        assert_eq!(picture.pixels, [76, 76, 76, 18, 18, 18]);
        let mut white = image(1, 1, &[255, 255, 255]);
        Filter::Sepia.apply(&mut white);
        assert_eq!(white.pixels, [255, 255, 239]);
    }

    #[test]
    fn blur_averages_neighbours_inside_the_image() {
        let mut picture = image(3, 1, &[0, 0, 0, 90, 90, 90, 180, 180, 180]);
        Filter::Blur.apply(&mut picture);
        assert_eq!(picture.pixels, [45, 45, 45, 90, 90, 90, 135, 135, 135]);
        let mut flat = image(4, 3, &[77; 36]);
        Filter::Blur.apply(&mut flat);
        assert_eq!(flat.pixels, [77; 36]);
    }

    #[test]
    fn filter_names_round_trip() {
        for filter in Filter::ALL {
            assert_eq!(filter.name().parse::<Filter>(), Ok(filter));
        }
        assert!("sharpen".parse::<Filter>().unwrap_err().contains("grayscale, invert, blur, sepia"));
    }

    #[test]
    fn test_image_is_deterministic_and_seed_dependent() {
        assert_eq!(test_image(16, 9, 1), test_image(16, 9, 1));
        assert_ne!(test_image(16, 9, 1), test_image(16, 9, 2));
        let single_pixel = test_image(1, 1, 0);
        assert_eq!(single_pixel.pixels.len(), 3);
    }
}
