//! GEMM tile configurations: the kernel core and its tile sizes ([`GemmTile`]), the per-adapter-class table that
//! picks them ([`table`]), and the per-adapter cache of autotuned choices (`$XDG_CACHE_HOME/p2p-wgpu/tiles.json`,
//! see [`TileCache`]). The GEMM op (`ops::matmul`) combines them: environment override, then a cached tuning,
//! then the table.
//!
//! The table's entries for real GPUs are reasoned, not measured (the project's only measurements are the coop
//! probe figures in GPU.md); the autotune (`P2P_WGPU_AUTOTUNE=1`, `ops::matmul::autotune`) replaces them with
//! timed choices on the machine itself.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::gpu::Gpu;
use crate::tensor::DType;

/// Which GEMM core runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmCore {
    /// Register-tiled, workgroup-memory staged (double-buffered), any adapter.
    Tiled,
    /// Cooperative matrices (16×16 f16 → f32), 2×2 subgroups of 32 lanes with FR×FR fragments each,
    /// double-buffered f16 staging: the fast core.
    Coop,
    /// The first cooperative-matrix core (64×64 tile, single-stage staging), kept as a fallback.
    CoopBasic,
    /// The `Coop` core with its fragments emulated in plain arithmetic (kernels/matmul/frag_emu.wgsl): never chosen
    /// by the table; tests run it to check the coop core's staging, indexing and epilogue on any f16 adapter.
    CoopEmu,
}

/// A GEMM kernel configuration.
///
/// - `Tiled`: a `bm × bn` tile of C per workgroup, K slices of `bk`, `tm × tn` outputs per invocation
///   (`(bn/tn) × (bm/tm)` invocations).
/// - `Coop`: `tm = tn` = fragments per subgroup side (2 or 4), `bm = bn = 32·tm`, `bk` 16 or 32.
/// - `CoopBasic`: 64×64×32, 2×2 fragments per subgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmTile {
    pub core: GemmCore,
    pub bm: u32,
    pub bn: u32,
    pub bk: u32,
    pub tm: u32,
    pub tn: u32,
}

impl GemmTile {
    pub const fn tiled(bm: u32, bn: u32, bk: u32, tm: u32, tn: u32) -> GemmTile {
        GemmTile { core: GemmCore::Tiled, bm, bn, bk, tm, tn }
    }

    /// The fast cooperative-matrix core with `fr × fr` fragments per subgroup and K slices of `bk`.
    pub const fn coop(fr: u32, bk: u32) -> GemmTile {
        GemmTile { core: GemmCore::Coop, bm: 32 * fr, bn: 32 * fr, bk, tm: fr, tn: fr }
    }

    /// [`GemmTile::coop`] with emulated fragments ([`GemmCore::CoopEmu`]).
    pub const fn coop_emu(fr: u32, bk: u32) -> GemmTile {
        GemmTile { core: GemmCore::CoopEmu, bm: 32 * fr, bn: 32 * fr, bk, tm: fr, tn: fr }
    }

    pub const COOP_BASIC: GemmTile = GemmTile { core: GemmCore::CoopBasic, bm: 64, bn: 64, bk: 32, tm: 2, tn: 2 };

    /// Whether the core uses cooperative matrices (f16 only, subgroup size 32).
    pub fn is_coop(&self) -> bool {
        matches!(self.core, GemmCore::Coop | GemmCore::CoopBasic)
    }

    /// Whether the kernel takes f16 storage only (the coop cores, emulated or not).
    pub fn f16_only(&self) -> bool {
        self.core != GemmCore::Tiled
    }

    /// Short name, also the syntax of `P2P_WGPU_GEMM` and of the cache file: `tiled-64x64x16-4x4`,
    /// `coop-128x128x32`, `coop-basic`.
    pub fn name(&self) -> String {
        match self.core {
            GemmCore::Tiled => format!("tiled-{}x{}x{}-{}x{}", self.bm, self.bn, self.bk, self.tm, self.tn),
            GemmCore::Coop => format!("coop-{}x{}x{}", self.bm, self.bn, self.bk),
            GemmCore::CoopBasic => "coop-basic".to_string(),
            GemmCore::CoopEmu => format!("coop-emu-{}x{}x{}", self.bm, self.bn, self.bk),
        }
    }

