// Plain copy of 16-byte words (dst[i] = src[i]); used to move tensors and, by the benchmarks, to measure the
// device's copy bandwidth. Grid: enough 256-wide workgroups for `words`, laid out by grid_1d.
struct CopyParams {
    words: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
@group(0) @binding(2) var<uniform> p: CopyParams;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.x + g.y * nw.x * 256u;
    if (i < p.words) {
        dst[i] = src[i];
    }
}
