//! Kernel microbenchmarks at Stable Diffusion 1.5 shapes (64×64 latents): a GEMM sweep over every linear-layer
//! shape of the UNet at the CFG batch of a 2-prompt edit (4 rows) and square 1024³/2048³/4096³ GEMMs, 3×3
//! convolutions (one image) at 320/640/1280 channels, group norm 64×64×320, self-attention 4096×4096 with 8 heads
//! of 40, cross-attention 4096×77. Peaks are measured in the same run: the best GEMM of our own kernels (square
//! or SD-shaped) and a 16-byte-word copy. Quick mode shrinks the token counts and spatial sizes so lavapipe
//! finishes in seconds.
use crate::error::Result;
use crate::gpu::Gpu;
use crate::gpu::timing::{Clock, time_dispatches};
use crate::ops::attention::{
    AttentionOpts, CrossEdit, CrossEditOpts, EditData, Store, attention, cross_attention_edit,
};
use crate::ops::conv2d::{Conv2dOpts, conv2d, out_size};
use crate::ops::matmul::{MatmulOpts, choose_core, matmul};
use crate::ops::norm::{GroupNormOpts, group_norm};
use crate::ops::{Recording, copy};
use crate::tensor::{DType, Tensor};

use super::{Report, Row, now_utc};

struct Ctx<'a> {
    gpu: &'a Gpu,
    iters: u32,
    clock: Clock,
}

impl Ctx<'_> {
    /// Seconds per run of the dispatches `build` records.
    fn time(&mut self, build: impl FnOnce(&mut Recording) -> Result<()>) -> Result<f64> {
        let mut rec = Recording::new();
        build(&mut rec)?;
        let (s, clock) = time_dispatches(self.gpu, &rec, self.iters)?;
        self.clock = clock;
        Ok(s)
    }

    fn tensor(&self, shape: &[usize], dt: DType) -> Result<Tensor> {
        let t = Tensor::empty(self.gpu, shape, dt)?;
        // Small non-zero values: no denormals, no overflow in f16.
        t.fill(self.gpu, 0.01)?;
        Ok(t)
    }

    fn gemm(&mut self, m: usize, k: usize, n: usize, dt: DType) -> Result<f64> {
        let a = self.tensor(&[m, k], dt)?;
        let w = self.tensor(&[n, k], dt)?;
        let c = self.tensor(&[m, n], dt)?;
        let gpu = self.gpu;
        self.time(|rec| matmul(gpu, rec, &a, &w, &c, &MatmulOpts { trans_b: true, ..Default::default() }))
    }
}

/// The linear layers of the SD 1.5 UNet at 64×64 latents, one image: (name, query tokens (77: the text), K, N).
/// `ff.net.0.proj` is GEGLU's doubled projection; `proj_in`/`proj_out` (1×1) have the `to_q` shape.
pub const SD15_LINEARS: [(&str, usize, usize, usize); 15] = [
    ("attn1.to_q 320 @64²", 4096, 320, 320),
    ("ff.net.0.proj 320→2560 @64²", 4096, 320, 2560),
    ("ff.net.2 1280→320 @64²", 4096, 1280, 320),
    ("attn2.to_k 768→320 (text)", 77, 768, 320),
    ("attn1.to_q 640 @32²", 1024, 640, 640),
    ("ff.net.0.proj 640→5120 @32²", 1024, 640, 5120),
    ("ff.net.2 2560→640 @32²", 1024, 2560, 640),
    ("attn2.to_k 768→640 (text)", 77, 768, 640),
    ("attn1.to_q 1280 @16²", 256, 1280, 1280),
    ("ff.net.0.proj 1280→10240 @16²", 256, 1280, 10240),
    ("ff.net.2 5120→1280 @16²", 256, 5120, 1280),
    ("attn2.to_k 768→1280 (text)", 77, 768, 1280),
    ("attn1.to_q 1280 @8² (mid)", 64, 1280, 1280),
    ("ff.net.0.proj 1280→10240 @8²", 64, 1280, 10240),
    ("ff.net.2 5120→1280 @8²", 64, 5120, 1280),
];

fn gflops(flop: f64, s: f64) -> f64 {
    flop / s / 1e9
}

