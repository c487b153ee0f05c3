// Strided row copy with a scale, for attention over heads that live in channel slices:
//   dst[dst_off + t · dst_stride + j] = scale · src[src_off + t · src_stride + j],  t < n / width, j < width.
// Gathering one head of [tokens, H·D] rows into a contiguous [tokens, D] operand uses (stride H·D → D); writing a
// head's result back uses (D → H·D). Arithmetic in f32. Defines: F16. Grid: grid_1d(ceil(n / WG)).
#include "common/dtype.wgsl"
#include "elementwise/grid.wgsl"

// Mirrors `HeadSliceParams` in src/ops/softmax.rs.
struct HeadSliceParams {
    // Elements to copy: rows · width.
    n: u32,
    width: u32,
    src_off: u32,
    src_stride: u32,
    dst_off: u32,
    dst_stride: u32,
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> src: array<DT>;
@group(0) @binding(1) var<storage, read_write> dst: array<DT>;
@group(0) @binding(2) var<uniform> p: HeadSliceParams;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    if (i >= p.n) {
        return;
    }
    let t = i / p.width;
    let j = i % p.width;
    dst[p.dst_off + t * p.dst_stride + j] = DT(p.scale * f32(src[p.src_off + t * p.src_stride + j]));
}
