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