    /// Parses [`GemmTile::name`]'s syntax; `None` for anything else (the shape is checked by [`GemmTile::check`]).
    pub fn parse(s: &str) -> Option<GemmTile> {
        let s = s.trim().to_ascii_lowercase();
        if s == "coop-basic" {
            return Some(GemmTile::COOP_BASIC);
        }
        let nums = |t: &str| -> Option<Vec<u32>> { t.split('x').map(|x| x.parse().ok()).collect() };
        if let Some(rest) = s.strip_prefix("coop-emu-") {
            let v = nums(rest)?;
            if v.len() == 3 && v[0] == v[1] && v[0] % 32 == 0 {
                return Some(GemmTile::coop_emu(v[0] / 32, v[2]));
            }
            return None;
        }
        if let Some(rest) = s.strip_prefix("coop-") {
            let v = nums(rest)?;
            if v.len() == 3 && v[0] == v[1] && v[0] % 32 == 0 {
                return Some(GemmTile::coop(v[0] / 32, v[2]));
            }
            return None;
        }
        let rest = s.strip_prefix("tiled-")?;
        let (tile, thread) = rest.split_once('-')?;
        let (t, r) = (nums(tile)?, nums(thread)?);
        (t.len() == 3 && r.len() == 2).then(|| GemmTile::tiled(t[0], t[1], t[2], r[0], r[1]))
    }

    /// Invocations per workgroup.
    pub fn invocations(&self) -> u32 {
        match self.core {
            GemmCore::Tiled => (self.bn / self.tn.max(1)) * (self.bm / self.tm.max(1)),
            _ => 128,
        }
    }

    /// Workgroup memory in bytes (the larger of the plain and transposed-B layouts for the coop core).
    pub fn workgroup_bytes(&self) -> u32 {
        match self.core {
            GemmCore::Tiled => 2 * self.bk * (self.bm + self.bn) * 4,
            GemmCore::Coop | GemmCore::CoopEmu => {
                let a = self.bm * (self.bk + 8);
                let b = (self.bn * (self.bk + 8)).max(self.bk * (self.bn + 8));
                2 * (a + b) * 2 + 4096
            }
            GemmCore::CoopBasic => 2 * 2048 * 2 + 4096,
        }
    }

    /// Why this configuration cannot run on `gpu` with `dtype` storage, or `Ok`.
    pub fn check(&self, gpu: &Gpu, dtype: DType) -> Result<(), String> {
        let l = &gpu.limits;
        let wg = self.workgroup_bytes();
        if wg > l.max_compute_workgroup_storage_size {
            return Err(format!(
                "needs {wg} bytes of workgroup memory, the adapter has {}",
                l.max_compute_workgroup_storage_size
            ));
        }
        match self.core {
            GemmCore::Tiled => {
                let (bm, bn, bk, tm, tn) = (self.bm, self.bn, self.bk, self.tm, self.tn);
                if tm == 0 || tn == 0 || bk == 0 || tm % 4 != 0 || tn % 4 != 0 || bk % 4 != 0 {
                    return Err("TM, TN and BK must be positive multiples of 4".into());
                }
                if bm % tm != 0 || bn % tn != 0 {
                    return Err("BM and BN must be multiples of TM and TN".into());
                }
                let nt = self.invocations();
                if (bm * bk / 4) % nt != 0 || (bn * bk / 4) % nt != 0 {
                    return Err(format!("BM·BK/4 and BN·BK/4 must be multiples of the {nt} invocations"));
                }
                if nt > l.max_compute_invocations_per_workgroup
                    || bn / tn > l.max_compute_workgroup_size_x
                    || bm / tm > l.max_compute_workgroup_size_y
                {
                    return Err(format!("{}×{} invocations exceed the adapter's workgroup limits", bn / tn, bm / tm));
                }
                Ok(())
            }
            GemmCore::Coop | GemmCore::CoopBasic | GemmCore::CoopEmu => {
                if dtype != DType::F16 {
                    return Err("cooperative-matrix cores take f16 storage only".into());
                }
                if self.core == GemmCore::CoopEmu {
                    if !gpu.has_f16() || l.max_compute_invocations_per_workgroup < 128 {
                        return Err("the emulated coop core needs SHADER_F16 and 128 invocations".into());
                    }
                } else if !gpu.coop_usable() {
                    return Err("no 16×16×16 f16→f32 cooperative matrices with subgroup size 32".into());
                }
                if self.core != GemmCore::CoopBasic
                    && (!(self.tm == 2 || self.tm == 4) || self.tn != self.tm || !(self.bk == 16 || self.bk == 32))
                {
                    return Err("the coop core has 2×2 or 4×4 fragments per subgroup and BK 16 or 32".into());
                }
                Ok(())
            }
        }
    }
}

