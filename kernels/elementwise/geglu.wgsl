// diffusers' GEGLU gate: x [rows, 2N] -> y [rows, N], y = x[:, :N] * gelu(x[:, N:]) with exact (erf) GELU.
// Defines: F16. Grid: grid_1d(ceil(n / WG)), n = rows · N.
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#include "elementwise/grid.wgsl"

// Mirrors `GegluParams` in src/ops/elementwise.rs.
struct GegluParams {
    n: u32,
    half: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<DT>;
@group(0) @binding(1) var<storage, read_write> y: array<DT>;
@group(0) @binding(2) var<uniform> p: GegluParams;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    if (i >= p.n) {
        return;
    }
    let row = i / p.half;
    let xi = row * 2u * p.half + i % p.half;
    y[i] = DT(f32(x[xi]) * gelu_f(f32(x[xi + p.half])));
}
