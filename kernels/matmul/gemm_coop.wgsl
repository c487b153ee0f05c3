// Cooperative-matrix GEMM body, fast version (f16 in, f32 accumulate, 16×16×16 fragments). A workgroup of 4
// subgroups of 32 lanes (2 × 2) computes a BM × BN tile of C; each subgroup owns FR × FR fragments (FR = 4 with
// FRAG4: 64 × 64 per subgroup, 128 × 128 per workgroup; else FR = 2: 32 × 32, 64 × 64).
//
// K advances in slices of BK (16 or 32) through two stages of workgroup memory holding f16 copies of A and B,
// zero-padded at the matrix edges so that any M, N, K works and the implicit-GEMM conv loader plugs in unchanged.
// The next slice is fetched from storage into registers (runs of four along the stored rows: load_a4, load_b4)
// before the current one is multiplied and stored into the other stage afterwards: one barrier per K step, and the
// loads overlap the matrix products. Stage rows are padded by 8 halves (16 bytes), which keeps the 16 rows of a
// fragment load on distinct banks and every fragment pointer and stride 16-byte aligned (Vulkan's rule for
// cooperative loads). A is staged [m][k] and read row-major; B is staged as stored: [k][n] read row-major, or with
// TRANS_B [n][k] read column-major (coopLoad), so staging never transposes.
//
// C fragments go through a per-subgroup f32 scratch fragment so the shared epilogue store_c (bias, activation,
// residual, bounds) applies. Needs subgroup size 32 (the op picks this core only where the subgroup size is fixed
// at 32) and F16. Defines: BK (16u or 32u), FRAG4 (flag), TRANS_B. Grid: (ceil(N / BN), ceil(M / BM), batch).
//
// Fragments are used through the functions of matmul/frag_coop.wgsl (cooperative matrices) or
// matmul/frag_emu.wgsl (plain arithmetic, for testing this core on adapters without them); the including file
// picks one.

#ifdef FRAG4
const FR: u32 = 4u;
#else
const FR: u32 = 2u;
#endif
const BM: u32 = 32u * FR;
const BN: u32 = 32u * FR;
const BK4: u32 = BK / 4u;
const BN4: u32 = BN / 4u;
// Padded stage rows: [rows][k] stages (A, and B with TRANS_B) and the [k][n] stage of plain B.
const LDK: u32 = BK + 8u;
const LDN: u32 = BN + 8u;
const SA: u32 = BM * LDK;
#ifdef TRANS_B
const SB: u32 = BN * LDK;
#else
const SB: u32 = BK * LDN;
#endif
// Runs of four elements each of the 128 invocations fetches per K step.
const RA: u32 = BM * BK4 / 128u;
const RB: u32 = BN * BK4 / 128u;

var<workgroup> As: array<f16, 2u * SA>;
var<workgroup> Bs: array<f16, 2u * SB>;
var<workgroup> Cs: array<f32, 1024>; // one 16×16 f32 fragment per subgroup

// Applies the epilogue to the fragment that subgroup sg has just stored into its scratch slot; row, col: its
// top-left element in C.
fn emit_fragment(bt: u32, sg: u32, lane: u32, row: u32, col: u32) {
    workgroupBarrier();
    for (var e = 0u; e < frag_elems(); e++) {
        let idx = lane + e * 32u;
        store_c(bt, row + idx / 16u, col + idx % 16u, Cs[sg * 256u + idx]);
    }
    workgroupBarrier();
}

// Run r of the A slice starting at k0: row r / BK4, columns 4·(r % BK4)..+3.
fn fetch_a(bt: u32, row0: u32, k0: u32, r: u32) -> vec4<f16> {
    return load_a4(bt, row0 + r / BK4, k0 + 4u * (r % BK4));
}

// Run r of the B slice starting at k0: along the stored rows of B.
fn fetch_b(bt: u32, col0: u32, k0: u32, r: u32) -> vec4<f16> {
#ifdef TRANS_B
    return load_b4(bt, col0 + r / BK4, k0 + 4u * (r % BK4));
#else
    return load_b4(bt, k0 + r / BN4, col0 + 4u * (r % BN4));
#endif
}

