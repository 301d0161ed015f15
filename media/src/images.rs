//! Images: measured from their header first (so that a decompression bomb
//! is refused before a pixel is decoded), then decoded under allocation
//! limits, turned as their EXIF orientation says, and thumbnailed. The
//! thumbnail is encoded from pixels alone, so no metadata (a phone's GPS
//! position) survives into it.
//!
//! Blocking and CPU-bound: callers run it off the async threads, and bound
//! how many run at once (the decoded pixels take memory).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use crate::{MediaConfig, MediaError};

/// What an image turned out to be.
#[derive(Debug)]
pub struct ImageInfo {
    /// Pixels, after orientation.
    pub width: u32,
    /// Pixels, after orientation.
    pub height: u32,
    /// A copy at most `thumbnail_px` on its long side (the same size for
    /// a small image), without metadata.
    pub thumbnail: Option<Thumbnail>,
}

/// A thumbnail, encoded.
#[derive(Debug)]
pub struct Thumbnail {
    /// The encoded bytes.
    pub bytes: Vec<u8>,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// `image/jpeg`, or `image/png` for images with transparency.
    pub content_type: &'static str,
}

/// Bytes a decode may allocate per pixel allowed: four channels, and room
/// for the decoder's own buffers.
const ALLOC_PER_PIXEL: u64 = 5;

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, MediaError> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| MediaError::Undecodable(e.to_string()))
}

fn undecodable(e: image::ImageError) -> MediaError {
    MediaError::Undecodable(e.to_string())
}

/// Measures, decodes and thumbnails the image in `bytes`.
pub fn process_image(bytes: &[u8], config: &MediaConfig) -> Result<ImageInfo, MediaError> {
    let (width, height) = reader(bytes)?.into_dimensions().map_err(undecodable)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > config.max_image_pixels {
        return Err(MediaError::ImageTooLarge {
            width,
            height,
            limit: config.max_image_pixels,
        });
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(
        config
            .max_image_pixels
            .saturating_mul(ALLOC_PER_PIXEL)
            .max(16 * 1024 * 1024),
    );
    let mut reader = reader(bytes)?;
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let orientation = decoder.orientation().map_err(undecodable)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    image.apply_orientation(orientation);
    let (width, height) = (image.width(), image.height());
    let thumbnail = thumbnail(&image, config.thumbnail_px.max(1))?;
    Ok(ImageInfo {
        width,
        height,
        thumbnail: Some(thumbnail),
    })
}

/// At most `long` pixels on the long side, never enlarged; made even for
/// a small image, so that every image has one without its metadata.
fn thumbnail(image: &DynamicImage, long: u32) -> Result<Thumbnail, MediaError> {
    let small = if image.width().max(image.height()) > long {
        image.thumbnail(long, long)
    } else {
        image.clone()
    };
    let mut bytes = Cursor::new(Vec::new());
    let content_type = if small.color().has_alpha() {
        small
            .write_to(&mut bytes, image::ImageFormat::Png)
            .map_err(undecodable)?;
        "image/png"
    } else {
        let rgb = small.to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80)
            .encode_image(&rgb)
            .map_err(undecodable)?;
        "image/jpeg"
    };
    Ok(Thumbnail {
        bytes: bytes.into_inner(),
        width: small.width(),
        height: small.height(),
        content_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(image: &DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn an_image_is_measured_and_thumbnailed_keeping_its_shape() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            800,
            400,
            image::Rgb([9, 80, 200]),
        ));
        let info = process_image(
            &encoded(&img, image::ImageFormat::Png),
            &MediaConfig::default(),
        )
        .unwrap();
        assert_eq!((info.width, info.height), (800, 400));
        let t = info.thumbnail.unwrap();
        assert_eq!((t.width, t.height), (320, 160));
        assert_eq!(t.content_type, "image/jpeg");
        let back = image::load_from_memory(&t.bytes).unwrap();
        assert_eq!((back.width(), back.height()), (320, 160));
        // Transparency stays: a PNG thumbnail.
        let clear = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            500,
            500,
            image::Rgba([0, 0, 0, 0]),
        ));
        let info = process_image(
            &encoded(&clear, image::ImageFormat::Png),
            &MediaConfig::default(),
        )
        .unwrap();
        assert_eq!(info.thumbnail.unwrap().content_type, "image/png");
        // Small already: a thumbnail of the same size, never enlarged.
        let tiny = DynamicImage::ImageRgb8(image::RgbImage::new(30, 20));
        let info = process_image(
            &encoded(&tiny, image::ImageFormat::Jpeg),
            &MediaConfig::default(),
        )
        .unwrap();
        assert_eq!((info.width, info.height), (30, 20));
        let t = info.thumbnail.unwrap();
        assert_eq!((t.width, t.height), (30, 20));
    }

    #[test]
    fn exif_orientation_is_applied() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            400,
            200,
            image::Rgb([200, 10, 10]),
        ));
        let jpeg = encoded(&img, image::ImageFormat::Jpeg);
        // An APP1 Exif segment, big-endian TIFF, one IFD entry:
        // Orientation (0x0112) = 6 (turned 90 degrees clockwise).
        let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
        tiff.extend_from_slice(&[0, 1]);
        tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
        tiff.extend_from_slice(&[0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut turned = jpeg[..2].to_vec();
        turned.extend_from_slice(&[0xff, 0xe1]);
        turned.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        turned.extend_from_slice(&app1);
        turned.extend_from_slice(&jpeg[2..]);
        let info = process_image(&turned, &MediaConfig::default()).unwrap();
        assert_eq!((info.width, info.height), (200, 400));
        let t = info.thumbnail.unwrap();
        assert_eq!((t.width, t.height), (160, 320));
        // The thumbnail is pixels only: no Exif segment in it.
        assert!(!t.bytes.windows(6).any(|w| w == b"Exif\0\0"));
    }

    #[test]
    fn a_truncated_png_does_not_decode_and_a_truncated_jpeg_shows_what_it_has() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(300, 200, |x, y| {
            image::Rgb([x as u8, y as u8, 7])
        }));
        let mut png = encoded(&img, image::ImageFormat::Png);
        png.truncate(png.len() / 2);
        assert!(matches!(
            process_image(&png, &MediaConfig::default()),
            Err(MediaError::Undecodable(_))
        ));
        assert!(matches!(
            process_image(b"\x89PNG\r\n\x1a\n", &MediaConfig::default()),
            Err(MediaError::Undecodable(_))
        ));
        // As browsers do: the rows that arrived, the rest blank.
        let mut jpeg = encoded(&img, image::ImageFormat::Jpeg);
        jpeg.truncate(jpeg.len() / 2);
        let info = process_image(&jpeg, &MediaConfig::default()).unwrap();
        assert_eq!((info.width, info.height), (300, 200));
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        let png = chat_testkit::png_bomb(40_000);
        let started = std::time::Instant::now();
        match process_image(&png, &MediaConfig::default()) {
            Err(MediaError::ImageTooLarge { width, height, .. }) => {
                assert_eq!((width, height), (40_000, 40_000))
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
