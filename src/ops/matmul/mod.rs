//! Batched GEMM and linear layers: `C = act(A · op(B) + bias) + residual`, computed like
//! `torch.nn.functional.linear` (TRANS_B, weights `[out, in]`) or `torch.matmul` (B as `[K, N]`).
//! Kernels: kernels/matmul/linear.wgsl (portable register-tiled core, f32 or f16 storage), linear_coop.wgsl
//! (cooperative matrices, f16, fast core) and linear_coop_basic.wgsl (the first coop core, a fallback); the tile of
//! each call comes from a [`TilePlan`] ([`tile_plan`]: environment, cached autotune, adapter table). Tensors larger
//! than the adapter's binding limit are split along rows when B is shared.
use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, Kernel};
use crate::tensor::{DType, Tensor};

use super::{Activation, Recording, lead_chunks, typed, u32_of};

/// Mirrors `GemmParams` in kernels/matmul/params.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct GemmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch: u32,
    pub a_batch_stride: u32,
    pub b_batch_stride: u32,
    pub c_batch_stride: u32,
    pub _pad0: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub in_c: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride: u32,
    pub pad: u32,
    pub _pad1: u32,
    pub _pad2: u32,
    pub _pad3: u32,
}

/// Options of a GEMM: B's layout and the fused epilogue.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatmulOpts<'a> {
    /// B is `[N, K]` (a linear layer's weight) instead of `[K, N]`.
    pub trans_b: bool,
    /// `[N]`, added before the activation.
    pub bias: Option<&'a Tensor>,
    pub act: Activation,
    /// Same shape as C, added after the activation.
    pub residual: Option<&'a Tensor>,
}

pub mod tiles;
pub use tiles::{GemmCore, GemmTile, TilePlan};

/// The kernel files of one GEMM family, one per core.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmFiles {
    pub tiled: &'static str,
    pub coop: &'static str,
    pub coop_basic: &'static str,
    pub coop_emu: &'static str,
}

pub(crate) const LINEAR_FILES: GemmFiles = GemmFiles {
    tiled: "matmul/linear.wgsl",
    coop: "matmul/linear_coop.wgsl",
    coop_basic: "matmul/linear_coop_basic.wgsl",
    coop_emu: "matmul/linear_mma_emu.wgsl",
};

/// The tile plan for `dtype` on `gpu`: `P2P_WGPU_GEMM` (one tile name for every GEMM, see [`GemmTile::name`]),
/// else a tuning cached for this adapter (or run now when `P2P_WGPU_AUTOTUNE` is set), else the adapter-class
/// table ([`crate::ops::matmul::tiles::table`]). `P2P_WGPU_NO_COOP=1` keeps cooperative matrices out of the table and the
/// autotune.
pub fn tile_plan(gpu: &Gpu, dtype: DType) -> Result<TilePlan> {
    if let Some(v) = gpu.options.gemm.clone() {
        let t = GemmTile::parse(&v).ok_or_else(|| {
            Error::msg(format!("P2P_WGPU_GEMM={v}: expected e.g. tiled-64x64x16-4x4, coop-128x128x32 or coop-basic"))
        })?;
        // f32 GEMMs cannot take a coop tile: they keep the table's choice.
        if !(t.f16_only() && dtype != DType::F16) {
            t.check(gpu, dtype).map_err(|e| Error::msg(format!("P2P_WGPU_GEMM={v} on {}: {e}", gpu.info.name)))?;
            return Ok(TilePlan {
                large: t,
                small: t,
                vec4: crate::ops::matmul::tiles::table(gpu, dtype).vec4,
                narrow: false,
            });
        }
    }
    let no_coop = gpu.options.no_coop;
    if let Some(plan) = crate::ops::matmul::tiles::tuned(gpu, dtype) {
        if !(no_coop && (plan.large.is_coop() || plan.small.is_coop())) {
            return Ok(plan);
        }
    }
    if gpu.options.autotune {
        let r = autotune(gpu, dtype)?;
        let saved = crate::ops::matmul::tiles::remember(gpu, dtype, r.stored());
        let stored = match &saved {
            Ok(path) => format!("cached in {}", path.display()),
            Err(why) => format!("not cached ({why}): used for this run only"),
        };
        gpu.note(format!(
            "GEMM autotune on {} ({}): large {}, small {}; {stored}",
            gpu.info.name,
            dtype.name(),
            r.plan.large,
            r.plan.small
        ));
        return Ok(r.plan);
    }
    Ok(crate::ops::matmul::tiles::table(gpu, dtype))
}

