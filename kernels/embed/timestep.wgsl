// Sinusoidal timestep embedding, as diffusers' get_timestep_embedding(t, dim, flip_sin_to_cos,
// downscale_freq_shift, scale, max_period): half = dim / 2, freq_j = exp(−ln(max_period)·j / (half − shift)),
// arg = scale·t·freq_j, y = [sin(arg), cos(arg)] (or [cos, sin] with flip), a zero column when dim is odd.
// Computed in f32 like diffusers; the argument (up to ~1000 rad) is reduced to [−π, π] by a three-part 2π
// (Cody–Waite) before sin/cos, so backends whose sin/cos are only accurate near zero still give f32-rounding
// accuracy. t is always f32. Defines: F16 (output storage). Grid: grid_1d(ceil(n / WG)).
#include "common/dtype.wgsl"
#include "elementwise/grid.wgsl"

// Mirrors `TimestepParams` in src/ops/embed.rs.
struct TimestepParams {
    // B · dim.
    n: u32,
    dim: u32,
    half: u32,
    // 1: cos first.
    flip: u32,
    shift: f32,
    scale: f32,
    log_max_period: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> t: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<DT>;
@group(0) @binding(2) var<uniform> p: TimestepParams;

// 2π = A + B + C: A has 8 significant bits, so k·A is exact for |k| < 2^16 and x − k·A is exact.
const TWO_PI_A: f32 = 6.28125;
const TWO_PI_B: f32 = 1.9353071693331003e-3;
const TWO_PI_C: f32 = 1.0253376e-11;
const INV_TWO_PI: f32 = 0.15915494309189535;

// x − 2πk with k = round(x / 2π), in [−π, π] up to rounding.
fn reduce_angle(x: f32) -> f32 {
    let k = round(x * INV_TWO_PI);
    return ((x - k * TWO_PI_A) - k * TWO_PI_B) - k * TWO_PI_C;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    if (i >= p.n) {
        return;
    }
    let j = i % p.dim;
    if (j >= 2u * p.half) {
        y[i] = DT(0.0);
        return;
    }
    let first = j < p.half;
    let f = select(j - p.half, j, first);
    let freq = exp(-p.log_max_period * f32(f) / (f32(p.half) - p.shift));
    let arg = reduce_angle(p.scale * (t[i / p.dim] * freq));
    // First half is sin unless flipped.
    let use_sin = first != (p.flip != 0u);
    y[i] = DT(select(cos(arg), sin(arg), use_sin));
}
