// 16×16 fragments of the coop GEMM core on real cooperative matrices (Vulkan KHR cooperative matrices / Metal
// simdgroup matrices through naga): A, B (f16) and the f32 accumulator C, loaded from and stored to the core's
// workgroup stages As, Bs and scratch Cs. matmul/frag_emu.wgsl implements the same functions without cooperative
// matrices, so the core's staging, indexing and epilogue run on adapters without them (tests on lavapipe).
// naga 30: coopStoreT's value, pointer index and stride must be let-bound; function arguments are.

alias FragA = coop_mat16x16<f16, A>;
alias FragB = coop_mat16x16<f16, B>;
alias FragC = coop_mat16x16<f32, C>;

fn frag_begin(li: u32) {}

// Elements of a 16×16 fragment per lane of 32.
fn frag_elems() -> u32 {
    return 8u;
}

// frag_zero() and frag_mma(a, b, c) are the builtins themselves (identifier defines), so products and zero
// accumulators stay inline in the core.
#define frag_zero FragC
#define frag_mma coopMultiplyAdd

// A fragment rows i, i + s, ... of As (row-major, stride s).
fn frag_load_a(i: u32, s: u32) -> FragA {
    return coopLoadT<FragA>(&As[i], s);
}

// B fragment from Bs: with TRANS_B staged [n][k] (column-major for B = K × N), else [k][n] (row-major).
fn frag_load_b(i: u32, s: u32) -> FragB {
#ifdef TRANS_B
    return coopLoad<FragB>(&Bs[i], s);
#else
    return coopLoadT<FragB>(&Bs[i], s);
#endif
}

// Stores C row-major at Cs[i] with stride s.
fn frag_store(c: FragC, i: u32, s: u32) {
    coopStoreT(c, &Cs[i], s);
}
