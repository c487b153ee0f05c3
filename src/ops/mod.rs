//! The kernel library's Rust side: one module per kernel family with shape/dtype checks, variant choice, the typed
//! uniforms and the grid size. Ops append `Dispatch`es to a recording (`&mut Vec<Dispatch>`) that the caller runs
//! with `Gpu::run`, so a sequence of ops becomes one submission.
pub mod attention;
pub mod blend;
pub mod conv2d;
pub mod copy;
pub mod elementwise;
pub mod embed;
pub mod lincomb;
pub mod matmul;
pub mod norm;
pub mod report;
pub mod resample;
pub mod softmax;
mod split;

use crate::gpu::{Dispatch, Kernel};

use crate::tensor::DType;
pub(crate) use split::{float, lead_chunks, u32_of};

/// A recording of dispatches, run with `Gpu::run`.
pub type Recording = Vec<Dispatch>;

/// Activation fused into an epilogue or applied elementwise. The ids match `activate()` in
/// kernels/common/activation.wgsl.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    #[default]
    None,
    Silu,
    /// Exact (erf) GELU.
    Gelu,
    /// tanh-approximated GELU.
    GeluTanh,
    /// x·sigmoid(1.702x), CLIP's activation.
    QuickGelu,
}

impl Activation {
    pub const ALL: [Activation; 5] =
        [Activation::None, Activation::Silu, Activation::Gelu, Activation::GeluTanh, Activation::QuickGelu];

    pub fn id(self) -> u32 {
        self as u32
    }

    /// Reference value in f64, for tests and CPU fallbacks.
    pub fn apply_f64(self, x: f64) -> f64 {
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        match self {
            Activation::None => x,
            Activation::Silu => x * sig(x),
            Activation::Gelu => 0.5 * x * (1.0 + erf_f64(x / std::f64::consts::SQRT_2)),
            Activation::GeluTanh => {
                0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
            }
            Activation::QuickGelu => x * sig(1.702 * x),
        }
    }
}

/// erf in f64 (series for small |x|, continued fraction for large), accurate to ~1e-15.
pub fn erf_f64(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Maclaurin series: erf x = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc continued fraction (Lentz), converges fast for x >= 2.5.
        let mut f = ax;
        let mut c = ax;
        let mut d = 0.0;
        for n in 1..300 {
            let an = n as f64 / 2.0;
            d = ax + an * d;
            d = 1.0 / d;
            c = ax + an / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt())
    };
    if x < 0.0 { -r } else { r }
}

/// `kernel` with the storage type of `dtype` (defines `F16` for f16).
pub fn typed(path: &'static str, dtype: DType) -> Kernel {
    Kernel::new(path).flag("F16", dtype == DType::F16)
}

/// Every kernel variant the library can launch, for the naga translation test and pipeline warm-up.
pub fn variants() -> Vec<Kernel> {
    let mut v = Vec::new();
    v.extend(matmul::variants());
    v.extend(conv2d::variants());
    v.extend(copy::variants());
    v.extend(norm::variants());
    v.extend(elementwise::variants());
    v.extend(embed::variants());
    v.extend(resample::variants());
    v.extend(attention::variants());
    v.extend(softmax::variants());
    v.extend(lincomb::variants());
    v.extend(blend::variants());
    v
}

#[cfg(test)]
mod tests {
    use super::erf_f64;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (-1.5, -0.9661051464753108),
        ] {
            assert!((erf_f64(x) - want).abs() < 1e-13, "erf({x}) = {} want {want}", erf_f64(x));
        }
    }
}
