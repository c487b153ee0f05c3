// A operand of a convolution as an implicit GEMM: row m is output pixel (image, oy, ox) of the NHWC output, column
// k is (ky, kx, ci) of the kernel window; reads the NHWC input [B, H, W, Cin], zero in the padding.

// Index of input pixel (image, iy, ix)'s first channel for row m and window tap t = ky * kw + kx, or -1 in the
// padding.
fn im2col_pixel(m: u32, t: u32) -> i32 {
    let ox = m % p.out_w;
    let r = m / p.out_w;
    let oy = r % p.out_h;
    let img = r / p.out_h;
    let kx = t % p.kw;
    let ky = t / p.kw;
    let iy = i32(oy * p.stride + ky) - i32(p.pad);
    let ix = i32(ox * p.stride + kx) - i32(p.pad);
    if (iy < 0 || ix < 0 || iy >= i32(p.in_h) || ix >= i32(p.in_w)) {
        return -1;
    }
    return i32(((img * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c);
}

fn load_a(bt: u32, m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    let px = im2col_pixel(m, k / p.in_c);
    if (px < 0) {
        return 0.0;
    }
    return f32(a_at(u32(px) + k % p.in_c));
}

// A(m, k..k+3) in the storage type, zero outside. Callers pass k ≡ 0 (mod 4); when Cin is a multiple of 4 the
// four columns are four channels of one input pixel (one bounds check, four adjacent loads).
fn load_a4(bt: u32, m: u32, k: u32) -> vec4<DT> {
    if (m >= p.m || k >= p.k) {
        return vec4<DT>();
    }
    if (p.in_c % 4u == 0u) {
        let px = im2col_pixel(m, k / p.in_c);
        if (px < 0) {
            return vec4<DT>();
        }
        return a_at4(u32(px) + k % p.in_c);
    }
    let x = vec4<f32>(load_a(bt, m, k), load_a(bt, m, k + 1u), load_a(bt, m, k + 2u), load_a(bt, m, k + 3u));
    return vec4<DT>(x);
}
