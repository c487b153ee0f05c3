// A operand of a convolution as an implicit GEMM: row m is output pixel (image, oy, ox) of the NHWC output, column
// k is (ky, kx, ci) of the kernel window; reads the NHWC input [B, H, W, Cin], zero in the padding.
fn load_a(bt: u32, m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    let ox = m % p.out_w;
    let t = m / p.out_w;
    let oy = t % p.out_h;
    let img = t / p.out_h;
    let ci = k % p.in_c;
    let t2 = k / p.in_c;
    let kx = t2 % p.kw;
    let ky = t2 / p.kw;
    let iy = i32(oy * p.stride + ky) - i32(p.pad);
    let ix = i32(ox * p.stride + kx) - i32(p.pad);
    if (iy < 0 || ix < 0 || iy >= i32(p.in_h) || ix >= i32(p.in_w)) {
        return 0.0;
    }
    return f32(a[((img * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c + ci]);
}
