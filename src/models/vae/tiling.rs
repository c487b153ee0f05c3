//! How the VAE splits its work: one image at a time (slices), overlapping latent tiles blended linearly (the
//! decoder in pixel space, the encoder in latent space) when an image would exceed the memory budget or a buffer
//! limit ([`Tiling`], [`DecodeOptions`], [`plan_pieces`]), and the decoder's memory estimate that decides it.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::Ctx;
use crate::tensor::Tensor;

use super::VaeDecoder;

/// When [`VaeDecoder::decode`] decodes an image in overlapping tiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tiling {
    /// When one image's decode would exceed the memory budget or an adapter buffer limit.
    #[default]
    Auto,
    /// Always (`--vae-tile`).
    Always,
    /// Never: a decode over the limits fails with the op's message.
    Never,
}

/// How [`VaeDecoder::decode`] splits its work. Images are always decoded one at a time (slices: the batch is
/// never decoded at once, which divides the decode's activation memory by the batch at no cost in results);
/// an image is decoded in overlapping latent tiles, blended linearly in pixel space, as `tiling` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    pub tiling: Tiling,
    /// Bytes one piece (an image or a tile) may take in activations and temporaries.
    pub budget: u64,
    /// Latent side of a tile (None: `Auto` takes the largest that fits the budget and the limits; `Always` takes
    /// half the latent's larger side, at most [`DEFAULT_TILE`], and no more than fits).
    pub tile: Option<usize>,
    /// Overlap of neighbouring tiles in latent pixels (None: a quarter of the tile side, at least 1).
    pub overlap: Option<usize>,
}

/// Default decode budget: SD 1.5 decodes a 512 px image whole (1.2 GiB in f32, estimated 1.6 GiB), and larger
/// images in tiles.
pub const DEFAULT_DECODE_BUDGET: u64 = 2 << 30;
/// Largest latent side of a forced tile (512 px for SD, diffusers' tile size).
pub const DEFAULT_TILE: usize = 64;
/// Live activations per resolution level of the decoder, in halves of that level's largest activation, used by
/// [`VaeDecoder::estimate`]: a lean resnet block keeps its input, one norm and two convolution outputs alive, and
/// the arena keeps buffers per size class, so recorded arenas come to about 2.8 such activations per level (SD's
/// decoder at 16², 32² and 45² latents on lavapipe); 3.5 leaves a margin for size classes. Checked against
/// recorded arenas in tests/vae_tiles.rs.
pub const LIVE_HALVES_PER_LEVEL: u64 = 7;

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { tiling: Tiling::Auto, budget: DEFAULT_DECODE_BUDGET, tile: None, overlap: None }
    }
}

impl DecodeOptions {
    /// These options with a tile side of `px` pixels (`--vae-tile-size`) on a VAE of upscale factor `up`; `px`
    /// must be a positive multiple of `up`.
    pub fn with_tile_px(self, px: Option<usize>, up: usize) -> Result<DecodeOptions> {
        match px {
            None => Ok(self),
            Some(px) if px == 0 || px % up != 0 => {
                Err(Error::input(format!("--vae-tile-size must be a positive multiple of {up}, got {px}")))
            }
            Some(px) => Ok(DecodeOptions { tile: Some(px / up), ..self }),
        }
    }
}

/// Planned memory of decoding one piece (an image or a tile).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeBytes {
    /// Activations in the piece's own arena (freed after the piece).
    pub arena: u64,
    /// Temporaries on the GPU's shared pool (the mid-block attention's scores and head copies; kept by the pool).
    pub shared: u64,
    /// The largest single activation.
    pub largest: u64,
}

impl DecodeBytes {
    pub fn total(&self) -> u64 {
        self.arena + self.shared
    }
}

