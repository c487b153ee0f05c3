// Workgroup-wide f32 sum over NORM_WG threads through workgroup memory (1 KiB), a fixed tree so results do not
// depend on scheduling. Call from uniform control flow; every thread gets the total.
const NORM_WG: u32 = 256u;

var<workgroup> partial: array<f32, NORM_WG>;

fn workgroup_sum(v: f32, li: u32) -> f32 {
    partial[li] = v;
    workgroupBarrier();
    for (var s = NORM_WG / 2u; s > 0u; s = s / 2u) {
        if (li < s) {
            partial[li] = partial[li] + partial[li + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
