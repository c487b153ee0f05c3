//! Embedding kernels (kernels/embed/):
//! - `timestep_embedding`: diffusers' `get_timestep_embedding(timesteps, embedding_dim, flip_sin_to_cos,
//!   downscale_freq_shift, scale, max_period)` (the `Timesteps` module), f32 timesteps `[B]` → `[B, dim]`,
//!   computed in f32 as diffusers does;
//! - `embedding`: `torch.nn.Embedding` lookup, u32 token ids `[N]` → rows of a table `[V, D]` → `[N, D]`. Tables
//!   over the adapter's `max_storage_buffer_binding_size` (CLIP's 49408×768 f32 table is 151 MB; lavapipe binds
//!   128 MiB) are bound in row chunks, one dispatch per chunk, each writing the ids that fall inside it.
//!
//! Ids come from the host (the tokenizer), so they are range-checked there: `TokenIds::upload` refuses an id
//! outside the vocabulary, and `embedding` refuses a table smaller than the vocabulary the ids were checked
//! against.
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, Kernel, grid_1d};
use crate::tensor::{DType, Tensor};

use super::elementwise::WG;
use super::split::row_chunk;
use super::{Recording, float, typed, u32_of};

/// Mirrors `TimestepParams` in kernels/embed/timestep.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct TimestepParams {
    pub n: u32,
    pub dim: u32,
    pub half: u32,
    pub flip: u32,
    pub shift: f32,
    pub scale: f32,
    pub log_max_period: f32,
    pub _pad: u32,
}

/// Mirrors `GatherParams` in kernels/embed/gather.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct GatherParams {
    pub n: u32,
    pub dim: u32,
    pub row0: u32,
    pub rows: u32,
}

/// The arguments of diffusers' `get_timestep_embedding` besides the timesteps and the dim (the output's width).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimestepOpts {
    pub flip_sin_to_cos: bool,
    pub downscale_freq_shift: f32,
    pub scale: f32,
    pub max_period: f32,
}

impl Default for TimestepOpts {
    /// diffusers' defaults: no flip, shift 1, scale 1, max period 10000.
    fn default() -> Self {
        TimestepOpts { flip_sin_to_cos: false, downscale_freq_shift: 1.0, scale: 1.0, max_period: 10000.0 }
    }
}

impl TimestepOpts {
    /// SD 1.x/2.x UNet's `time_proj`: `Timesteps(320, flip_sin_to_cos=True, downscale_freq_shift=0)`.
    pub fn sd() -> Self {
        TimestepOpts { flip_sin_to_cos: true, downscale_freq_shift: 0.0, ..Default::default() }
    }
}

pub fn timestep_kernel(dt: DType) -> Kernel {
    typed("embed/timestep.wgsl", dt)
}

pub fn gather_kernel(dt: DType) -> Kernel {
    typed("embed/gather.wgsl", dt)
}

/// Every embedding variant (f32 and f16 output / table), for the naga test.
pub fn variants() -> Vec<Kernel> {
    [DType::F32, DType::F16].into_iter().flat_map(|dt| [timestep_kernel(dt), gather_kernel(dt)]).collect()
}

/// Records `out = get_timestep_embedding(t, dim, ...)`: `t` f32 `[B]`, `out` `[B, dim]` (f32 or f16).
pub fn timestep_embedding(gpu: &Gpu, rec: &mut Recording, t: &Tensor, out: &Tensor, o: &TimestepOpts) -> Result<()> {
    let op = "timestep_embedding";
    let [b] = t.shape[..] else {
        return Err(Error::shape(op, format!("timesteps must be [B], got {:?}", t.shape)));
    };
    t.expect(op, "timesteps", &[b], DType::F32)?;
    float(op, "out", out)?;
    let [ob, dim] = out.shape[..] else {
        return Err(Error::shape(op, format!("out must be [B, dim], got {:?}", out.shape)));
    };
    if ob != b {
        return Err(Error::shape(op, format!("out has {ob} rows for {b} timesteps")));
    }
    if !(o.max_period > 0.0 && o.max_period.is_finite() && o.scale.is_finite() && o.downscale_freq_shift.is_finite()) {
        return Err(Error::shape(op, format!("invalid options {o:?}")));
    }
    let half = dim / 2;
    if half > 0 && half as f64 == o.downscale_freq_shift as f64 {
        return Err(Error::shape(op, format!("dim {dim} with downscale_freq_shift {half} divides by zero")));
    }
    if b * dim == 0 {
        return Ok(());
    }
    let p = TimestepParams {
        n: u32_of(op, "elements", b * dim)?,
        dim: dim as u32,
        half: half as u32,
        flip: o.flip_sin_to_cos as u32,
        shift: o.downscale_freq_shift,
        scale: o.scale,
        log_max_period: (o.max_period as f64).ln() as f32,
        _pad: 0,
    };
    let binds = [(0, Bind::T(t)), (1, Bind::T(out)), (2, Bind::Uniform(bytemuck::bytes_of(&p)))];
    rec.push(gpu.dispatch(op, &timestep_kernel(out.dtype), &binds, grid_1d(p.n.div_ceil(WG)))?);
    Ok(())
}