/// How a decode runs: each image whole, or in `tile × tile` latent tiles overlapping by `overlap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodePlan {
    pub tile: Option<(usize, usize)>,
    /// Latent size of the largest piece.
    pub piece: (usize, usize),
    /// Tiles per image (1 when whole).
    pub tiles: usize,
}

/// Start offsets of tiles of side `t` covering `[0, len)`, neighbours sharing at least `overlap` (less by at most
/// one where the starts round), spread evenly so that the last tile ends at `len`.
pub fn tile_starts(len: usize, t: usize, overlap: usize) -> Vec<usize> {
    if t >= len || t == 0 {
        return vec![0];
    }
    let step = t.saturating_sub(overlap).max(1);
    let n = (len.saturating_sub(overlap)).div_ceil(step).max(2);
    (0..n).map(|i| ((i * (len - t)) as f64 / (n - 1) as f64).round() as usize).collect()
}

/// Assembles an `h × w`-latent image from tiles: `decode(y0, x0, th, tw)` returns the NHWC pixels
/// `[th·up, tw·up, oc]` of the latent window at `(y0, x0)`. Where tiles overlap, each tile's weight ramps
/// linearly from its edge across the overlap (per axis, multiplied), and the weights are normalised, so two
/// tiles crossfade over their shared pixels and a pixel covered once is that tile's value. Returns NHWC
/// `[h·up, w·up, oc]`.
pub fn blend_tiles(
    (h, w): (usize, usize),
    up: usize,
    oc: usize,
    tile: usize,
    overlap: usize,
    mut decode: impl FnMut(usize, usize, usize, usize) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    let (th, tw) = (tile.min(h), tile.min(w));
    let (ys, xs) = (tile_starts(h, th, overlap), tile_starts(w, tw, overlap));
    let (hh, ww) = (h * up, w * up);
    let mut acc = vec![0.0f32; hh * ww * oc];
    let mut wsum = vec![0.0f32; hh * ww];
    // Overlaps (in pixels) of tile i with its neighbours before and after.
    let overlaps = |starts: &[usize], i: usize, t: usize| -> (usize, usize) {
        let lo = if i > 0 { (starts[i - 1] + t).saturating_sub(starts[i]) * up } else { 0 };
        let hi = if i + 1 < starts.len() { (starts[i] + t).saturating_sub(starts[i + 1]) * up } else { 0 };
        (lo, hi)
    };
    let ramp = |p: usize, size: usize, (lo, hi): (usize, usize)| -> f32 {
        let mut v = 1.0f32;
        if lo > 0 {
            v = v.min((p as f32 + 0.5) / lo as f32);
        }
        if hi > 0 {
            v = v.min(((size - p) as f32 - 0.5) / hi as f32);
        }
        v
    };
    let (ph, pw) = (th * up, tw * up);
    for (iy, &y0) in ys.iter().enumerate() {
        let oy = overlaps(&ys, iy, th);
        for (ix, &x0) in xs.iter().enumerate() {
            let ox = overlaps(&xs, ix, tw);
            let pix = decode(y0, x0, th, tw)?;
            if pix.len() != ph * pw * oc {
                return Err(Error::shape(
                    "vae tile",
                    format!("a {th}x{tw} tile decoded to {} values, expected {ph}x{pw}x{oc}", pix.len()),
                ));
            }
            for py in 0..ph {
                let wy = ramp(py, ph, oy);
                let gy = y0 * up + py;
                for px in 0..pw {
                    let wgt = wy * ramp(px, pw, ox);
                    let g = gy * ww + x0 * up + px;
                    wsum[g] += wgt;
                    let src = &pix[(py * pw + px) * oc..][..oc];
                    for (a, &v) in acc[g * oc..][..oc].iter_mut().zip(src) {
                        *a += wgt * v;
                    }
                }
            }
        }
    }
    for (px, &s) in acc.chunks_mut(oc).zip(&wsum) {
        px.iter_mut().for_each(|v| *v /= s);
    }
    Ok(acc)
}

