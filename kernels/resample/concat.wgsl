// Channel concatenation of NHWC tensors, torch.cat([a, b], dim=1) in NCHW terms: a [P, C1], b [P, C2] ->
// y [P, C1 + C2] with P = B·H·W. Defines: F16. Grid: grid_1d(ceil(n / WG)).
#include "common/dtype.wgsl"
#include "elementwise/grid.wgsl"

// Mirrors `ConcatParams` in src/ops/resample.rs.
struct ConcatParams {
    n: u32,
    c1: u32,
    c2: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> a: array<DT>;
@group(0) @binding(1) var<storage, read> b: array<DT>;
@group(0) @binding(2) var<storage, read_write> y: array<DT>;
@group(0) @binding(3) var<uniform> p: ConcatParams;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    if (i >= p.n) {
        return;
    }
    let ct = p.c1 + p.c2;
    let px = i / ct;
    let ch = i % ct;
    if (ch < p.c1) {
        y[i] = a[px * p.c1 + ch];
    } else {
        y[i] = b[px * p.c2 + ch - p.c1];
    }
}