/// Token ids on the GPU, each checked on the host to be below `vocab` before upload.
#[derive(Clone, Debug)]
pub struct TokenIds {
    tensor: Tensor,
    vocab: usize,
}

impl TokenIds {
    /// Checks every id against `vocab` (an error names the first bad one) and uploads them as u32 `[N]`.
    pub fn upload(gpu: &Gpu, ids: &[u32], vocab: usize) -> Result<TokenIds> {
        if let Some((pos, id)) = ids.iter().enumerate().find(|(_, id)| **id as usize >= vocab) {
            return Err(Error::shape(
                "embedding",
                format!("token id {id} at position {pos} is outside the vocabulary of {vocab}"),
            ));
        }
        Ok(TokenIds { tensor: Tensor::from_u32(gpu, &[ids.len()], ids)?, vocab })
    }
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }
    pub fn len(&self) -> usize {
        self.tensor.numel()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bound every id was checked against.
    pub fn vocab(&self) -> usize {
        self.vocab
    }
}

/// Records `out = table[ids]`: `table` `[V, D]` (f32 or f16), `out` `[N, D]` of the table's dtype, `ids` checked
/// against a vocabulary of at most V.
///
/// The table is bound in chunks of rows (whole table when it fits the binding limit). `chunk_rows` caps the
/// chunk size (tests force several chunks on small tables with it); it is rounded down to the row multiple that
/// keeps chunk offsets aligned to `min_storage_buffer_offset_alignment`, and never below one such multiple.
pub fn embedding(
    gpu: &Gpu,
    rec: &mut Recording,
    ids: &TokenIds,
    table: &Tensor,
    out: &Tensor,
    chunk_rows: Option<usize>,
) -> Result<()> {
    let op = "embedding";
    float(op, "table", table)?;
    let [v, d] = table.shape[..] else {
        return Err(Error::shape(op, format!("table must be [V, D], got {:?}", table.shape)));
    };
    if ids.vocab > v {
        return Err(Error::shape(op, format!("ids were checked against {} entries, the table has {v}", ids.vocab)));
    }
    let n = ids.len();
    out.expect(op, "out", &[n, d], table.dtype)?;
    if n * d == 0 || v == 0 {
        return Ok(());
    }
    let row_bytes = d * table.dtype.size();
    let fit = row_chunk(gpu, op, v, &[row_bytes])?;
    let align = gpu.limits.min_storage_buffer_offset_alignment as usize;
    let step = align / gcd(align, row_bytes);
    let chunk = match chunk_rows {
        Some(want) => fit.min((want / step).max(1) * step),
        None => fit,
    };
    let total = u32_of(op, "output elements", n * d)?;
    u32_of(op, "table rows", v)?;
    let kernel = gather_kernel(table.dtype);
    for start in (0..v).step_by(chunk) {
        let len = chunk.min(v - start);
        let tc = table.rows(gpu, start, len)?;
        let p = GatherParams { n: total, dim: d as u32, row0: start as u32, rows: len as u32 };
        let binds = [
            (0, Bind::T(ids.tensor())),
            (1, Bind::T(&tc)),
            (2, Bind::T(out)),
            (3, Bind::Uniform(bytemuck::bytes_of(&p))),
        ];
        rec.push(gpu.dispatch(op, &kernel, &binds, grid_1d(total.div_ceil(WG)))?);
    }
    Ok(())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
