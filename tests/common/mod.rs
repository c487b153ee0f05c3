//! Shared test helpers: one GPU context per test binary, a seeded RNG, f16 rounding, NaN poisoning and the
//! normalised error used against CPU f64 references.
#![allow(dead_code)]
pub mod cli;

use std::sync::OnceLock;

use p2p_wgpu::gpu::{Gpu, GpuOptions};
use p2p_wgpu::noise::SplitMix64;
use p2p_wgpu::tensor::{DType, Tensor};

/// The test GPU (lavapipe in CI). Fails the test, never skips, when there is none.
pub fn gpu() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| match Gpu::new(&GpuOptions::from_env()) {
        Ok(g) => g,
        Err(e) => panic!("tests need a GPU adapter (CI installs lavapipe): {e}"),
    })
}

/// Whether a test that needs an adapter `feature` (`"f16"`, `"coop"`, ...) can run on the test GPU (`have`).
/// When it cannot, prints `SKIPPED: <test>: <why>` and returns false, so the skip shows in `--nocapture` runs and
/// in the log of a failing run; but when `P2P_WGPU_REQUIRE` lists the feature (comma-separated, `all` for every
/// feature) the test fails instead, so that a run on a GPU that should have it cannot pass silently.
pub fn can_run(test: &str, feature: &str, have: bool, why: &str) -> bool {
    if have {
        return true;
    }
    let required = std::env::var("P2P_WGPU_REQUIRE").unwrap_or_default();
    if required.split(',').map(str::trim).any(|r| r == feature || r == "all") {
        panic!("{test}: P2P_WGPU_REQUIRE has {feature:?} but {} {why}", gpu().info.name);
    }
    eprintln!("SKIPPED: {test}: {} {why}", gpu().info.name);
    false
}

/// [`can_run`] for SHADER_F16.
pub fn can_run_f16(test: &str) -> bool {
    can_run(test, "f16", gpu().has_f16(), "has no SHADER_F16")
}

/// [`can_run`] for the cooperative-matrix cores (`Gpu::coop_usable`).
pub fn can_run_coop(test: &str) -> bool {
    can_run(test, "coop", gpu().coop_usable(), "has no usable cooperative matrices (16x16x16 f16->f32, 32 lanes)")
}

/// Storage types the test GPU can run: f32 always, f16 when the adapter has SHADER_F16.
pub fn dtypes() -> Vec<DType> {
    if can_run_f16("the f16 variants of this test") { vec![DType::F32, DType::F16] } else { vec![DType::F32] }
}

/// A seeded generator over the crate's SplitMix64 (`noise`), so failures reproduce.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed ^ 0x9E37_79B9_7F4A_7C15))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Values as the GPU sees them after upload in `dtype` (f16 rounds).
pub fn quantize(v: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        _ => v.to_vec(),
    }
}

/// Uploads `v` in `dtype`; returns the tensor and the values it really holds.
pub fn upload(shape: &[usize], dtype: DType, v: &[f32]) -> (Tensor, Vec<f32>) {
    let t = Tensor::from_f32(gpu(), shape, dtype, v).expect("upload");
    (t, quantize(v, dtype))
}

/// An output tensor filled with NaN, so any element the kernel fails to write shows up.
pub fn poisoned(shape: &[usize], dtype: DType) -> Tensor {
    let t = Tensor::empty(gpu(), shape, dtype).expect("alloc");
    t.fill(gpu(), f32::NAN).expect("poison");
    t
}

/// Relative L2 error ‖got − want‖ / ‖want‖ (absolute when ‖want‖ is 0); NaN/Inf anywhere gives infinity.
pub fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        if !g.is_finite() {
            return f64::INFINITY;
        }
        num += (g as f64 - w) * (g as f64 - w);
        den += w * w;
    }
    if den == 0.0 { num.sqrt() } else { (num / den).sqrt() }
}

/// Per-dtype tolerance of the normalised error: f32 1e-5, f16 2e-3 (f16 storage rounds outputs to ~5e-4).
pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2e-3,
        _ => 1e-5,
    }
}

/// Asserts the normalised error is within `tol` and names the case.
pub fn check(name: &str, got: &[f32], want: &[f64], tol: f64) {
    let e = rel_l2(got, want);
    assert!(e <= tol, "{name}: relative L2 error {e:.3e} exceeds {tol:.1e}");
}

/// Downloads `t` as f32.
pub fn download(t: &Tensor) -> Vec<f32> {
    t.to_f32(gpu()).expect("download")
}