@compute @workgroup_size(128, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) w: vec3<u32>) {
    let bt = w.z;
    let row0 = w.y * BM;
    let col0 = w.x * BN;
    let sg = li / 32u;
    let lane = li % 32u;
    let wm = (sg / 2u) * (16u * FR);
    let wn = (sg % 2u) * (16u * FR);
    frag_begin(li);
    var c00 = frag_zero();
    var c01 = frag_zero();
    var c10 = frag_zero();
    var c11 = frag_zero();
#ifdef FRAG4
    var c02 = frag_zero();
    var c03 = frag_zero();
    var c12 = frag_zero();
    var c13 = frag_zero();
    var c20 = frag_zero();
    var c21 = frag_zero();
    var c22 = frag_zero();
    var c23 = frag_zero();
    var c30 = frag_zero();
    var c31 = frag_zero();
    var c32 = frag_zero();
    var c33 = frag_zero();
#endif
    var ra: array<vec4<f16>, RA>;
    var rb: array<vec4<f16>, RB>;
    let steps = (p.k + BK - 1u) / BK;

    for (var t = 0u; t < RA; t++) {
        ra[t] = fetch_a(bt, row0, 0u, li + t * 128u);
    }
    for (var t = 0u; t < RB; t++) {
        rb[t] = fetch_b(bt, col0, 0u, li + t * 128u);
    }
    for (var s = 0u; s < steps; s++) {
        let sa = (s % 2u) * SA;
        let sb = (s % 2u) * SB;
        for (var t = 0u; t < RA; t++) {
            let r = li + t * 128u;
            let o = sa + (r / BK4) * LDK + 4u * (r % BK4);
            let v = ra[t];
            As[o] = v.x;
            As[o + 1u] = v.y;
            As[o + 2u] = v.z;
            As[o + 3u] = v.w;
        }
        for (var t = 0u; t < RB; t++) {
            let r = li + t * 128u;
#ifdef TRANS_B
            let o = sb + (r / BK4) * LDK + 4u * (r % BK4);
#else
            let o = sb + (r / BN4) * LDN + 4u * (r % BN4);
#endif
            let v = rb[t];
            Bs[o] = v.x;
            Bs[o + 1u] = v.y;
            Bs[o + 2u] = v.z;
            Bs[o + 3u] = v.w;
        }
        workgroupBarrier();
        if (s + 1u < steps) {
            let k0 = (s + 1u) * BK;
            for (var t = 0u; t < RA; t++) {
                ra[t] = fetch_a(bt, row0, k0, li + t * 128u);
            }
            for (var t = 0u; t < RB; t++) {
                rb[t] = fetch_b(bt, col0, k0, li + t * 128u);
            }
        }
        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = frag_load_a(sa + (wm + 0u) * LDK + kk, LDK);
            let a1 = frag_load_a(sa + (wm + 16u) * LDK + kk, LDK);
#ifdef FRAG4
            let a2 = frag_load_a(sa + (wm + 32u) * LDK + kk, LDK);
            let a3 = frag_load_a(sa + (wm + 48u) * LDK + kk, LDK);
#endif
#ifdef TRANS_B
            let b0 = frag_load_b(sb + (wn + 0u) * LDK + kk, LDK);
            let b1 = frag_load_b(sb + (wn + 16u) * LDK + kk, LDK);
#ifdef FRAG4
            let b2 = frag_load_b(sb + (wn + 32u) * LDK + kk, LDK);
            let b3 = frag_load_b(sb + (wn + 48u) * LDK + kk, LDK);
#endif
#else
            let b0 = frag_load_b(sb + kk * LDN + wn + 0u, LDN);
            let b1 = frag_load_b(sb + kk * LDN + wn + 16u, LDN);
#ifdef FRAG4
            let b2 = frag_load_b(sb + kk * LDN + wn + 32u, LDN);
            let b3 = frag_load_b(sb + kk * LDN + wn + 48u, LDN);
#endif
#endif
            c00 = frag_mma(a0, b0, c00);
            c01 = frag_mma(a0, b1, c01);
            c10 = frag_mma(a1, b0, c10);
            c11 = frag_mma(a1, b1, c11);
#ifdef FRAG4
            c02 = frag_mma(a0, b2, c02);
            c03 = frag_mma(a0, b3, c03);
            c12 = frag_mma(a1, b2, c12);
            c13 = frag_mma(a1, b3, c13);
            c20 = frag_mma(a2, b0, c20);
            c21 = frag_mma(a2, b1, c21);
            c22 = frag_mma(a2, b2, c22);
            c23 = frag_mma(a2, b3, c23);
            c30 = frag_mma(a3, b0, c30);
            c31 = frag_mma(a3, b1, c31);
            c32 = frag_mma(a3, b2, c32);
            c33 = frag_mma(a3, b3, c33);
#endif
        }
    }
    let cs = sg * 256u;
    frag_store(c00, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 0u, col0 + wn + 0u);
    frag_store(c01, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 0u, col0 + wn + 16u);
    frag_store(c10, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 16u, col0 + wn + 0u);
    frag_store(c11, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 16u, col0 + wn + 16u);
#ifdef FRAG4
    frag_store(c02, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 0u, col0 + wn + 32u);
    frag_store(c03, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 0u, col0 + wn + 48u);
    frag_store(c12, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 16u, col0 + wn + 32u);
    frag_store(c13, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 16u, col0 + wn + 48u);
    frag_store(c20, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 32u, col0 + wn + 0u);
    frag_store(c21, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 32u, col0 + wn + 16u);
    frag_store(c22, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 32u, col0 + wn + 32u);
    frag_store(c23, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 32u, col0 + wn + 48u);
    frag_store(c30, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 48u, col0 + wn + 0u);
    frag_store(c31, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 48u, col0 + wn + 16u);
    frag_store(c32, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 48u, col0 + wn + 32u);
    frag_store(c33, cs, 16u);
    emit_fragment(bt, sg, lane, row0 + wm + 48u, col0 + wn + 48u);
#endif
}