/// Runs the kernel benchmark on `gpu`.
pub fn run(gpu: &Gpu, quick: bool) -> Result<Report> {
    let mut cx = Ctx { gpu, iters: if quick { 1 } else { 20 }, clock: Clock::WallClock };
    let dtypes: Vec<DType> = if gpu.has_f16() { vec![DType::F32, DType::F16] } else { vec![DType::F32] };
    let dname = |dt: DType| {
        let core = choose_core(gpu, dt);
        format!("{}{}", dt.name(), if core == crate::ops::matmul::GemmCore::Coop { "/coop" } else { "" })
    };

    // Peaks measured in this run; the square GEMMs are also rows of the sweep.
    let mut peak = (0.0f64, String::new());
    let mut squares = Vec::new();
    let sizes: &[usize] = if quick { &[128, 256] } else { &[1024, 2048, 4096] };
    for &dt in &dtypes {
        for &s in sizes {
            let t = cx.gemm(s, s, s, dt)?;
            let g = gflops(2.0 * (s as f64).powi(3), t);
            if g > peak.0 {
                peak = (g, format!("{s}³ {}", dname(dt)));
            }
            squares.push((s, dt, t));
        }
    }
    let copy_bytes =
        if quick { 8usize << 20 } else { 1usize << 30 }.min(gpu.limits.max_storage_buffer_binding_size as usize);
    let copy_bytes = copy_bytes / 16 * 16;
    let (src, dst) = (cx.tensor(&[copy_bytes / 4], DType::F32)?, cx.tensor(&[copy_bytes / 4], DType::F32)?);
    let t_copy = cx.time(|rec| copy::copy(gpu, rec, &src, &dst))?;
    let peak_copy = 2.0 * copy_bytes as f64 / t_copy / 1e9;
    drop((src, dst));

    let mut rows = Vec::new();
    let mut compute = |name: &str, shape: String, dt: DType, flop: f64, s: f64| {
        let g = gflops(flop, s);
        rows.push(Row {
            name: name.into(),
            shape,
            dtype: dname(dt),
            ms: s * 1e3,
            gflops: Some(g),
            gbs: None,
            pct_peak: 0.0,
        });
    };

    // GEMM sweep: every linear-layer shape of the SD 1.5 UNet at 64×64 latents (`SD15_LINEARS`), at the CFG batch
    // of a 2-prompt edit (4 rows; quick mode: 1 row and 1/16 of the tokens), then the square GEMMs.
    let rows_per_call = if quick { 1 } else { 4 };
    let tok = |n: usize| if quick { (n / 16).max(1) } else { n };
    for &dt in &dtypes {
        // Quick mode (a smoke test on lavapipe) takes every other shape: the GEGLU and text projections.
        let (skip, step) = if quick { (1, 2) } else { (0, 1) };
        for &(name, tokens, k, n) in SD15_LINEARS.iter().skip(skip).step_by(step) {
            let m = rows_per_call * if tokens == 77 { 77 } else { tok(tokens) };
            let s = cx.gemm(m, k, n, dt)?;
            let flop = 2.0 * (m * k * n) as f64;
            // The GEMM peak is the best GEMM rate seen in this run, square or SD-shaped.
            if gflops(flop, s) > peak.0 {
                peak = (gflops(flop, s), format!("{m}x{k}x{n} {}", dname(dt)));
            }
            compute(name, format!("{m}x{k} · {k}x{n}"), dt, flop, s);
        }
    }
    for &(sz, dt, t) in &squares {
        compute(&format!("gemm {sz}³"), format!("{sz}x{sz} · {sz}x{sz}"), dt, 2.0 * (sz as f64).powi(3), t);
    }

    let side = |n: usize| if quick { (n / 8).max(2) } else { n };
    let convs: [(&str, usize, usize); 4] = [
        ("conv3x3 320 @64²", 64, 320),
        ("conv3x3 640 @32²", 32, 640),
        ("conv3x3 1280 @16²", 16, 1280),
        ("conv3x3 1280 @8²", 8, 1280),
    ];
    for &dt in &dtypes {
        for (name, hw, c) in convs {
            let hw = side(hw);
            let x = cx.tensor(&[1, hw, hw, c], dt)?;
            let w = cx.tensor(&[c, 3, 3, c], dt)?;
            let o = out_size(hw, 3, 1, 1);
            let y = cx.tensor(&[1, o, o, c], dt)?;
            let s =
                cx.time(|rec| conv2d(gpu, rec, &x, &w, &y, &Conv2dOpts { stride: 1, pad: 1, ..Default::default() }))?;
            compute(name, format!("{hw}x{hw}x{c} -> {c}"), dt, 2.0 * (o * o * c * 9 * c) as f64, s);
        }
    }

    // Attention, 8 heads of 40 (SD 1.5 at 64×64): flops count Q·Kᵀ and P·V, 4·Nq·Nk·D per head.
    let (heads, d) = (8usize, 40usize);
    let c = heads * d;
    for &dt in &dtypes {
        let nq = tok(4096);
        let (q, kv, o) = (cx.tensor(&[1, nq, c], dt)?, cx.tensor(&[1, nq, c], dt)?, cx.tensor(&[1, nq, c], dt)?);
        let s = cx.time(|rec| attention(gpu, rec, &q, &kv, &kv, &o, &AttentionOpts::heads(heads)))?;
        compute("self-attention (flash) 8x40", format!("{nq}x{nq}"), dt, (4 * nq * nq * c) as f64, s);

        let text = cx.tensor(&[2, 77, c], dt)?;
        let (q2, o2) = (cx.tensor(&[2, nq, c], dt)?, cx.tensor(&[2, nq, c], dt)?);
        let s = cx.time(|rec| attention(gpu, rec, &q2, &text, &text, &o2, &AttentionOpts::heads(heads)))?;
        compute("cross-attention 8x40, 2 rows", format!("{nq}x77"), dt, (2 * 4 * nq * 77 * c) as f64, s);

        // A word-swap-like edit of one target (identity mapper, α = 1) with the attention store on.
        let w: Vec<Vec<Vec<(u32, f32)>>> = vec![(0..77u32).map(|n| vec![(n, 1.0)]).collect()];
        let data = EditData::new(77, vec![1.0; 77], vec![1.0; 77], vec![0.0; 77], &w)?;
        let edit = CrossEdit::new(gpu, &data)?;
        let store = cx.tensor(&[2, nq, 77], DType::F32)?;
        let opts = CrossEditOpts {
            heads,
            scale: None,
            src_row: 0,
            edit: &edit,
            store: Some(Store { buf: &store, scale: 1.0 / heads as f32 }),
        };
        let s = cx.time(|rec| cross_attention_edit(gpu, rec, &q2, &text, &text, &o2, &opts))?;
        compute("cross-attention P2P edit + store", format!("{nq}x77, 1 target"), dt, (2 * 4 * nq * 77 * c) as f64, s);
    }

    for r in &mut rows {
        r.pct_peak = 100.0 * r.gflops.unwrap_or(0.0) / peak.0;
    }
    // Memory-bound kernels: effective bandwidth counts one read of the input and one write of the output.
    for &dt in &dtypes {
        let hw = side(64);
        let x = cx.tensor(&[1, hw, hw, 320], dt)?;
        let y = cx.tensor(&[1, hw, hw, 320], dt)?;
        let (g, b) = (cx.tensor(&[320], dt)?, cx.tensor(&[320], dt)?);
        let opts = GroupNormOpts { groups: 32, eps: 1e-5, silu: true };
        let s = cx.time(|rec| group_norm(gpu, rec, &x, &g, &b, &y, &opts))?;
        let gbs = 2.0 * x.bytes() as f64 / s / 1e9;
        rows.push(Row {
            name: "group_norm+silu 32 groups".into(),
            shape: format!("{hw}x{hw}x320"),
            dtype: dt.name().into(),
            ms: s * 1e3,
            gflops: None,
            gbs: Some(gbs),
            pct_peak: 100.0 * gbs / peak_copy,
        });
    }
    rows.push(Row {
        name: "copy (16-byte words)".into(),
        shape: format!("{} MiB", copy_bytes >> 20),
        dtype: "-".into(),
        ms: t_copy * 1e3,
        gflops: None,
        gbs: Some(peak_copy),
        pct_peak: 100.0,
    });

    let info = &gpu.info;
    Ok(Report {
        bench: "kernels".into(),
        adapter: info.name.clone(),
        backend: format!("{:?}", info.backend),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        date_utc: now_utc(),
        quick,
        clock: cx.clock.name().into(),
        peak_gemm_gflops: peak.0,
        peak_gemm_case: peak.1,
        peak_copy_gbs: peak_copy,
        rows,
        memory: Vec::new(),
    })
}
