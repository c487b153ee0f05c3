// Nearest-neighbour upsampling by an integer factor on NHWC, as F.interpolate(scale_factor=s, mode="nearest"):
// y[b, oy, ox, c] = x[b, oy / s, ox / s, c]. The host passes the input width and sees the batch and rows as one
// dim: output row r (of B·H·s) reads input row r / s. Defines: F16. Grid: grid_1d(ceil(n / WG)).
#include "common/dtype.wgsl"
#include "elementwise/grid.wgsl"

// Mirrors `UpsampleParams` in src/ops/resample.rs.
struct UpsampleParams {
    n: u32,
    c: u32,
    w: u32,
    scale: u32,
}

@group(0) @binding(0) var<storage, read> x: array<DT>;
@group(0) @binding(1) var<storage, read_write> y: array<DT>;
@group(0) @binding(2) var<uniform> p: UpsampleParams;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    if (i >= p.n) {
        return;
    }
    let ch = i % p.c;
    let q = i / p.c;
    let wo = p.w * p.scale;
    let ox = q % wo;
    let row = q / wo;
    y[i] = x[((row / p.scale) * p.w + ox / p.scale) * p.c + ch];
}
