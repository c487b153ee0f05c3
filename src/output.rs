//! Writing results: the output folder is checked before the GPU runs; PNGs and safetensors files are written
//! atomically (a temporary file in the same folder, then a rename), never over an input file.
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Creates `dir` if needed and checks that it is a writable folder.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::input(format!("output {} is a file, not a folder", dir.display())));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::input(format!("cannot create output folder {}: {e}", dir.display())))?;
    let probe = dir.join(format!(".p2p-wgpu-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|e| Error::input(format!("output folder {} is not writable: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Refuses to write `target` when it is one of `inputs`.
pub fn check_not_input(target: &Path, inputs: &[&Path]) -> Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    if let Some(t) = canon(target) {
        if inputs.iter().any(|i| canon(i).as_ref() == Some(&t)) {
            return Err(Error::input(format!("refusing to overwrite the input file {}", target.display())));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::input(format!("{} is not a file path", path.display())))?;
    let tmp: PathBuf = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::input(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::input(format!("cannot write {}: {e}", path.display()))
    })
}

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
