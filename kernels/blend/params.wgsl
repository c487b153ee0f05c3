// Shared by the local-blend kernels. Mirrors `BlendParams` in src/ops/blend.rs.
struct BlendParams {
    // Prompts (rows of the store, the masks and the sample).
    b: u32,
    // Side of the stored maps, and their key count.
    res: u32,
    keys: u32,
    // Latent size.
    h: u32,
    w: u32,
    // Sample channels.
    c: u32,
    // Strict threshold on the normalised map.
    thr: f32,
    // Elements the apply kernel updates: (b − 1) · h · w · c.
    n: u32,
}
