//! The VAE decode's slices and tiles (`VaeDecoder::decode`, `models::vae`): decoding one image at a time equals
//! the batched decode; the tile blender reassembles an image exactly from consistent tiles; a tiled decode of the
//! tiny SD fixture stays close to the whole decode and has no NaN; automatic tiling follows the budget; and the
//! analytic memory estimate bounds the recorded arena.
//!
//! Tolerances: sliced vs batched 1e-6 (absolute; the same kernels on the same rows; lavapipe gives 0). Tiled vs
//! whole, relative L2 on the 8×8-latent fixture (16×16 px): ≤ 0.6 with 4×4 tiles overlapping by 1 (measured 0.475
//! on lavapipe), ≤ 0.3 with 6×6 / 2 (0.210), ≤ 0.15 with 7×7 / 3 (0.105), and shrinking as tiles grow. Loose on
//! purpose: a tile's group norms take their statistics over the tile, not the image, and its mid-block attention
//! sees only the tile, so a tile differs from the whole decode everywhere, not only at seams (as with diffusers'
//! `enable_vae_tiling`). Tiles of half the image on a random-weight model are the worst case; SD at 512 px in
//! 45×45-latent tiles shares far more context.
mod common;

use std::path::Path;

use common::{Rng, gpu, rel_l2};
use p2p_wgpu::models::vae::{DecodeOptions, Tiling, VaeDecoder, blend_tiles, tile_starts};
use p2p_wgpu::tensor::DType;

fn vae() -> VaeDecoder {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd1-tiny/vae");
    VaeDecoder::load(gpu(), &dir, None, DType::F32).expect("tiny VAE")
}

/// Latents as the pipeline hands them to the decoder: N(0, 1)-like values divided by the scaling factor.
fn latents(seed: u64, n: usize) -> Vec<f32> {
    Rng::new(seed).vec(n, 1.7).iter().map(|v| v / 0.18215).collect()
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn tile_starts_cover_with_overlap() {
    for (len, t, o) in [(8, 4, 1), (8, 4, 2), (64, 32, 8), (64, 45, 11), (100, 64, 16), (9, 4, 1), (5, 5, 1), (3, 8, 2)]
    {
        let s = tile_starts(len, t.min(len), o);
        let t = t.min(len);
        assert_eq!(s[0], 0, "{len} {t} {o}: {s:?}");
        assert_eq!(s.last().unwrap() + t, len, "{len} {t} {o}: {s:?}");
        for p in s.windows(2) {
            assert!(p[1] > p[0] && p[1] <= p[0] + t, "{len} {t} {o}: gap or repeat in {s:?}");
            assert!(p[0] + t - p[1] + 1 >= o, "{len} {t} {o}: overlap below {o} in {s:?}");
        }
    }
}

#[test]
fn blend_reassembles_consistent_tiles_exactly() {
    // Tiles cut from one image blend back to that image: the weights are a partition of unity.
    let (up, oc) = (2, 3);
    for (h, w, tile, overlap) in [(8, 8, 4, 1), (8, 12, 5, 2), (9, 7, 4, 1), (16, 16, 6, 3), (6, 6, 8, 2)] {
        let (hh, ww) = (h * up, w * up);
        let img = Rng::new(11).vec(hh * ww * oc, 1.0);
        let mut calls = 0;
        let got = blend_tiles((h, w), up, oc, tile, overlap, |y0, x0, th, tw| {
            calls += 1;
            let mut v = Vec::new();
            for y in y0 * up..(y0 + th) * up {
                v.extend_from_slice(&img[(y * ww + x0 * up) * oc..(y * ww + (x0 + tw) * up) * oc]);
            }
            Ok(v)
        })
        .unwrap();
        let err = got.iter().zip(&img).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err <= 1e-6, "{h}x{w} tile {tile} overlap {overlap}: max error {err} ({calls} tiles)");
    }
}

