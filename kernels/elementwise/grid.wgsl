// Flat launch geometry shared by the elementwise, resample and embed kernels: workgroups of WG threads, one
// element per thread, the workgroup grid split over (x, y) by the host's grid_1d (65535 per dimension).
const WG: u32 = 256u;

// Linear index of this thread's element.
fn flat_index(li: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + li;
}
