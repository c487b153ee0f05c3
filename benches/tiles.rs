//! `cargo bench --bench tiles`: compile + first-run time and steady time of every GEMM tile candidate of this
//! adapter (`ops::matmul::tiles::candidates`) on four SD-shaped linear-layer GEMMs, one line per tile. These are
//! the timings behind the CPU row of the tile table; `P2P_WGPU_AUTOTUNE=1` makes the same choice automatically.
use std::time::Instant;

use p2p_wgpu::gpu::{Gpu, GpuOptions};
use p2p_wgpu::ops::Recording;
use p2p_wgpu::ops::matmul::tiles::{TilePlan, candidates};
use p2p_wgpu::ops::matmul::{MatmulOpts, matmul_with};
use p2p_wgpu::tensor::{DType, Tensor};

/// `[m, k] · [n, k]ᵀ` shapes: a cross-attention projection, a 16² self-attention block, a 154-token text
/// projection and an 8² feed-forward layer.
const SHAPES: [(usize, usize, usize); 4] = [(77, 64, 96), (256, 320, 320), (154, 768, 320), (64, 1280, 2560)];

fn main() -> p2p_wgpu::Result<()> {
    let gpu = Gpu::new(&GpuOptions::from_env())?;
    println!("adapter: {} ({:?})", gpu.info.name, gpu.info.device_type);
    let dtypes = if gpu.has_f16() { vec![DType::F32, DType::F16] } else { vec![DType::F32] };
    for dt in dtypes {
        for tile in candidates(&gpu, dt) {
            let plan = TilePlan { large: tile, small: tile, vec4: false, narrow: false };
            let mut line = format!("{dt:?} {:<22}", tile.name());
            for (m, k, n) in SHAPES {
                let a = Tensor::from_f32(&gpu, &[m, k], dt, &vec![0.01; m * k])?;
                let b = Tensor::from_f32(&gpu, &[n, k], dt, &vec![0.01; n * k])?;
                let out = Tensor::empty(&gpu, &[m, n], dt)?;
                let o = MatmulOpts { trans_b: true, ..Default::default() };
                let t0 = Instant::now();
                let mut rec = Recording::new();
                matmul_with(&gpu, &mut rec, &a, &b, &out, &o, plan)?;
                gpu.run(&rec)?;
                gpu.sync()?;
                let first = t0.elapsed().as_secs_f64();
                let t1 = Instant::now();
                for _ in 0..3 {
                    gpu.run(&rec)?;
                }
                gpu.sync()?;
                let s = t1.elapsed().as_secs_f64() / 3.0;
                let gflops = 2.0 * (m * k * n) as f64 / s / 1e9;
                line +=
                    &format!(" | {m}x{k}x{n}: first {:.0} ms, {:.1} ms = {gflops:.2} GFLOP/s", first * 1e3, s * 1e3);
            }
            println!("{line}");
        }
    }
    Ok(())
}