/// The core large `dtype` GEMMs use on `gpu` (what `p2p-wgpu info` and the benchmarks report).
pub fn choose_core(gpu: &Gpu, dtype: DType) -> GemmCore {
    tile_plan(gpu, dtype).map(|p| p.large.core).unwrap_or(GemmCore::Tiled)
}

/// The kernel variant of a GEMM family for `tile`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_kernel(
    files: GemmFiles,
    tile: GemmTile,
    vec4: bool,
    dtype: DType,
    trans_b: bool,
    bias: bool,
    residual: bool,
    act: Activation,
) -> Kernel {
    let k = match tile.core {
        GemmCore::Tiled => typed(files.tiled, dtype)
            .def("BM", format!("{}u", tile.bm))
            .def("BN", format!("{}u", tile.bn))
            .def("BK", format!("{}u", tile.bk))
            .def("TM", format!("{}u", tile.tm))
            .def("TN", format!("{}u", tile.tn)),
        GemmCore::Coop => typed(files.coop, dtype).def("BK", format!("{}u", tile.bk)).flag("FRAG4", tile.tm == 4),
        GemmCore::CoopEmu => {
            typed(files.coop_emu, dtype).def("BK", format!("{}u", tile.bk)).flag("FRAG4", tile.tm == 4)
        }
        GemmCore::CoopBasic => typed(files.coop_basic, dtype),
    };
    k.flag("VEC4", vec4)
        .flag("TRANS_B", trans_b)
        .flag("HAS_BIAS", bias)
        .flag("HAS_RESIDUAL", residual)
        .def("ACT", format!("{}u", act.id()))
}

/// Every variant of the GEMM kernels (every tile of [`crate::ops::matmul::tiles::all_tiles`]; portable tiles in f32 and
/// f16, coop tiles in f16), for the naga test.
pub fn variants() -> Vec<Kernel> {
    let mut v = Vec::new();
    for tile in crate::ops::matmul::tiles::all_tiles() {
        let dtypes: &[DType] = if tile.f16_only() { &[DType::F16] } else { &[DType::F32, DType::F16] };
        for &dt in dtypes {
            for trans_b in [false, true] {
                for (bias, residual) in [(false, false), (true, true)] {
                    for act in Activation::ALL {
                        for vec4 in [false, true] {
                            v.push(gemm_kernel(LINEAR_FILES, tile, vec4, dt, trans_b, bias, residual, act));
                        }
                    }
                }
            }
        }
    }
    v
}

/// What [`autotune`] measured: the chosen plan, and every candidate's GFLOP/s on the large and the small
/// representative GEMM.
#[derive(Clone, Debug)]
pub struct TuneReport {
    pub plan: TilePlan,
    pub timings: Vec<(GemmTile, f64, f64)>,
}

impl TuneReport {
    /// The plan as the tile cache stores it.
    pub fn stored(&self) -> crate::ops::matmul::tiles::TunedPlan {
        let gf = |t: GemmTile, large: bool| {
            self.timings.iter().find(|r| r.0 == t).map_or(0.0, |r| if large { r.1 } else { r.2 })
        };
        crate::ops::matmul::tiles::TunedPlan {
            large: self.plan.large.name(),
            small: self.plan.small.name(),
            vec4: self.plan.vec4,
            large_gflops: gf(self.plan.large, true),
            small_gflops: gf(self.plan.small, false),
        }
    }
}

/// Times every candidate tile ([`crate::ops::matmul::tiles::candidates`]) on two representative linear-layer GEMMs with
/// GPU timestamps (wall clock without them): a large one (SD 1.5's 64×64-latent `ff.net.2`, 4096×1280 → 320, with
/// M and K cut on software rasterisers) and a small one (2 × 77 text tokens × 768 → 320, the cross-attention K/V
/// projection), and picks the fastest of each. Candidates whose result is wrong are skipped. Storing the choice
/// is the caller's ([`tile_plan`] does, through [`crate::ops::matmul::tiles::remember`]).
pub fn autotune(gpu: &Gpu, dtype: DType) -> Result<TuneReport> {
    let cpu = gpu.info.device_type == wgpu::DeviceType::Cpu;
    let (lm, lk, ln) = if cpu { (512, 320, 320) } else { (4096, 1280, 320) };
    let (sm, sk, sn) = (154, 768, 320);
    let iters = if cpu { 2 } else { 10 };
    let large = TuneCase::new(gpu, dtype, lm, lk, ln)?;
    let small = TuneCase::new(gpu, dtype, sm, sk, sn)?;
    let mut timings = Vec::new();
    for tile in crate::ops::matmul::tiles::candidates(gpu, dtype) {
        let (Some(gl), Some(gs)) = (large.gflops(gpu, tile, iters)?, small.gflops(gpu, tile, iters)?) else {
            continue;
        };
        timings.push((tile, gl, gs));
    }
    let best = |f: fn(&(GemmTile, f64, f64)) -> f64| timings.iter().max_by(|a, b| f(a).total_cmp(&f(b))).map(|t| t.0);
    let (Some(large), Some(small)) = (best(|t| t.1), best(|t| t.2)) else {
        return Err(Error::msg(format!("GEMM autotune on {}: no candidate tile ran correctly", gpu.info.name)));
    };
    Ok(TuneReport {
        plan: TilePlan { large, small, vec4: crate::ops::matmul::tiles::table(gpu, dtype).vec4, narrow: false },
        timings,
    })
}