/// How work over `h × w` latents is split under `o` (the decoder's and the encoder's planning), given whether a
/// piece of `h × w` latents `fits` the budget and the adapter's limits: whole when it fits (or tiling is
/// `Never`), else the largest square tile that fits, starting from the asked tile (`Always` without one: half the
/// larger side, at most [`DEFAULT_TILE`]), overlapping by the asked overlap or a quarter of the tile.
pub fn plan_pieces(
    o: &DecodeOptions,
    (h, w): (usize, usize),
    what: &str,
    fits: impl Fn(usize, usize) -> bool,
) -> Result<DecodePlan> {
    let whole = DecodePlan { tile: None, piece: (h, w), tiles: 1 };
    let start = match o.tiling {
        Tiling::Never => return Ok(whole),
        Tiling::Auto if fits(h, w) => return Ok(whole),
        Tiling::Auto => o.tile.unwrap_or(h.max(w)),
        Tiling::Always => o.tile.unwrap_or(h.max(w).div_ceil(2).min(DEFAULT_TILE)),
    };
    let start = start.clamp(1, h.max(w));
    let Some(t) = (1..=start).rev().find(|&t| fits(t.min(h), t.min(w))) else {
        return Err(Error::limit(what, "not even a 1x1 latent tile fits the budget"));
    };
    let overlap = o.overlap.unwrap_or((t / 4).max(1)).min(t.saturating_sub(1));
    let tiles = tile_starts(h, t.min(h), overlap).len() * tile_starts(w, t.min(w), overlap).len();
    if tiles == 1 {
        return Ok(whole);
    }
    Ok(DecodePlan { tile: Some((t, overlap)), piece: (t.min(h), t.min(w)), tiles })
}

impl VaeDecoder {
    /// Estimated memory of decoding one `h × w` latent piece in one forward, from the layer shapes (no GPU
    /// work): per resolution level, [`LIVE_HALVES_PER_LEVEL`] / 2 activations of the level's largest channel
    /// count (in its buffer size class), the mid-block attention's five activations, and the output; the
    /// mid-block attention's scores (capped as `attention_materialized` chunks them) on the shared pool.
    pub fn estimate(&self, gpu: &Gpu, h: usize, w: usize) -> DecodeBytes {
        let ch = &self.config.block_out_channels;
        let n = ch.len();
        let s = self.dtype.size() as u64;
        let mut p = (h * w) as u64;
        let (mut arena, mut largest) = (0u64, 0u64);
        let mut prev = ch[n - 1];
        for b in 0..n {
            let out = ch[n - 1 - b];
            let level = crate::gpu::pool::size_class(p * prev.max(out) as u64 * s);
            largest = largest.max(level);
            arena += LIVE_HALVES_PER_LEVEL * level / 2;
            prev = out;
            if b + 1 < n {
                p *= 4;
            }
        }
        arena += p * self.config.out_channels as u64 * s;
        let tokens = (h * w) as u64;
        let c = ch[n - 1] as u64;
        // The mid-block attention's norm, q, k, v and output at the latent resolution.
        arena += 5 * tokens * c * s;
        let lim = &gpu.limits;
        let cap = crate::ops::softmax::DEFAULT_BUDGET.min(lim.max_storage_buffer_binding_size).min(lim.max_buffer_size);
        let shared = (tokens * tokens * s).min(cap) + 3 * tokens * c * s;
        DecodeBytes { arena, shared, largest }
    }

    /// Whether a piece of `h × w` latents fits the budget and the adapter's buffer limits.
    fn fits(&self, gpu: &Gpu, h: usize, w: usize) -> bool {
        let e = self.estimate(gpu, h, w);
        let lim = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
        e.total() <= self.tiling.budget && e.largest <= lim
    }

    /// How a decode of `h × w` latents runs under `self.tiling` on this adapter.
    pub fn decode_plan(&self, gpu: &Gpu, hw: (usize, usize)) -> Result<DecodePlan> {
        plan_pieces(&self.tiling, hw, "vae decode", |h, w| self.fits(gpu, h, w))
    }