impl std::fmt::Display for GemmTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The adapter classes of the tile table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterClass {
    /// Cooperative matrices usable (f16 GEMMs take the coop core; f32 ones the vendor's tiled entry).
    Nvidia,
    Amd,
    Intel,
    Apple,
    /// Software rasterisers (lavapipe, SwiftShader, WARP): `DeviceType::Cpu`.
    Cpu,
    Other,
}

pub fn classify(info: &wgpu::AdapterInfo) -> AdapterClass {
    if info.device_type == wgpu::DeviceType::Cpu {
        return AdapterClass::Cpu;
    }
    match info.vendor {
        0x10de => AdapterClass::Nvidia,
        0x1002 | 0x1022 => AdapterClass::Amd,
        0x8086 => AdapterClass::Intel,
        0x106b => AdapterClass::Apple,
        _ => AdapterClass::Other,
    }
}

/// The two tiles of a choice: `large` for GEMMs with enough workgroups to fill the GPU, `small` for the rest; and
/// whether operands are loaded as vec4 where the shape allows (`VEC4` variants: one load per run of four instead of
/// four; off on software rasterisers, where it gains nothing and doubles the variants to compile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePlan {
    pub large: GemmTile,
    pub small: GemmTile,
    pub vec4: bool,
    /// GEMMs with at most 16 or 32 output columns take [`NARROW_16`] / [`NARROW_32`] instead of a wider portable
    /// tile (the adapter tables and autotuned plans; not a tile forced by `P2P_WGPU_GEMM`).
    pub narrow: bool,
}

/// Workgroup count (with the large tile) below which a GEMM takes the small tile: about one workgroup per compute
/// unit of a large GPU.
pub const SMALL_GRID: u64 = 128;

impl TilePlan {
    /// The tile for an `m × n` output, `batch` times.
    pub fn pick(&self, m: usize, n: usize, batch: usize) -> GemmTile {
        let t = self.large;
        if self.narrow && t.core == GemmCore::Tiled {
            // A 64-wide tile on 16 columns computes 4× the work it keeps (the narrow SR UNet levels of the default
            // model on lavapipe: conv 16→16 at 128² 0.57 s → see NOTES.md).
            for narrow in [NARROW_16, NARROW_32] {
                if n <= narrow.bn as usize && t.bn > narrow.bn {
                    return narrow;
                }
            }
        }
        let groups = (m as u64).div_ceil(t.bm as u64) * (n as u64).div_ceil(t.bn as u64) * batch as u64;
        if groups < SMALL_GRID { self.small } else { self.large }
    }
}

/// Portable tiles that every adapter accepts (16 KiB of workgroup memory, 256 or 64 invocations).
pub const TILED_64: GemmTile = GemmTile::tiled(64, 64, 16, 4, 4);
/// Narrow portable tiles for GEMMs with few output columns (64 and 128 invocations, 10 and 12 KiB).
pub const NARROW_16: GemmTile = GemmTile::tiled(64, 16, 16, 4, 4);
pub const NARROW_32: GemmTile = GemmTile::tiled(64, 32, 16, 4, 4);
pub const TILED_32: GemmTile = GemmTile::tiled(32, 32, 16, 4, 4);

