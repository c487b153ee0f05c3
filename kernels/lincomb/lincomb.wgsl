// One scheduler-step operation (src/schedulers/program.rs `LinOp`) on flat vectors, elementwise for i < n:
//   dst[dst_off + i] = clamp( cd · dst[dst_off + i]                     (flags bit 0: dst is one of its terms)
//                           + cg · (U + guidance · (C − U))              (GUIDED: U = gd[gu + i], C = gd[gc + i])
//                           + Σ_k coef_k · s_k[off_k + i] )              (S1..S6: f32 sources, cumulative flags)
// clamped to [-r, r] when flags bit 1 is set. dst's own term goes through its read_write binding (wgpu forbids
// binding a buffer both writable and read-only in one dispatch); each thread reads its element before writing it.
// Arithmetic is f32. Defines: F16 (dst is f16), GUIDED, G_F16 (the guided pair is f16, e.g. an f16 UNet's output),
// S1..S6. Grid: grid_1d(ceil(n / WG)).
#ifdef F16
#define NEED_F16
#endif
#ifdef G_F16
#define NEED_F16
#endif
#ifdef NEED_F16
enable f16;
#endif
#ifdef F16
alias DT = f16;
#else
alias DT = f32;
#endif
#ifdef G_F16
alias GT = f16;
#else
alias GT = f32;
#endif
#include "elementwise/grid.wgsl"

// Mirrors `LinParams` in src/ops/lincomb.rs.
struct LinParams {
    n: u32,
    dst_off: u32,
    flags: u32,
    _pad0: u32,
    gu: u32,
    gc: u32,
    _pad1: u32,
    _pad2: u32,
    cd: f32,
    cg: f32,
    guidance: f32,
    r: f32,
    off_a: vec4<u32>,
    off_b: vec4<u32>,
    coef_a: vec4<f32>,
    coef_b: vec4<f32>,
}

@group(0) @binding(0) var<storage, read_write> dst: array<DT>;
@group(0) @binding(1) var<uniform> p: LinParams;
#ifdef GUIDED
@group(0) @binding(2) var<storage, read> gd: array<GT>;
#endif
#ifdef S1
@group(0) @binding(3) var<storage, read> s1: array<f32>;
#endif
#ifdef S2
@group(0) @binding(4) var<storage, read> s2: array<f32>;
#endif
#ifdef S3
@group(0) @binding(5) var<storage, read> s3: array<f32>;
#endif
#ifdef S4
@group(0) @binding(6) var<storage, read> s4: array<f32>;
#endif
#ifdef S5
@group(0) @binding(7) var<storage, read> s5: array<f32>;
#endif
#ifdef S6
@group(0) @binding(8) var<storage, read> s6: array<f32>;
#endif

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    if (i >= p.n) {
        return;
    }
    let d = p.dst_off + i;
    var acc = 0.0;
    if ((p.flags & 1u) != 0u) {
        acc = p.cd * f32(dst[d]);
    }
#ifdef GUIDED
    let u = f32(gd[p.gu + i]);
    acc += p.cg * (u + p.guidance * (f32(gd[p.gc + i]) - u));
#endif
#ifdef S1
    acc += p.coef_a.x * s1[p.off_a.x + i];
#endif
#ifdef S2
    acc += p.coef_a.y * s2[p.off_a.y + i];
#endif
#ifdef S3
    acc += p.coef_a.z * s3[p.off_a.z + i];
#endif
#ifdef S4
    acc += p.coef_a.w * s4[p.off_a.w + i];
#endif
#ifdef S5
    acc += p.coef_b.x * s5[p.off_b.x + i];
#endif
#ifdef S6
    acc += p.coef_b.y * s6[p.off_b.y + i];
#endif
    if ((p.flags & 2u) != 0u) {
        acc = clamp(acc, -p.r, p.r);
    }
    dst[d] = DT(acc);
}