/// One representative GEMM of the autotune, with its inputs and a few reference entries.
struct TuneCase {
    a: Tensor,
    b: Tensor,
    c: Tensor,
    m: usize,
    k: usize,
    n: usize,
    av: Vec<f32>,
    bv: Vec<f32>,
}

impl TuneCase {
    fn new(gpu: &Gpu, dtype: DType, m: usize, k: usize, n: usize) -> Result<TuneCase> {
        // Small exact values (multiples of 1/8 below 1): every dtype and accumulation order gives the same sums.
        let av: Vec<f32> = (0..m * k).map(|i| ((i * 7 + 3) % 16) as f32 / 8.0 - 1.0).collect();
        let bv: Vec<f32> = (0..n * k).map(|i| ((i * 5 + 1) % 16) as f32 / 8.0 - 1.0).collect();
        Ok(TuneCase {
            a: Tensor::from_f32(gpu, &[m, k], dtype, &av)?,
            b: Tensor::from_f32(gpu, &[n, k], dtype, &bv)?,
            c: Tensor::empty(gpu, &[m, n], dtype)?,
            m,
            k,
            n,
            av,
            bv,
        })
    }

    /// GFLOP/s of `tile`, or `None` when its output is wrong.
    fn gflops(&self, gpu: &Gpu, tile: GemmTile, iters: u32) -> Result<Option<f64>> {
        let mut rec = Recording::new();
        let o = MatmulOpts { trans_b: true, ..Default::default() };
        let vec4 = crate::ops::matmul::tiles::table(gpu, self.a.dtype).vec4;
        matmul_with(
            gpu,
            &mut rec,
            &self.a,
            &self.b,
            &self.c,
            &o,
            TilePlan { large: tile, small: tile, vec4, narrow: false },
        )?;
        let (s, _) = crate::gpu::timing::time_dispatches(gpu, &rec, iters)?;
        let got = self.c.to_f32(gpu)?;
        let dt_out = self.c.dtype;
        for &(i, j) in &[(0, 0), (self.m - 1, self.n - 1), (self.m / 2, self.n / 3), (self.m - 1, 0)] {
            let want: f64 =
                (0..self.k).map(|kk| self.av[i * self.k + kk] as f64 * self.bv[j * self.k + kk] as f64).sum();
            let tol = if dt_out == DType::F16 { 1e-2 * want.abs().max(1.0) } else { 1e-3 };
            if (got[i * self.n + j] as f64 - want).abs() > tol {
                return Ok(None);
            }
        }
        Ok(Some(2.0 * (self.m * self.k * self.n) as f64 / s / 1e9))
    }
}

fn split_mk(op: &str, t: &Tensor, name: &str) -> Result<(usize, usize, usize)> {
    let r = t.shape.len();
    if r < 2 {
        return Err(Error::shape(op, format!("{name} must have rank >= 2, got {:?}", t.shape)));
    }
    let batch = t.shape[..r - 2].iter().product();
    Ok((batch, t.shape[r - 2], t.shape[r - 1]))
}

/// Records `out = act(a · op(b) + bias) + residual`.
///
/// Shapes: `a` `[..., M, K]`; `b` `[K, N]` / `[N, K]` (shared by every batch entry) or `[batch, K, N]` /
/// `[batch, N, K]`; `out` and `residual` `[..., M, N]`; `bias` `[N]`. All of one dtype.
pub fn matmul(gpu: &Gpu, rec: &mut Recording, a: &Tensor, b: &Tensor, out: &Tensor, o: &MatmulOpts) -> Result<()> {
    let plan = tile_plan(gpu, a.dtype)?;
    matmul_with(gpu, rec, a, b, out, o, plan)
}