    /// Decodes NHWC latents `z` `[b, h, w, latent]` (already divided by `scaling_factor`) to NHWC
    /// `[b, H, W, out]` in [-1, 1] (unclamped): one image at a time, each whole or in blended tiles as
    /// [`VaeDecoder::decode_plan`] says.
    pub fn decode(&self, gpu: &Gpu, z: &[f32], b: usize, hw: (usize, usize)) -> Result<Vec<f32>> {
        self.decode_observed(gpu, z, b, hw, &mut |_| {})
    }

    /// [`VaeDecoder::decode`], calling `observe` after each piece has run while its activations are still
    /// allocated (memory measurements).
    pub fn decode_observed(
        &self,
        gpu: &Gpu,
        z: &[f32],
        b: usize,
        (h, w): (usize, usize),
        observe: &mut dyn FnMut(&Gpu),
    ) -> Result<Vec<f32>> {
        let c = self.config.latent_channels;
        if z.len() != b * h * w * c {
            return Err(Error::shape("vae decode", format!("{} values, expected [{b}, {h}, {w}, {c}]", z.len())));
        }
        let plan = self.decode_plan(gpu, (h, w))?;
        let (up, oc) = (self.config.upscale(), self.config.out_channels);
        let mut out = Vec::with_capacity(b * h * w * up * up * oc);
        for zi in z.chunks(h * w * c) {
            match plan.tile {
                None => out.extend(self.decode_piece(gpu, zi, 1, (h, w), observe)?),
                Some((t, overlap)) => {
                    let img = blend_tiles((h, w), up, oc, t, overlap, |y0, x0, th, tw| {
                        let mut crop = Vec::with_capacity(th * tw * c);
                        for y in y0..y0 + th {
                            crop.extend_from_slice(&zi[(y * w + x0) * c..(y * w + x0 + tw) * c]);
                        }
                        self.decode_piece(gpu, &crop, 1, (th, tw), observe)
                    })?;
                    out.extend(img);
                }
            }
        }
        Ok(out)
    }

    /// The whole batch in one forward (what `decode` did before slicing; tests compare the two).
    pub fn decode_batched(&self, gpu: &Gpu, z: &[f32], b: usize, hw: (usize, usize)) -> Result<Vec<f32>> {
        self.decode_piece(gpu, z, b, hw, &mut |_| {})
    }

    fn decode_piece(
        &self,
        gpu: &Gpu,
        z: &[f32],
        b: usize,
        (h, w): (usize, usize),
        observe: &mut dyn FnMut(&Gpu),
    ) -> Result<Vec<f32>> {
        let mut cx = Ctx::new(gpu, self.dtype);
        let zt = Tensor::from_f32(gpu, &[b, h, w, self.config.latent_channels], self.dtype, z)?;
        let img = self.forward(&mut cx, &zt)?;
        cx.flush()?;
        let v = img.to_f32(gpu)?;
        observe(gpu);
        Ok(v)
    }

    /// Records (does not run) one piece of `plan`: (arena bytes, largest arena buffer, bytes the GPU's shared
    /// pool grew by). The planned memory of a decode, for `p2p-wgpu info`.
    pub fn record_piece(&self, gpu: &Gpu, plan: &DecodePlan) -> Result<(u64, u64, u64)> {
        let before = gpu.pool.created_bytes().0;
        let mut cx = Ctx::new(gpu, self.dtype);
        let (h, w) = plan.piece;
        let z = Tensor::empty(gpu, &[1, h, w, self.config.latent_channels], self.dtype)?;
        let _ = self.forward(&mut cx, &z)?;
        let (arena, largest) = cx.arena.created_bytes();
        Ok((arena, largest, gpu.pool.created_bytes().0 - before))
    }
}
