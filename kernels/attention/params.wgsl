// Uniforms of the attention family. Each struct mirrors the Rust struct of the same name in src/ops/attention.rs
// field for field.

// Flash attention (attention/flash.wgsl). Q, out: [batch, nq, channels]; K, V: [batch, nk, channels], with
// channels = heads * D and head h in channels h*D..(h+1)*D.
struct FlashParams {
    batch: u32,
    nq: u32,
    nk: u32,
    heads: u32,
    channels: u32,
    // Workgroups along the queries (ceil(nq / BQ)) and in all (q_blocks * heads * batch).
    q_blocks: u32,
    groups: u32,
    // Self-attention injection: rows inject_first..inject_first+inject_count take Q and K from row inject_src
    // and V from their own row. inject_count = 0 turns it off.
    inject_src: u32,
    inject_first: u32,
    inject_count: u32,
    scale: f32,
    // 1: causal mask (key n visible to query i only when n <= i), as CLIP's text encoder.
    causal: u32,
}

// Workgroup `g` of a flash launch (g < groups): its query block, head and batch row, and the row that supplies Q
// and K: the injection source for injected rows, else the row itself (V is always row b's).
struct FlashGroup {
    qb: u32,
    h: u32,
    b: u32,
    src: u32,
}

fn flash_group(f: FlashParams, g: u32) -> FlashGroup {
    let rest = g / f.q_blocks;
    let b = rest / f.heads;
    var src = b;
    if (b >= f.inject_first && b - f.inject_first < f.inject_count) {
        src = f.inject_src;
    }
    return FlashGroup(g % f.q_blocks, rest % f.heads, b, src);
}

// Cross-attention with the Prompt-to-Prompt edit (attention/cross_edit.wgsl). Shapes as FlashParams, nk <=
// MAX_KEYS. Rows src_row+1..src_row+n_targets are the targets of the source row src_row.
struct CrossParams {
    batch: u32,
    nq: u32,
    nk: u32,
    heads: u32,
    channels: u32,
    // Workgroups along the queries (ceil(nq / BP)), along the heads (heads / heads_per_wg), along the units
    // (batch - n_targets: every row alone, except the source that carries its targets), and in all.
    q_blocks: u32,
    head_chunks: u32,
    heads_per_wg: u32,
    units: u32,
    groups: u32,
    src_row: u32,
    n_targets: u32,
    scale: f32,
    // Store mode: factor applied to each head's map before it is added to the store buffer.
    store_scale: f32,
    _pad0: u32,
    _pad1: u32,
}
