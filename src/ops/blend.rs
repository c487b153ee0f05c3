//! Local blending on the GPU (kernels/blend/), the same computation as the host reference `p2p::blend`
//! (docs/DESIGN.md §5): from the running sum of stored cross-attention maps `[B, res², keys]`, per prompt the sum over
//! its blend-word tokens, a 3×3 max-pool, nearest upsampling to the latent size, division by the image's own
//! maximum and a strict threshold, each target's mask OR-ed with the source's; then, in place on the f32 sample
//! `[B, h, w, C]`, `x_b ← x_src + mask_b·(x_b − x_src)`. Three dispatches, all built once per run: the masks stay in
//! a GPU buffer (`[B, h·w]`, 0 or 1) that is read back only when asked.
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Dispatch, Gpu, Kernel, grid_1d};
use crate::tensor::{DType, Tensor};

use super::elementwise::WG;
use super::u32_of;

/// Mirrors `BlendParams` in kernels/blend/params.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct BlendParams {
    pub b: u32,
    pub res: u32,
    pub keys: u32,
    pub h: u32,
    pub w: u32,
    pub c: u32,
    pub thr: f32,
    pub n: u32,
}

pub fn pool_kernel() -> Kernel {
    Kernel::new("blend/pool.wgsl")
}

pub fn mask_kernel() -> Kernel {
    Kernel::new("blend/mask.wgsl")
}

pub fn apply_kernel() -> Kernel {
    Kernel::new("blend/apply.wgsl")
}

/// Every variant, for the naga test.
pub fn variants() -> Vec<Kernel> {
    vec![pool_kernel(), mask_kernel(), apply_kernel()]
}

/// Local blending of one run, bound to its store and sample.
pub struct LocalBlend {
    masks: Tensor,
    /// Kept alive for the dispatches.
    _pooled: Tensor,
    _positions: Tensor,
    compute: Vec<Dispatch>,
    apply: Option<Dispatch>,
    b: usize,
    hw: usize,
}

impl LocalBlend {
    /// `store` f32 `[B, res², keys]` (row 0 = source), `positions[b]` the blend-word token positions of prompt b
    /// (B rows), `x` the f32 sample `[B, h, w, C]`.
    pub fn new(gpu: &Gpu, store: &Tensor, positions: &[Vec<usize>], threshold: f32, x: &Tensor) -> Result<LocalBlend> {
        let op = "local blend";
        if store.shape.len() != 3 || x.shape.len() != 4 {
            return Err(Error::shape(op, format!("store {:?} and sample {:?}", store.shape, x.shape)));
        }
        let (b, r2, keys) = (store.shape[0], store.shape[1], store.shape[2]);
        let res = (r2 as f64).sqrt().round() as usize;
        if res * res != r2 || b == 0 {
            return Err(Error::shape(op, format!("store {:?} does not hold square maps", store.shape)));
        }
        store.expect(op, "store", &store.shape, DType::F32)?;
        let (h, w, c) = (x.shape[1], x.shape[2], x.shape[3]);
        x.expect(op, "sample", &[b, h, w, c], DType::F32)?;
        if h * w == 0 {
            return Err(Error::shape(op, format!("empty sample {:?}", x.shape)));
        }
        if positions.len() != b {
            return Err(Error::shape(op, format!("{} position rows for {b} prompts", positions.len())));
        }
        if !threshold.is_finite() {
            return Err(Error::msg(format!("{op}: threshold {threshold}")));
        }
        if let Some(&bad) = positions.iter().flatten().find(|&&p| p >= keys) {
            return Err(Error::shape(op, format!("token position {bad} beyond {keys} keys")));
        }
        // B + 1 prefix offsets, then every row's positions.
        let mut table: Vec<u32> = Vec::with_capacity(b + 1 + positions.iter().map(Vec::len).sum::<usize>());
        let mut acc = 0u32;
        table.push(0);
        for row in positions {
            acc += row.len() as u32;
            table.push(acc);
        }
        table.extend(positions.iter().flatten().map(|&p| p as u32));
        let pos = Tensor::from_u32(gpu, &[table.len()], &table)?;
        let pooled = Tensor::empty(gpu, &[b, r2], DType::F32)?;
        let masks = Tensor::from_f32(gpu, &[b, h * w], DType::F32, &vec![0.0; b * h * w])?;
        let plane = h * w * c;
        let p = BlendParams {
            b: u32_of(op, "prompts", b)?,
            res: res as u32,
            keys: u32_of(op, "keys", keys)?,
            h: u32_of(op, "height", h)?,
            w: u32_of(op, "width", w)?,
            c: u32_of(op, "channels", c)?,
            thr: threshold,
            n: u32_of(op, "elements", (b - 1) * plane)?,
        };
        u32_of(op, "store elements", store.numel())?;
        u32_of(op, "sample elements", x.numel())?;
        let u = bytemuck::bytes_of(&p);
        let pool = gpu.dispatch(
            op,
            &pool_kernel(),
            &[(0, Bind::T(store)), (1, Bind::T(&pos)), (2, Bind::T(&pooled)), (3, Bind::Uniform(u))],
            grid_1d(u32_of(op, "map pixels", b * r2)?.div_ceil(WG)),
        )?;
        let mask = gpu.dispatch(
            op,
            &mask_kernel(),
            &[(0, Bind::T(&pooled)), (1, Bind::T(&masks)), (2, Bind::Uniform(u))],
            [p.b, 1, 1],
        )?;
        let apply = if p.n == 0 {
            None
        } else {
            Some(gpu.dispatch(
                op,
                &apply_kernel(),
                &[(0, Bind::T(&masks)), (1, Bind::T(x)), (2, Bind::Uniform(u))],
                grid_1d(p.n.div_ceil(WG)),
            )?)
        };
        Ok(LocalBlend { masks, _pooled: pooled, _positions: pos, compute: vec![pool, mask], apply, b, hw: h * w })
    }

    /// Computes the masks from the store's current contents, then blends the sample (in this order).
    pub fn dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.compute.iter().chain(self.apply.iter())
    }

    /// The masks of the last run, f32 `[B, h·w]`.
    pub fn masks(&self) -> &Tensor {
        &self.masks
    }

    /// Downloads the masks of the last run as `[B][h·w]` (waits for submitted work).
    pub fn read_masks(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        let m = self.masks.to_f32(gpu)?;
        Ok(m.chunks(self.hw).take(self.b).map(<[f32]>::to_vec).collect())
    }
}
