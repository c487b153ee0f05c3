// The UNet's input from the f32 sample: y[i] = s · x[i % half] for i < n, i.e. the scaled sample repeated in every
// block of `half` elements (both halves of the classifier-free-guidance batch). Defines: F16 (y is f16).
// Grid: grid_1d(ceil(n / WG)).
#include "common/dtype.wgsl"
#include "elementwise/grid.wgsl"

// Mirrors `PrepParams` in src/ops/lincomb.rs.
struct PrepParams {
    n: u32,
    half: u32,
    s: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<DT>;
@group(0) @binding(2) var<uniform> p: PrepParams;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    if (i >= p.n) {
        return;
    }
    y[i] = DT(p.s * x[i % p.half]);
}
