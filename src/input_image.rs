//! A user's picture as model input, for real-image editing: decode PNG, JPEG or WebP bytes ([`decode`]: EXIF
//! orientation applied; grey, alpha and 16-bit converted to RGB8, alpha dropped as the reference's `load_512` does),
//! fit it to the model's size ([`fit`]: centre crop, stretch or pad, then a bicubic resize) and map it to the
//! model's [-1, 1] range ([`to_unit_nhwc`]).
//!
//! The resize filter is Catmull-Rom (the cubic with a = −0.5), which is PIL's `BICUBIC`, the filter of the reference's
//! `PIL.Image.resize` in `load_512`; like PIL it widens the kernel when shrinking (antialiasing), so the model sees
//! what the reference would feed it up to rounding.
use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage, imageops::FilterType};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest picture decoded, in pixels (40 megapixels: a 7 000 × 5 700 photo); larger files are refused before
/// their pixels are decoded (decompression bombs).
pub const MAX_PIXELS: u64 = 40_000_000;
/// The largest side decoded, in pixels.
pub const MAX_SIDE: u32 = 16_384;

/// An RGB8 picture, row-major, 3 bytes a pixel. As data in a request, it never names a file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Picture({}x{}, {} bytes)", self.width, self.height, self.rgb.len())
    }
}

impl Picture {
    /// Checks that the bytes match the size.
    pub fn validate(&self) -> Result<()> {
        let want = self.width as u64 * self.height as u64 * 3;
        if self.width == 0 || self.height == 0 || self.rgb.len() as u64 != want {
            return Err(Error::input(format!(
                "image: {}x{} needs {want} RGB bytes, got {}",
                self.width,
                self.height,
                self.rgb.len()
            )));
        }
        if self.width > MAX_SIDE || self.height > MAX_SIDE || self.width as u64 * self.height as u64 > MAX_PIXELS {
            return Err(Error::input(format!(
                "image: {}x{} is larger than {MAX_SIDE} pixels a side or {MAX_PIXELS} pixels",
                self.width, self.height
            )));
        }
        Ok(())
    }

    fn image(&self) -> Result<RgbImage> {
        self.validate()?;
        RgbImage::from_raw(self.width, self.height, self.rgb.clone())
            .ok_or_else(|| Error::input("image: size and bytes disagree"))
    }

    fn from_image(img: RgbImage) -> Picture {
        Picture { width: img.width(), height: img.height(), rgb: img.into_raw() }
    }
}

/// How a picture of another aspect becomes the model's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Centre crop to the target aspect, then resize (the reference's `load_512`).
    #[default]
    Crop,
    /// Resize to the target size, changing the aspect.
    Stretch,
    /// Resize to fit inside, then pad with mid grey (128, the model's 0) on both sides.
    Pad,
}

impl Resize {
    pub fn parse(s: &str) -> Result<Resize> {
        match s {
            "crop" => Ok(Resize::Crop),
            "stretch" => Ok(Resize::Stretch),
            "pad" => Ok(Resize::Pad),
            other => Err(Error::input(format!("--resize {other:?}: expected crop, stretch or pad"))),
        }
    }
}

/// Decodes PNG, JPEG or WebP bytes (`name` goes into the errors) to RGB8 with its EXIF orientation applied.
pub fn decode(name: &str, bytes: &[u8]) -> Result<Picture> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::input(format!("{name}: cannot read: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => {}
        Some(f) => {
            return Err(Error::input(format!("{name}: {f:?} images are not supported (PNG, JPEG or WebP)")));
        }
        None => return Err(Error::input(format!("{name}: not a PNG, JPEG or WebP image"))),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_PIXELS * 8);
    let mut reader = reader;
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| Error::input(format!("{name}: cannot decode: {e}")))?;
    let (w, h) = decoder.dimensions();
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(Error::input(format!("{name}: {w}x{h} is more than the {MAX_PIXELS} pixels accepted")));
    }
    let orientation = decoder.orientation().map_err(|e| Error::input(format!("{name}: bad EXIF data: {e}")))?;
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| Error::input(format!("{name}: cannot decode: {e}")))?;
    img.apply_orientation(orientation);
    let pic = Picture::from_image(img.into_rgb8());
    pic.validate()?;
    Ok(pic)
}

