//! Encoding results (8-bit RGB, PNG, grids, f32 safetensors files) and, in [`files`], the one policy for where a
//! run may write and how (checked before the GPU runs, written all-or-nothing).
pub mod files;

pub use files::{OutputFiles, WriteSet, remove_stale, write_atomic};

use crate::error::{Error, Result};

/// How [0, 1] floats become 8-bit values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantize {
    /// round(x · 255): the default.
    Round,
    /// trunc(x · 255), as the Prompt-to-Prompt reference (`--compat ptp`).
    Truncate,
}

/// One image `[3, H, W]` in [0, 1] (NCHW plane order) as RGB bytes.
pub fn to_rgb8(chw: &[f32], h: usize, w: usize, q: Quantize) -> Vec<u8> {
    let mut out = vec![0u8; h * w * 3];
    for c in 0..3 {
        for i in 0..h * w {
            let v = (chw[c * h * w + i].clamp(0.0, 1.0) * 255.0) as f64;
            out[i * 3 + c] = match q {
                Quantize::Round => v.round(),
                Quantize::Truncate => v.trunc(),
            } as u8;
        }
    }
    out
}

/// Encodes RGB bytes as PNG.
pub fn png(rgb: &[u8], h: usize, w: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let enc = image::codecs::png::PngEncoder::new(&mut buf);
    image::ImageEncoder::write_image(enc, rgb, w as u32, h as u32, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::input(format!("PNG encoding: {e}")))?;
    Ok(buf)
}

/// Side-by-side grid of RGB images of equal size, with `gap` white pixels between them.
pub fn hstack(images: &[Vec<u8>], h: usize, w: usize, gap: usize) -> (Vec<u8>, usize, usize) {
    let n = images.len();
    let gw = n * w + n.saturating_sub(1) * gap;
    let mut out = vec![255u8; h * gw * 3];
    for (k, img) in images.iter().enumerate() {
        let x0 = k * (w + gap);
        for y in 0..h {
            let dst = (y * gw + x0) * 3;
            out[dst..dst + w * 3].copy_from_slice(&img[y * w * 3..(y + 1) * w * 3]);
        }
    }
    (out, h, gw)
}

/// A safetensors file of f32 tensors `(name, shape, data)`.
pub fn safetensors_f32(tensors: &[(&str, Vec<usize>, &[f32])]) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, d)| bytemuck::cast_slice(d).to_vec()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (name.to_string(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::input(format!("safetensors: {e}")))?;
    safetensors::tensor::serialize(views, None).map_err(|e| Error::input(format!("safetensors: {e}")))
}
