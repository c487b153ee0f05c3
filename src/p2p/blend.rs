//! Local blending on the host (docs/DESIGN.md §5, as the Prompt-to-Prompt reference's `LocalBlend`): from the running
//! sum of stored cross-attention maps at resolution `res`, per prompt the sum over its blend-word tokens, a 3×3
//! max-pool (stride 1, pad 1), nearest upsampling to the latent size, division by the image's own maximum and a
//! strict threshold; each target's mask is OR-ed with the source's, and `x_b ← x_src + mask_b·(x_b − x_src)`.
//!
//! The sampling loop blends on the GPU (`ops::blend::LocalBlend`, the same computation with f32 sums); these
//! functions are its reference (tests/blend_gpu.rs).

/// Blend masks `[B][h·w]` (1.0 or 0.0) from `store` `[B, res², keys]` (row 0 = source).
pub fn masks(
    store: &[f32],
    b: usize,
    res: usize,
    keys: usize,
    positions: &[Vec<usize>],
    threshold: f32,
    (h, w): (usize, usize),
) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = Vec::with_capacity(b);
    for (row, pos) in positions.iter().enumerate().take(b) {
        let map: Vec<f64> =
            (0..res * res).map(|p| pos.iter().map(|&n| store[(row * res * res + p) * keys + n] as f64).sum()).collect();
        // 3×3 max-pool, stride 1, padding 1 (padding never wins: it is -inf in torch).
        let mut pooled = vec![f64::NEG_INFINITY; res * res];
        for y in 0..res {
            for x in 0..res {
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                        if yy >= 0 && xx >= 0 && (yy as usize) < res && (xx as usize) < res {
                            pooled[y * res + x] = pooled[y * res + x].max(map[yy as usize * res + xx as usize]);
                        }
                    }
                }
            }
        }
        // Nearest upsampling to h × w (torch's `interpolate(mode="nearest")`: source index floor(dst · in / out)).
        let up: Vec<f64> = (0..h * w).map(|i| pooled[(i / w) * res / h * res + (i % w) * res / w]).collect();
        let max = up.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        // A map that is zero everywhere divides 0 by 0 in the reference: NaN, which is not above the threshold.
        out.push(up.iter().map(|&v| if max > 0.0 && v / max > threshold as f64 { 1.0 } else { 0.0 }).collect());
    }
    let src = out[0].clone();
    for m in out.iter_mut().skip(1) {
        for (v, s) in m.iter_mut().zip(&src) {
            *v = v.max(*s);
        }
    }
    out
}

/// Applies the masks to NHWC latents `x` `[B, h, w, C]`: `x_b ← x_0 + mask_b·(x_b − x_0)`.
pub fn apply(x: &mut [f32], masks: &[Vec<f32>], hw: usize, c: usize) {
    let plane = hw * c;
    let (src, rest) = x.split_at_mut(plane);
    for (b, row) in rest.chunks_mut(plane).enumerate() {
        for (p, &m) in masks[b + 1].iter().enumerate().take(hw) {
            for ch in 0..c {
                let i = p * c + ch;
                row[i] = src[i] + m * (row[i] - src[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_upsample_normalise_threshold_or() {
        // 2 prompts, res 2, 3 keys; word at key 1 in the source, key 2 in the target.
        let (res, keys) = (2, 3);
        let mut store = vec![0.0f32; 2 * res * res * keys];
        store[keys + 1] = 1.0; // source, pixel (0, 1)
        store[(4 + 3) * keys + 2] = 0.5; // target, pixel (1, 1)
        let m = masks(&store, 2, res, keys, &[vec![1], vec![2]], 0.3, (4, 4));
        // Max-pool spreads each hot pixel over the 2×2 map, so both masks are all ones.
        assert!(m[0].iter().all(|&v| v == 1.0) && m[1].iter().all(|&v| v == 1.0));
        // A zero map gives an empty mask; OR with the source's.
        let m = masks(&store, 2, res, keys, &[vec![0], vec![0]], 0.3, (4, 4));
        assert!(m.iter().all(|r| r.iter().all(|&v| v == 0.0)));
        let mut x = vec![1.0, 2.0, 5.0, 7.0];
        apply(&mut x, &[vec![0.0], vec![0.0]], 1, 2);
        assert_eq!(x, vec![1.0, 2.0, 1.0, 2.0]);
    }
}