/// `pic` fitted to `height × width` by `mode`, resized with Catmull-Rom (see the module doc).
pub fn fit(pic: &Picture, (height, width): (usize, usize), mode: Resize) -> Result<Picture> {
    let img = pic.image()?;
    let (tw, th) = (width as u32, height as u32);
    if tw == 0 || th == 0 {
        return Err(Error::input(format!("image: target size {height}x{width}")));
    }
    let (sw, sh) = (img.width(), img.height());
    let resized = match mode {
        Resize::Stretch => resize(&img, tw, th),
        Resize::Crop => {
            // The largest box of the target aspect, centred (offsets rounded down, as load_512).
            let (cw, ch) = if sw as u64 * th as u64 > sh as u64 * tw as u64 {
                (((sh as u64 * tw as u64) / th as u64).max(1) as u32, sh)
            } else {
                (sw, ((sw as u64 * th as u64) / tw as u64).max(1) as u32)
            };
            let cropped = image::imageops::crop_imm(&img, (sw - cw) / 2, (sh - ch) / 2, cw, ch).to_image();
            resize(&cropped, tw, th)
        }
        Resize::Pad => {
            let scale = (tw as f64 / sw as f64).min(th as f64 / sh as f64);
            let (fw, fh) =
                (((sw as f64 * scale).round() as u32).clamp(1, tw), ((sh as f64 * scale).round() as u32).clamp(1, th));
            let inner = resize(&img, fw, fh);
            let mut canvas = RgbImage::from_pixel(tw, th, image::Rgb([128, 128, 128]));
            image::imageops::replace(&mut canvas, &inner, ((tw - fw) / 2) as i64, ((th - fh) / 2) as i64);
            canvas
        }
    };
    Ok(Picture::from_image(resized))
}

fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.width() == w && img.height() == h {
        return img.clone();
    }
    image::imageops::resize(img, w, h, FilterType::CatmullRom)
}

/// The picture as NHWC `[1, H, W, 3]` f32 in [-1, 1] (`x / 127.5 − 1`, as the reference).
pub fn to_unit_nhwc(pic: &Picture) -> Vec<f32> {
    pic.rgb.iter().map(|&v| (v as f64 / 127.5 - 1.0) as f32).collect()
}