/// The tile table: for each adapter class and storage type, the large and small tiles, each replaced by the next
/// fallback when the adapter's limits refuse it. See NOTES.md ("GEMM tiles") for the reasoning behind each row.
pub fn table(gpu: &Gpu, dtype: DType) -> TilePlan {
    let fits = |t: &GemmTile| t.check(gpu, dtype).is_ok();
    let first = |c: &[GemmTile]| c.iter().copied().find(fits).unwrap_or(TILED_32);
    let class = classify(&gpu.info);
    let vec4 = class != AdapterClass::Cpu;
    if dtype == DType::F16 && gpu.coop_usable() && !gpu.options.no_coop {
        let large = first(&[GemmTile::coop(4, 32), GemmTile::coop(4, 16), GemmTile::coop(2, 32), GemmTile::COOP_BASIC]);
        let small = first(&[GemmTile::coop(2, 32), GemmTile::coop(2, 16), GemmTile::COOP_BASIC]);
        return TilePlan { large, small, vec4, narrow: false };
    }
    let (large, small) = match class {
        // llvmpipe (Mesa 22.3, 8-wide subgroups): one tile for every shape, as each variant costs a JIT compile
        // (0.3-0.8 s) and the candidates run within noise of each other; see NOTES.md.
        AdapterClass::Cpu => (first(&[CPU_TILE]), first(&[CPU_TILE])),
        // Discrete GPUs with wide register files: 8×4 per invocation, 128×64 tiles (24 KiB).
        AdapterClass::Nvidia | AdapterClass::Amd => {
            (first(&[GemmTile::tiled(128, 64, 16, 8, 4), TILED_64]), first(&[TILED_64]))
        }
        // Integrated GPUs and unknown vendors: the portable 64×64 tile within WebGPU's default 16 KiB.
        AdapterClass::Intel | AdapterClass::Apple | AdapterClass::Other => {
            (first(&[TILED_64]), first(&[TILED_32, TILED_64]))
        }
    };
    let narrow = [NARROW_16, NARROW_32].iter().all(fits);
    TilePlan { large, small, vec4, narrow }
}

/// The tile of software rasterisers (see NOTES.md for the lavapipe timings behind it).
pub const CPU_TILE: GemmTile = TILED_64;

/// Candidates the autotune times for `dtype` on `gpu` (those the adapter accepts).
pub fn candidates(gpu: &Gpu, dtype: DType) -> Vec<GemmTile> {
    let mut v = vec![
        GemmTile::tiled(64, 64, 16, 4, 4),
        GemmTile::tiled(32, 32, 16, 4, 4),
        GemmTile::tiled(64, 64, 32, 4, 4),
        GemmTile::tiled(128, 64, 16, 8, 4),
        GemmTile::tiled(128, 128, 16, 8, 8),
    ];
    if dtype == DType::F16 && !gpu.options.no_coop {
        v.extend([
            GemmTile::coop(4, 32),
            GemmTile::coop(4, 16),
            GemmTile::coop(2, 32),
            GemmTile::coop(2, 16),
            GemmTile::COOP_BASIC,
        ]);
    }
    v.retain(|t| t.check(gpu, dtype).is_ok());
    v
}

/// Every tile configuration kernels are built for (the naga test translates each).
pub fn all_tiles() -> Vec<GemmTile> {
    vec![
        GemmTile::tiled(64, 64, 16, 4, 4),
        NARROW_16,
        NARROW_32,
        GemmTile::tiled(32, 32, 16, 4, 4),
        GemmTile::tiled(64, 64, 32, 4, 4),
        GemmTile::tiled(128, 64, 16, 8, 4),
        GemmTile::tiled(128, 128, 16, 8, 8),
        GemmTile::coop(4, 32),
        GemmTile::coop(4, 16),
        GemmTile::coop(2, 32),
        GemmTile::coop(2, 16),
        GemmTile::COOP_BASIC,
        GemmTile::coop_emu(4, 32),
        GemmTile::coop_emu(4, 16),
        GemmTile::coop_emu(2, 32),
        GemmTile::coop_emu(2, 16),
    ]
}

/// The cache key of an adapter: name, driver, driver info and backend (a driver update re-tunes).
pub fn adapter_key(gpu: &Gpu) -> String {
    let i = &gpu.info;
    format!("{} | {} {} | {:?}", i.name, i.driver, i.driver_info, i.backend)
}

/// Tuned plans of one adapter, by storage type name (`f32`, `f16`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TunedAdapter {
    pub plans: BTreeMap<String, TunedPlan>,
}

