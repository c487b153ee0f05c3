// Bindings shared by the attention kernels and vec4 loads from them. Q and out: [batch, nq, channels]; K and V:
// [batch, nk, channels]. Head dim D is a multiple of 4 and every head starts at a multiple of 4 channels, so a
// head's row is D4 = D / 4 groups of 4 elements. Storage is DT (f32 or f16); arithmetic is f32.

const D4: u32 = D / 4u;

@group(0) @binding(0) var<storage, read> q: array<DT>;
@group(0) @binding(1) var<storage, read> k: array<DT>;
@group(0) @binding(2) var<storage, read> v: array<DT>;
@group(0) @binding(3) var<storage, read_write> out: array<DT>;

fn load_q4(i: u32) -> vec4<f32> {
    return vec4<f32>(f32(q[i]), f32(q[i + 1u]), f32(q[i + 2u]), f32(q[i + 3u]));
}

fn load_k4(i: u32) -> vec4<f32> {
    return vec4<f32>(f32(k[i]), f32(k[i + 1u]), f32(k[i + 2u]), f32(k[i + 3u]));
}

fn load_v4(i: u32) -> vec4<f32> {
    return vec4<f32>(f32(v[i]), f32(v[i + 1u]), f32(v[i + 2u]), f32(v[i + 3u]));
}

fn store_out4(i: u32, x: vec4<f32>) {
    out[i] = DT(x.x);
    out[i + 1u] = DT(x.y);
    out[i + 2u] = DT(x.z);
    out[i + 3u] = DT(x.w);
}

fn sum4(x: vec4<f32>) -> f32 {
    return (x.x + x.y) + (x.z + x.w);
}