/// The picture as NCHW `[1, 3, H, W]` in [0, 1] (an image row of an `Output`).
pub fn to_image01_nchw(pic: &Picture) -> Vec<f32> {
    let (w, h) = (pic.width as usize, pic.height as usize);
    let mut out = vec![0.0; 3 * h * w];
    for (i, px) in pic.rgb.chunks(3).enumerate() {
        for c in 0..3 {
            out[c * h * w + i] = px[c] as f32 / 255.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageEncoder;

    /// A `w × h` picture whose pixel (x, y) is (x, y, 7): every pixel tells where it came from.
    fn coords(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]))
    }

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut v = Vec::new();
        image::codecs::png::PngEncoder::new(&mut v)
            .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
            .unwrap();
        v
    }

    /// `jpeg` with an APP1 Exif segment holding only the orientation tag (big-endian TIFF).
    fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn png_jpeg_and_webp_decode_to_rgb8() {
        let img = coords(20, 12);
        let p = decode("a.png", &png(&img)).unwrap();
        assert_eq!((p.width, p.height, p.rgb.as_slice()), (20, 12, img.as_raw().as_slice()));

        let mut webp = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
            .write_image(img.as_raw(), 20, 12, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert_eq!(decode("a.webp", &webp).unwrap().rgb, img.as_raw().clone(), "lossless WebP");

        let flat = RgbImage::from_pixel(16, 8, image::Rgb([200, 40, 90]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&flat).unwrap();
        let j = decode("a.jpg", &jpeg).unwrap();
        assert_eq!((j.width, j.height), (16, 8));
        assert!(j.rgb.chunks(3).all(|px| px.iter().zip([200, 40, 90]).all(|(&a, b)| (a as i32 - b).abs() <= 3)));

        // Grey with alpha and 16 bits a channel become RGB8 (alpha dropped, as the reference's `[:, :, :3]`).
        let la = image::ImageBuffer::<image::LumaA<u16>, Vec<u16>>::from_pixel(3, 2, image::LumaA([0x8080, 0x1000]));
        let mut v = Vec::new();
        DynamicImage::ImageLumaA16(la).write_to(&mut Cursor::new(&mut v), ImageFormat::Png).unwrap();
        let g = decode("grey.png", &v).unwrap();
        assert_eq!(g.rgb, vec![0x80; 18]);
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 16 × 8 JPEG, left half black, right half white; orientation 6 (rotate 90° clockwise) makes it 8 × 16
        // with the white half at the bottom.
        let img = RgbImage::from_fn(16, 8, |x, _| if x < 8 { image::Rgb([0, 0, 0]) } else { image::Rgb([255; 3]) });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&img).unwrap();
        let plain = decode("plain.jpg", &jpeg).unwrap();
        assert_eq!((plain.width, plain.height), (16, 8));
        let turned = decode("turned.jpg", &with_orientation(&jpeg, 6)).unwrap();
        assert_eq!((turned.width, turned.height), (8, 16));
        let at = |p: &Picture, x: u32, y: u32| p.rgb[((y * p.width + x) * 3) as usize];
        assert!(at(&turned, 4, 2) < 30 && at(&turned, 4, 13) > 225, "rotated the wrong way");
    }

    #[test]
    fn bad_files_are_refused_with_their_name() {
        let good = png(&coords(8, 8));
        for (bytes, want) in [
            (b"not an image at all".to_vec(), "not a PNG, JPEG or WebP"),
            (good[..good.len() / 2].to_vec(), "cannot decode"),
            (b"GIF89a\x01\0\x01\0\0\0\0;".to_vec(), "Gif images are not supported"),
            (png(&coords(MAX_SIDE + 1, 1)), "cannot decode"),
        ] {
            let e = decode("x.img", &bytes).unwrap_err().to_string();
            assert!(e.starts_with("x.img: ") && e.contains(want), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let huge = Picture { width: 8000, height: 6000, rgb: Vec::new() };
        assert!(huge.validate().is_err());
        let short = Picture { width: 2, height: 2, rgb: vec![0; 11] };
        assert!(short.validate().unwrap_err().to_string().contains("needs 12 RGB bytes"));
    }

    #[test]
    fn crop_stretch_and_pad_keep_what_they_say() {
        let src = Picture::from_image(coords(40, 20));
        // Crop: the centred 20 × 20 square (x from 10), here at its own size: exact pixels.
        let c = fit(&src, (20, 20), Resize::Crop).unwrap();
        assert_eq!(c.rgb[..3], [10, 0, 7]);
        assert_eq!(c.rgb[c.rgb.len() - 3..], [29, 19, 7]);
        // Stretch: the whole width, halved.
        let s = fit(&src, (20, 20), Resize::Stretch).unwrap();
        assert!(s.rgb[(19 * 3) as usize] >= 36, "right column comes from the source's right edge");
        // Pad: fitted inside (20 × 10), mid grey above and below.
        let p = fit(&src, (20, 20), Resize::Pad).unwrap();
        assert_eq!(p.rgb[..3], [128, 128, 128]);
        assert_eq!(p.rgb[p.rgb.len() - 3..], [128, 128, 128]);
        let mid = (10 * 20 + 10) * 3;
        assert_ne!(p.rgb[mid..mid + 3], [128, 128, 128]);
        // Unit range: 0 → -1, 255 → 1.
        let u = to_unit_nhwc(&Picture { width: 1, height: 1, rgb: vec![0, 255, 128] });
        assert_eq!(u[0], -1.0);
        assert_eq!(u[1], 1.0);
        assert!((u[2] - 0.003_921_6).abs() < 1e-6);
    }
}
