// y = a + b (or a · b with MUL), b broadcast to a's shape. The host reduces both shapes to at most 4 dims
// d0..d3 (d0 implicit) and gives b's element stride per dim, 0 where b broadcasts. Defines: F16, MUL.
// Grid: grid_1d(ceil(n / WG)).
#include "common/dtype.wgsl"
#include "elementwise/grid.wgsl"

// Mirrors `BinaryParams` in src/ops/elementwise.rs.
struct BinaryParams {
    n: u32,
    d1: u32,
    d2: u32,
    d3: u32,
    s0: u32,
    s1: u32,
    s2: u32,
    s3: u32,
}

@group(0) @binding(0) var<storage, read> a: array<DT>;
@group(0) @binding(1) var<storage, read> b: array<DT>;
@group(0) @binding(2) var<storage, read_write> y: array<DT>;
@group(0) @binding(3) var<uniform> p: BinaryParams;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    if (i >= p.n) {
        return;
    }
    let i3 = i % p.d3;
    var r = i / p.d3;
    let i2 = r % p.d2;
    r = r / p.d2;
    let i1 = r % p.d1;
    let i0 = r / p.d1;
    let bv = f32(b[i0 * p.s0 + i1 * p.s1 + i2 * p.s2 + i3 * p.s3]);
#ifdef MUL
    y[i] = DT(f32(a[i]) * bv);
#else
    y[i] = DT(f32(a[i]) + bv);
#endif
}
