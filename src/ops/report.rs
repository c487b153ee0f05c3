//! The kernel half of what `p2p-wgpu info` prints: which GEMM core, GEMM tiles and flash-attention core the ops
//! choose on an adapter, and where the tile choice comes from.
use crate::gpu::Gpu;
use crate::tensor::DType;

/// The kernel choices of the ops on `gpu`, as text.
pub fn kernel_report(gpu: &Gpu) -> String {
    let mut s = String::new();
    let core = super::matmul::choose_core(gpu, DType::F16);
    s += &format!("f16 GEMM core: {core:?}\n");
    s += &format!("GEMM tiles ({:?} class; {}):\n", super::matmul::tiles::classify(&gpu.info), tile_source(gpu));
    for dt in [DType::F32, DType::F16] {
        if dt == DType::F16 && !gpu.has_f16() {
            continue;
        }
        match super::matmul::tile_plan(gpu, dt) {
            Ok(p) => s += &format!("  {:<4} large {}, small {}\n", dt.name(), p.large, p.small),
            Err(e) => s += &format!("  {:<4} {e}\n", dt.name()),
        }
    }
    let flash: Vec<String> = [40, 64, 80, 160]
        .iter()
        .map(|&d| format!("{d}: {:?}", super::attention::flash_core(gpu, DType::F16, d)))
        .collect();
    s += &format!("f16 flash attention by head dim: {}\n", flash.join(", "));
    s
}

/// Where the GEMM tiles come from: `P2P_WGPU_GEMM`, a cached autotune (with the cache file), or the table.
fn tile_source(gpu: &Gpu) -> String {
    if gpu.options.gemm.is_some() {
        return "P2P_WGPU_GEMM".to_string();
    }
    let file = gpu.options.tile_cache.as_ref().map_or("no cache folder".to_string(), |p| p.display().to_string());
    if super::matmul::tiles::tuned(gpu, DType::F32).is_some() || super::matmul::tiles::tuned(gpu, DType::F16).is_some()
    {
        if super::matmul::tiles::TileCache::load(gpu.options.tile_cache.as_deref())
            .adapters
            .contains_key(&super::matmul::tiles::adapter_key(gpu))
        {
            format!("autotuned, cached in {file}")
        } else {
            format!("autotuned for this run only: {file} could not be written")
        }
    } else {
        format!("table; P2P_WGPU_AUTOTUNE=1 tunes and caches in {file}")
    }
}
