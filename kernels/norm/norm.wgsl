// Group normalisation on NHWC activations (torch.nn.GroupNorm: biased variance, eps, per-channel gamma/beta),
// optionally followed by SiLU; layer normalisation over the last dim (torch.nn.LayerNorm) is the case s = 1,
// g = 1, cg = c. One workgroup normalises one (batch entry, group): the s·cg elements at positions 0..s, channels
// group·cg .. (group+1)·cg. Two passes in f32 (mean, then Σ(x − mean)²), then the affine write.
// With ROWS, one invocation normalises one group with serial loops (short rows, e.g. layer norm over 64–256
// channels: a 256-invocation workgroup with a barrier tree per row is mostly idle, and slow on CPU adapters).
// Defines: F16, SILU, ROWS. Grid: grid_1d(groups), or grid_1d(ceil(groups / ROWS_WG)) with ROWS.
#include "common/dtype.wgsl"
#include "common/activation.wgsl"
#ifndef ROWS
#include "norm/reduce.wgsl"
#endif

// Mirrors `NormParams` in src/ops/norm.rs.
struct NormParams {
    // (batch entry, group) pairs in this dispatch.
    groups: u32,
    // Groups per batch entry.
    g: u32,
    // Positions per batch entry (H·W; 1 for layer norm).
    s: u32,
    // Channels, and channels per group.
    c: u32,
    cg: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<DT>;
@group(0) @binding(1) var<storage, read> gamma: array<DT>;
@group(0) @binding(2) var<storage, read> beta: array<DT>;
@group(0) @binding(3) var<storage, read_write> y: array<DT>;
@group(0) @binding(4) var<uniform> p: NormParams;

// First element of (batch entry, group) pair `grp`.
fn group_base(grp: u32) -> u32 {
    return (grp / p.g) * p.s * p.c + (grp % p.g) * p.cg;
}

// Index of element e (position e / cg, channel e % cg of the group) of the group starting at `base`.
fn elem(base: u32, e: u32) -> u32 {
    return base + (e / p.cg) * p.c + e % p.cg;
}

// y = (x − mean)·rstd·gamma + beta (then SiLU) for element e of group g starting at `base`.
fn write_normalised(base: u32, e: u32, g: u32, mean: f32, rstd: f32) {
    let ch = g * p.cg + e % p.cg;
    let i = elem(base, e);
    var v = (f32(x[i]) - mean) * rstd * f32(gamma[ch]) + f32(beta[ch]);
#ifdef SILU
    v = silu_f(v);
#endif
    y[i] = DT(v);
}

#ifdef ROWS
const ROWS_WG: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let grp = (wid.x + wid.y * nwg.x) * ROWS_WG + li;
    if (grp >= p.groups) {
        return;
    }
    let g = grp % p.g;
    let base = group_base(grp);
    let n = p.s * p.cg;
    var sum = 0.0;
    for (var e = 0u; e < n; e++) {
        sum += f32(x[elem(base, e)]);
    }
    let mean = sum / f32(n);
    var sq = 0.0;
    for (var e = 0u; e < n; e++) {
        let d = f32(x[elem(base, e)]) - mean;
        sq += d * d;
    }
    let rstd = inverseSqrt(sq / f32(n) + p.eps);
    for (var e = 0u; e < n; e++) {
        write_normalised(base, e, g, mean, rstd);
    }
}
#else
@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let grp = wid.x + wid.y * nwg.x;
    if (grp >= p.groups) {
        return;
    }
    let g = grp % p.g;
    let base = group_base(grp);
    let n = p.s * p.cg;
    var sum = 0.0;
    for (var e = li; e < n; e += NORM_WG) {
        sum += f32(x[elem(base, e)]);
    }
    let mean = workgroup_sum(sum, li) / f32(n);
    var sq = 0.0;
    for (var e = li; e < n; e += NORM_WG) {
        let d = f32(x[elem(base, e)]) - mean;
        sq += d * d;
    }
    let rstd = inverseSqrt(workgroup_sum(sq, li) / f32(n) + p.eps);
    for (var e = li; e < n; e += NORM_WG) {
        write_normalised(base, e, g, mean, rstd);
    }
}
#endif