#[test]
fn sliced_decode_equals_batched_decode() {
    let gpu = gpu();
    let v = vae();
    let (b, h, w) = (3, 8, 8);
    let z = latents(1, b * h * w * 4);
    let sliced = v.decode(gpu, &z, b, (h, w)).unwrap();
    let batched = v.decode_batched(gpu, &z, b, (h, w)).unwrap();
    assert_eq!(sliced.len(), b * 16 * 16 * 3);
    let err = sliced.iter().zip(&batched).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("sliced vs batched: max abs difference {err:.2e}");
    assert!(err <= 1e-6, "sliced vs batched: max abs difference {err}");
}

#[test]
fn tiled_decode_is_close_to_whole_and_finite() {
    let gpu = gpu();
    let mut v = vae();
    let (b, h, w) = (2, 8, 8);
    let z = latents(2, b * h * w * 4);
    let whole = v.decode(gpu, &z, b, (h, w)).unwrap();
    let mut last = f64::INFINITY;
    for (tile, overlap, tol) in [(4, 1, 0.6), (6, 2, 0.3), (7, 3, 0.15)] {
        v.tiling =
            DecodeOptions { tiling: Tiling::Always, tile: Some(tile), overlap: Some(overlap), ..Default::default() };
        let plan = v.decode_plan(gpu, (h, w)).unwrap();
        assert_eq!(plan.tile, Some((tile, overlap)));
        let tiled = v.decode(gpu, &z, b, (h, w)).unwrap();
        assert!(tiled.iter().all(|x| x.is_finite()), "tiled decode holds NaN/Inf");
        let e = rel_l2(&tiled, &wide(&whole));
        eprintln!(
            "tiles {tile}x{tile} overlap {overlap} ({} per image): relative L2 to the whole decode {e:.3}",
            plan.tiles
        );
        assert!(e <= tol, "tiles {tile}, overlap {overlap}: relative L2 {e} > {tol}");
        // Larger tiles see more of the image: the difference shrinks.
        assert!(e < last, "tiles {tile}: relative L2 {e} did not shrink from {last}");
        last = e;
    }
}

#[test]
fn automatic_tiling_follows_the_budget() {
    let gpu = gpu();
    let mut v = vae();
    let (h, w) = (8, 8);
    // The default budget decodes the fixture whole; a budget below one whole image tiles it.
    assert_eq!(v.decode_plan(gpu, (h, w)).unwrap().tile, None);
    let whole = v.estimate(gpu, h, w).total();
    v.tiling = DecodeOptions { budget: whole * 2 / 3, ..Default::default() };
    let plan = v.decode_plan(gpu, (h, w)).unwrap();
    let (t, o) = plan.tile.expect("a budget below the whole decode tiles");
    assert!(t < 8 && o >= 1 && v.estimate(gpu, t, t).total() <= whole * 2 / 3, "{plan:?}");
    let z = latents(3, h * w * 4);
    let auto = v.decode(gpu, &z, 1, (h, w)).unwrap();
    // The same tiles forced give the same pixels.
    v.tiling = DecodeOptions { tiling: Tiling::Always, tile: Some(t), overlap: Some(o), ..Default::default() };
    let forced = v.decode(gpu, &z, 1, (h, w)).unwrap();
    assert_eq!(auto, forced);
    // Never: whole, whatever the budget.
    v.tiling = DecodeOptions { tiling: Tiling::Never, budget: 1, ..Default::default() };
    assert_eq!(v.decode_plan(gpu, (h, w)).unwrap().tile, None);
}

#[test]
fn estimate_bounds_the_recorded_arena() {
    let gpu = gpu();
    let v = vae();
    for (h, w) in [(8, 8), (16, 16), (12, 20), (32, 32)] {
        let plan = p2p_wgpu::models::vae::DecodePlan { tile: None, piece: (h, w), tiles: 1 };
        let (arena, largest, _) = v.record_piece(gpu, &plan).unwrap();
        let e = v.estimate(gpu, h, w);
        eprintln!(
            "{h}x{w}: recorded arena {arena} B (largest {largest}), estimate {} B (largest {})",
            e.arena, e.largest
        );
        assert!(e.arena >= arena && e.arena <= 2 * arena, "{h}x{w}: estimate {} vs recorded {arena}", e.arena);
        assert!(e.largest >= largest, "{h}x{w}: largest {} vs recorded {largest}", e.largest);
    }
}
