// Embedding lookup, as torch.nn.Embedding / F.embedding: y[r, :] = table[ids[r], :] for u32 ids [N] and a table
// [V, D]. The table may be bound in row chunks (tables over the binding limit): this dispatch sees rows
// row0 .. row0 + rows and writes only the output rows whose id falls inside them. Defines: F16 (storage).
// Grid: grid_1d(ceil(n / WG)), n = N · D.
#include "common/dtype.wgsl"
#include "elementwise/grid.wgsl"

// Mirrors `GatherParams` in src/ops/embed.rs.
struct GatherParams {
    n: u32,
    dim: u32,
    row0: u32,
    rows: u32,
}

@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<DT>;
@group(0) @binding(2) var<storage, read_write> y: array<DT>;
@group(0) @binding(3) var<uniform> p: GatherParams;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(li, wid, nwg);
    if (i >= p.n) {
        return;
    }
    // Wraps to a huge value for ids below row0.
    let rel = ids[i / p.dim] - p.row0;
    if (rel < p.rows) {
        y[i] = table[rel * p.dim + i % p.dim];
    }
}
