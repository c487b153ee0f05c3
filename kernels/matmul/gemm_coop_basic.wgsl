// The first cooperative-matrix GEMM core, single-stage and 64×64, kept as the fallback of matmul/gemm_coop.wgsl
// (P2P_WGPU_GEMM=coop-basic); it reads operands element by element through load_a / load_b.
// Cooperative-matrix GEMM body (f16 in, f32 accumulate, 16×16×16 fragments). A workgroup of 4 subgroups of 32
// lanes computes a 64×64 tile of C; subgroup s owns the 32×32 quadrant (s / 2, s % 2) as 2×2 fragments. A and B
// are staged through workgroup memory as f16 in 32-deep slices, zero-padded at the edges, so any M, N, K works
// (and the implicit-GEMM conv loader plugs in unchanged). C fragments go through a per-subgroup f32 scratch tile
// so the shared epilogue (bias, activation, residual, bounds) applies. Needs subgroup size 32: the op only picks
// this variant on adapters whose subgroup size is fixed at 32. Grid: (ceil(N/64), ceil(M/64), batch).
// naga 30: coopStoreT's value, pointer index and stride must be let-bound (see GPU.md).

var<workgroup> As: array<f16, 2048>; // [64 m][32 k]
var<workgroup> Bs: array<f16, 2048>; // [32 k][64 n]
var<workgroup> Cs: array<f32, 1024>; // 4 subgroups × one 16×16 fragment

fn stage_fragment(bt: u32, sg: u32, lane: u32, row: u32, col: u32) {
    workgroupBarrier();
    for (var e = 0u; e < 8u; e++) {
        let idx = lane + e * 32u;
        store_c(bt, row + idx / 16u, col + idx % 16u, Cs[sg * 256u + idx]);
    }
    workgroupBarrier();
}

@compute @workgroup_size(128, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) w: vec3<u32>) {
    let bt = w.z;
    let row0 = w.y * 64u;
    let col0 = w.x * 64u;
    let sg = li / 32u;
    let lane = li % 32u;
    let wm = (sg / 2u) * 32u;
    let wn = (sg % 2u) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    for (var k0 = 0u; k0 < p.k; k0 += 32u) {
        for (var t = 0u; t < 16u; t++) {
            let e = li + t * 128u;
            let ar = e / 32u;
            let ak = e % 32u;
            As[e] = f16(load_a(bt, row0 + ar, k0 + ak));
            let bk = e / 64u;
            let bn = e % 64u;
            Bs[e] = f16(load_b(bt, k0 + bk, col0 + bn));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 32u; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&As[wm * 32u + kk], 32u);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&As[(wm + 16u) * 32u + kk], 32u);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&Bs[kk * 64u + wn], 64u);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&Bs[kk * 64u + wn + 16u], 64u);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    let cs = sg * 256u;
    let stride = 16u;
    let r00 = c00;
    coopStoreT(r00, &Cs[cs], stride);
    stage_fragment(bt, sg, lane, row0 + wm, col0 + wn);
    let r01 = c01;
    coopStoreT(r01, &Cs[cs], stride);
    stage_fragment(bt, sg, lane, row0 + wm, col0 + wn + 16u);
    let r10 = c10;
    coopStoreT(r10, &Cs[cs], stride);
    stage_fragment(bt, sg, lane, row0 + wm + 16u, col0 + wn);
    let r11 = c11;
    coopStoreT(r11, &Cs[cs], stride);
    stage_fragment(bt, sg, lane, row0 + wm + 16u, col0 + wn + 16u);
}