/// One tuned choice as stored: tile names ([`GemmTile::name`]) and the measured GFLOP/s of each.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TunedPlan {
    pub large: String,
    pub small: String,
    /// Vector operand loads (the table's choice for the adapter class; not timed).
    #[serde(default)]
    pub vec4: bool,
    pub large_gflops: f64,
    pub small_gflops: f64,
}

/// The tile cache file: `{ "version": 1, "adapters": { key: { "plans": { "f16": {..} } } } }`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TileCache {
    pub version: u32,
    pub adapters: BTreeMap<String, TunedAdapter>,
}

impl TileCache {
    /// Reads the cache file `path` (`GpuOptions::tile_cache`); a missing, unreadable or malformed file is an
    /// empty cache (the table applies).
    pub fn load(path: Option<&Path>) -> TileCache {
        path.and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str::<TileCache>(&s).ok())
            .filter(|c| c.version == 1)
            .unwrap_or_default()
    }

    /// Writes the cache file (creating its folder), or says why it could not.
    pub fn save(&self, path: Option<&Path>) -> Result<PathBuf, String> {
        let p = path.ok_or("no cache folder: neither XDG_CACHE_HOME nor HOME is set")?.to_path_buf();
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    }
}

/// Tuned plans of this process, by (adapter key, dtype name): the cache file's entries, read once, plus any
/// autotune run since. A tuning that could not be written to the file still applies here.
static TUNED: Mutex<Option<BTreeMap<(String, String), TilePlan>>> = Mutex::new(None);

fn tuned_map<T>(gpu: &Gpu, f: impl FnOnce(&mut BTreeMap<(String, String), TilePlan>) -> T) -> T {
    let mut g = TUNED.lock().unwrap_or_else(|p| p.into_inner());
    let map = g.get_or_insert_with(|| {
        let mut m = BTreeMap::new();
        for (key, ad) in TileCache::load(gpu.options.tile_cache.as_deref()).adapters {
            for (dt, plan) in ad.plans {
                if let (Some(large), Some(small)) = (GemmTile::parse(&plan.large), GemmTile::parse(&plan.small)) {
                    m.insert((key.clone(), dt), TilePlan { large, small, vec4: plan.vec4, narrow: true });
                }
            }
        }
        m
    });
    f(map)
}

/// The tuned plan for `gpu` and `dtype`, if the cache or an autotune of this process has one that still fits.
pub fn tuned(gpu: &Gpu, dtype: DType) -> Option<TilePlan> {
    let plan = tuned_map(gpu, |m| m.get(&(adapter_key(gpu), dtype.name().to_string())).copied())?;
    (plan.large.check(gpu, dtype).is_ok() && plan.small.check(gpu, dtype).is_ok()).then_some(plan)
}

/// Records a tuned plan for this process and tries to add it to the cache file; returns the file written or why
/// it could not be (the plan applies to this process either way).
pub fn remember(gpu: &Gpu, dtype: DType, plan: TunedPlan) -> Result<PathBuf, String> {
    if let (Some(large), Some(small)) = (GemmTile::parse(&plan.large), GemmTile::parse(&plan.small)) {
        let p = TilePlan { large, small, vec4: plan.vec4, narrow: true };
        tuned_map(gpu, |m| m.insert((adapter_key(gpu), dtype.name().to_string()), p));
    }
    let path = gpu.options.tile_cache.as_deref();
    let mut cache = TileCache::load(path);
    cache.version = 1;
    cache.adapters.entry(adapter_key(gpu)).or_default().plans.insert(dtype.name().to_string(), plan);
    cache.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in all_tiles() {
            assert_eq!(GemmTile::parse(&t.name()), Some(t), "{t}");
        }
        assert_eq!(GemmTile::parse("tiled-64x64"), None);
        assert_eq!(GemmTile::parse("coop-96x64x32"), None);
    }

    #[test]
    fn cache_file_round_trips() {
        let mut c = TileCache { version: 1, ..Default::default() };
        let plan = TunedPlan {
            large: "coop-128x128x32".into(),
            small: "coop-64x64x32".into(),
            vec4: true,
            large_gflops: 1.0,
            small_gflops: 2.0,
        };
        c.adapters.entry("gpu | drv | Vulkan".into()).or_default().plans.insert("f16".into(), plan);
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TileCache>(&s).unwrap(), c);
    }
}
