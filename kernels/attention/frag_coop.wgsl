// 16×16 fragments of the cooperative-matrix flash kernel (attention/flash_coop_core.wgsl) on real cooperative
// matrices. A operands: the staged query tile (Q, in KV before the key loop) and the probabilities Ps; B operands:
// the K block read column-major (Kᵀ) and the V block read row-major, both in KV; C: f32, stored to the scratch Ss.
// attention/frag_emu.wgsl implements the same functions without cooperative matrices (tests on lavapipe).

alias FragA = coop_mat16x16<f16, A>;
alias FragB = coop_mat16x16<f16, B>;
alias FragC = coop_mat16x16<f32, C>;

fn frag_begin(li: u32) {}

// frag_zero() and frag_mma(a, b, c) are the builtins themselves (identifier defines), so products and zero
// accumulators stay inline in the core.
#define frag_zero FragC
#define frag_mma coopMultiplyAdd

fn frag_load_q(i: u32, s: u32) -> FragA {
    return coopLoadT<FragA>(&KV[i], s);
}

fn frag_load_p(i: u32, s: u32) -> FragA {
    return coopLoadT<FragA>(&Ps[i], s);
}

// Kᵀ block: K is staged [key][d], so B(d, key) = KV[i + key·s + d] (column-major).
fn frag_load_kt(i: u32, s: u32) -> FragB {
    return coopLoad<FragB>(&KV[i], s);
}

fn frag_load_v(i: u32, s: u32) -> FragB {
    return coopLoadT<FragB>(&KV[i], s);
}

fn frag_store_s(c: FragC, i: u32, s: u32) {
    coopStoreT(c, &Ss[i], s);
}