/// [`matmul`] with the tile plan given (tests and the autotune run every tile through it).
pub fn matmul_with(
    gpu: &Gpu,
    rec: &mut Recording,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    o: &MatmulOpts,
    plan: TilePlan,
) -> Result<()> {
    let op = "matmul";
    let dt = a.dtype;
    let (batch, m, k) = split_mk(op, a, "a")?;
    let (b_batch, b0, b1) = split_mk(op, b, "b")?;
    let (kb, n) = if o.trans_b { (b1, b0) } else { (b0, b1) };
    if kb != k {
        return Err(Error::shape(op, format!("a is {:?} but b is {:?} (trans_b = {})", a.shape, b.shape, o.trans_b)));
    }
    if b_batch != 1 && b_batch != batch {
        return Err(Error::shape(op, format!("b batch {b_batch} does not match a batch {batch}")));
    }
    let mut want_out = a.shape.clone();
    *want_out.last_mut().unwrap() = n;
    out.expect(op, "out", &want_out, dt)?;
    b.expect(op, "b", &b.shape, dt)?;
    if let Some(bias) = o.bias {
        bias.expect(op, "bias", &[n], dt)?;
    }
    if let Some(r) = o.residual {
        r.expect(op, "residual", &want_out, dt)?;
    }
    if dt == DType::U32 {
        return Err(Error::shape(op, "u32 tensors cannot be multiplied"));
    }
    let shared_b = b_batch == 1 && b.shape.len() == 2;
    // Vector loads need every run of four to start at a multiple of 4 elements of its binding.
    let vec4 = plan.vec4
        && k % 4 == 0
        && (o.trans_b || n % 4 == 0)
        && [a, b].iter().all(|t| t.offset() % (4 * dt.size() as u64) == 0);
    let kernel = |tile: GemmTile| -> Result<Kernel> {
        tile.check(gpu, dt).map_err(|e| Error::shape(op, format!("tile {tile}: {e}")))?;
        Ok(gemm_kernel(LINEAR_FILES, tile, vec4, dt, o.trans_b, o.bias.is_some(), o.residual.is_some(), o.act))
    };
    if shared_b {
        // Fold the batch into M and split rows so that no binding exceeds the adapter's limit.
        let rows = batch * m;
        let a2 = a.reshape(&[rows, k])?;
        let c2 = out.reshape(&[rows, n])?;
        let r2 = o.residual.map(|r| r.reshape(&[rows, n])).transpose()?;
        for (start, len) in lead_chunks(gpu, op, rows, &[k * dt.size(), n * dt.size()])? {
            let (ac, cc) = (a2.rows(gpu, start, len)?, c2.rows(gpu, start, len)?);
            let rc = r2.as_ref().map(|r| r.rows(gpu, start, len)).transpose()?;
            let p = GemmParams {
                m: u32_of(op, "M", len)?,
                n: u32_of(op, "N", n)?,
                k: u32_of(op, "K", k)?,
                batch: 1,
                ..Default::default()
            };
            let tile = plan.pick(len, n, 1);
            push(gpu, rec, &kernel(tile)?, tile, &ac, b, &cc, o.bias, rc.as_ref(), &p, 1)?;
        }
        return Ok(());
    }
    let p = GemmParams {
        m: u32_of(op, "M", m)?,
        n: u32_of(op, "N", n)?,
        k: u32_of(op, "K", k)?,
        batch: u32_of(op, "batch", batch)?,
        a_batch_stride: u32_of(op, "a stride", m * k)?,
        b_batch_stride: if b_batch == 1 { 0 } else { u32_of(op, "b stride", k * n)? },
        c_batch_stride: u32_of(op, "c stride", m * n)?,
        ..Default::default()
    };
    let tile = plan.pick(m, n, batch);
    push(gpu, rec, &kernel(tile)?, tile, a, b, out, o.bias, o.residual, &p, batch)
}

/// Appends one GEMM-family dispatch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn push(
    gpu: &Gpu,
    rec: &mut Recording,
    kernel: &Kernel,
    tile: GemmTile,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    p: &GemmParams,
    batch: usize,
) -> Result<()> {
    let gx = p.n.div_ceil(tile.bn);
    let gy = p.m.div_ceil(tile.bm);
    let mut binds =
        vec![(0, Bind::T(a)), (1, Bind::T(b)), (2, Bind::T(out)), (3, Bind::Uniform(bytemuck::bytes_of(p)))];
    if let Some(bias) = bias {
        binds.push((4, Bind::T(bias)));
    }
    if let Some(r) = residual {
        binds.push((5, Bind::T(r)));
    }
    rec.push(gpu.dispatch("matmul", kernel, &binds, [gx, gy, u32_of("matmul", "batch", batch)?])?);
    Ok(())
}
