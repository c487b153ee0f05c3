//! Captions, the edit grid, attention-map and mask grids (`pictures`): exact sizes and layout, glyph pixels
//! against font8x8's bitmaps, normalisation, truncation and wrapping, input errors, and a PNG round trip.
use p2p_wgpu::output;
use p2p_wgpu::pictures::{
    Colormap, GAP, MARGIN_Y, attention_grid, attention_grid_with, caption, caption_height, caption_lines,
    captioned_grid, glyph, mask_grid, token_label,
};

fn px(rgb: &[u8], w: usize, y: usize, x: usize) -> [u8; 3] {
    let p = (y * w + x) * 3;
    [rgb[p], rgb[p + 1], rgb[p + 2]]
}

/// Whether the `8·scale` square at (`y0`, `x0`) of a `w`-wide picture shows `g` exactly: black where a bit is set
/// (bit 0 = leftmost pixel), white elsewhere.
fn shows_glyph(rgb: &[u8], w: usize, y0: usize, x0: usize, scale: usize, g: [u8; 8]) -> bool {
    (0..8 * scale).all(|dy| {
        (0..8 * scale).all(|dx| {
            let on = g[dy / scale] >> (dx / scale) & 1 == 1;
            px(rgb, w, y0 + dy, x0 + dx) == if on { [0; 3] } else { [255; 3] }
        })
    })
}

/// Whether a line of text `s` (chars) is drawn centred at row `y0` of a `w`-wide strip at `scale`.
fn shows_line(rgb: &[u8], w: usize, y0: usize, scale: usize, s: &str) -> bool {
    shows_line_in(rgb, w, y0, (0, w), scale, s)
}

/// Whether `s` is drawn centred in columns `left..left + width` at row `y0` of a `w`-wide picture.
fn shows_line_in(rgb: &[u8], w: usize, y0: usize, (left, width): (usize, usize), scale: usize, s: &str) -> bool {
    let n = s.chars().count();
    let x0 = left + (width - n * 8 * scale) / 2;
    s.chars().enumerate().all(|(k, c)| shows_glyph(rgb, w, y0, x0 + k * 8 * scale, scale, glyph(c)))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A `h`×`w` RGB test image whose pixel (y, x) is (y, x, 7).
fn ramp(h: usize, w: usize) -> Vec<u8> {
    (0..h * w).flat_map(|i| [(i / w) as u8, (i % w) as u8, 7]).collect()
}

#[test]
fn caption_sizes() {
    assert_eq!(caption_height(1, 1), 16);
    assert_eq!(caption_height(1, 2), 24);
    assert_eq!(caption_height(3, 1), 36);
    assert_eq!(caption_height(3, 2), 64);
    let (rgb, h, w) = caption("A", 100).unwrap();
    assert_eq!((h, w, rgb.len()), (24, 100, 24 * 100 * 3));
    // Empty text: a blank strip one line high.
    let (rgb, h, w) = caption("", 50).unwrap();
    assert_eq!((h, w), (24, 50));
    assert!(rgb.iter().all(|&b| b == 255));
    // Too narrow for one glyph: blank, ×1 height.
    let (rgb, h, w) = caption("hello", 10).unwrap();
    assert_eq!((h, w), (16, 10));
    assert!(rgb.iter().all(|&b| b == 255));
}

#[test]
fn glyph_a_pixels_match_font8x8() {
    let a = font8x8::legacy::BASIC_LEGACY[b'A' as usize];
    assert_eq!(glyph('A'), a);
    // 64 px wide: "A" fits at ×2, a 16×16 glyph centred at x = (64 − 16) / 2, MARGIN_Y from the top.
    let (rgb, h, w) = caption("A", 64).unwrap();
    assert_eq!((h, w), (24, 64));
    let mut dark = 0;
    for y in 0..h {
        for x in 0..w {
            let inside = (MARGIN_Y..MARGIN_Y + 16).contains(&y) && (24..40).contains(&x);
            let on = inside && a[(y - MARGIN_Y) / 2] >> ((x - 24) / 2) & 1 == 1;
            let want = if on { [0u8; 3] } else { [255u8; 3] };
            assert_eq!(px(&rgb, w, y, x), want, "pixel ({y}, {x})");
            dark += on as usize;
        }
    }
    let bits: u32 = a.iter().map(|r| r.count_ones()).sum();
    assert_eq!(dark, bits as usize * 4);
}

#[test]
fn non_ascii_is_question_mark() {
    assert_eq!(caption("é", 64).unwrap(), caption("?", 64).unwrap());
    assert_eq!(caption("日本", 64).unwrap(), caption("??", 64).unwrap());
    // Whitespace of any kind is one space; ends are trimmed.
    assert_eq!(caption("  a\t\nb  ", 64).unwrap(), caption("a b", 64).unwrap());
}

#[test]
fn long_caption_is_cut_with_ellipsis() {
    // 100 px: ×2 holds 6 characters, ×1 holds (100 − 4) / 8 = 12: 11 characters and "…".
    let (rgb, h, w) = caption("a very long caption that will not fit", 100).unwrap();
    assert_eq!((h, w), (16, 100));
    assert!(shows_line(&rgb, w, MARGIN_Y, 1, "a very long…"));
    // The ellipsis is three dots on the baseline.
    assert_eq!(glyph('…').iter().map(|r| r.count_ones()).sum::<u32>(), 12);
    // A caption that fits is not cut.
    let (rgb, h, w) = caption("cat", 100).unwrap();
    assert_eq!((h, w), (24, 100));
    assert!(shows_line(&rgb, w, MARGIN_Y, 2, "cat"));
}

#[test]
fn captions_wrap_to_three_lines() {
    // At ×2 (6 columns) this fits in three lines: kept at ×2.
    let (rgb, h, w) = caption_lines("a cat on a bike", 100, 3).unwrap();
    assert_eq!((h, w), (caption_height(3, 2), 100));
    for (i, line) in ["a cat", "on a", "bike"].iter().enumerate() {
        assert!(shows_line(&rgb, w, MARGIN_Y + i * 20, 2, line), "line {i}");
    }
    // Too long for three lines at either scale: ×1 (12 columns), the third line filled and ended with "…".
    let long = "one two three four five six seven eight nine ten eleven twelve";
    let (rgb, h, w) = caption_lines(long, 100, 3).unwrap();
    assert_eq!((h, w), (caption_height(3, 1), 100));
    for (i, line) in ["one two", "three four", "five six se…"].iter().enumerate() {
        assert!(shows_line(&rgb, w, MARGIN_Y + i * 10, 1, line), "line {i}");
    }
    // A word longer than a line is broken.
    let (rgb, h, w) = caption_lines("abcdefghijklmnopqrstuvwxyz", 100, 3).unwrap();
    assert_eq!((h, w), (caption_height(3, 1), 100));
    for (i, line) in ["abcdefghijkl", "mnopqrstuvwx", "yz"].iter().enumerate() {
        assert!(shows_line(&rgb, w, MARGIN_Y + i * 10, 1, line), "line {i}");
    }
    // Short text: one line.
    assert_eq!(caption_lines("hi", 100, 3).unwrap().1, caption_height(1, 2));
}

#[test]
fn captioned_grid_layout_and_upscaling() {
    // Two 16×16 images: enlarged ×8 to 128, captions fit at ×2 on one line (24 px).
    let img = ramp(16, 16);
    let (rgb, h, w) = captioned_grid(&[(img.clone(), 16, 16), (img, 16, 16)], &strings(&["source", "edit"])).unwrap();
    assert_eq!((h, w), (24 + 128, 2 * 128 + GAP));
    assert!(shows_line_in(&rgb, w, MARGIN_Y, (0, 128), 2, "source"));
    assert!(shows_line_in(&rgb, w, MARGIN_Y, (128 + GAP, 128), 2, "edit"));
    let cap1 = &caption("edit", 128).unwrap().0;
    for y in 0..24 {
        assert_eq!(&rgb[(y * w + 136) * 3..(y * w + 264) * 3], &cap1[y * 128 * 3..(y + 1) * 128 * 3]);
    }
    // Nearest ×8: source pixel (3, 5) fills the block at rows 24 + 24.., columns 40..; in the second tile too.
    for dy in 0..8 {
        for dx in 0..8 {
            assert_eq!(px(&rgb, w, 24 + 24 + dy, 40 + dx), [3, 5, 7]);
            assert_eq!(px(&rgb, w, 24 + 24 + dy, 128 + GAP + 40 + dx), [3, 5, 7]);
        }
    }
    // The gap between the tiles is white all the way down.
    for y in 0..h {
        for x in 128..128 + GAP {
            assert_eq!(px(&rgb, w, y, x), [255; 3]);
        }
    }
    // Large images are not scaled.
    let (_, h, w) = captioned_grid(&[(ramp(200, 256), 200, 256)], &strings(&["x"])).unwrap();
    assert_eq!((h, w), (24 + 200, 256));
    // 100 wide: ×2 to 200.
    let (_, h, w) = captioned_grid(&[(ramp(50, 100), 50, 100)], &strings(&["x"])).unwrap();
    assert_eq!((h, w), (24 + 100, 200));
}

#[test]
fn captioned_grid_long_prompt() {
    // 64 px images (×2 → 128): the long prompt needs more than 3 lines at ×2 and ×1 (15 columns); all captions
    // share a 3-line ×1 strip.
    let prompt = "a photograph of a cat riding a bicycle on a sunny day in the park";
    let img = ramp(64, 64);
    let (rgb, h, w) = captioned_grid(&[(img.clone(), 64, 64), (img, 64, 64)], &strings(&["source", prompt])).unwrap();
    assert_eq!((h, w), (caption_height(3, 1) + 128, 256 + GAP));
    let (cap, ch, cw) = caption_lines(prompt, 128, 3).unwrap();
    assert_eq!((ch, cw), (36, 128));
    assert!(shows_line(&cap, cw, MARGIN_Y + 20, 1, "bicycle on a s…"));
    for y in 0..ch {
        assert_eq!(&rgb[(y * w + 136) * 3..(y * w + 264) * 3], &cap[y * 128 * 3..(y + 1) * 128 * 3]);
    }
    // The short caption is drawn at ×1 too, on the first line.
    assert!(shows_line_in(&rgb, w, MARGIN_Y, (0, 128), 1, "source"));
}

#[test]
fn attention_grid_layout() {
    // 10 maps → rows of 8 and 2. Labels do not fit 32 px at ×2: ×1, one line (16 px).
    let maps: Vec<Vec<f32>> = (0..10).map(|i| vec![i as f32; 16]).collect();
    let labels: Vec<String> = (0..10).map(|i| format!("tok{i}</w>")).collect();
    let (rgb, h, w) = attention_grid(&maps, 4, &labels, 32).unwrap();
    assert_eq!((h, w), (2 * (16 + 32) + GAP, 8 * 32 + 7 * GAP));
    // The second row's last empty places are white.
    for y in 48 + GAP..h {
        for x in 2 * 32 + 2 * GAP..w {
            assert_eq!(px(&rgb, w, y, x), [255; 3]);
        }
    }
    // A constant map is white (its own maximum), except the all-zero one, which is black.
    assert_eq!(px(&rgb, w, 16, 0), [0; 3]);
    assert_eq!(px(&rgb, w, 16 + 31, 32 + GAP + 31), [255; 3]);
    assert_eq!(px(&rgb, w, 48 + GAP + 16, 0), [255; 3]);
}

#[test]
fn attention_map_normalised_to_own_max() {
    // One hot pixel (0.3 at row 1, column 2 of 4×4): one white 8×8 block in a black 32×32 cell.
    let mut m = vec![0.0f32; 16];
    m[4 + 2] = 0.3;
    let (rgb, h, w) = attention_grid(&[m.clone()], 4, &strings(&["x"]), 32).unwrap();
    assert_eq!((h, w), (24 + 32, 32));
    for y in 0..32 {
        for x in 0..32 {
            let hot = (8..16).contains(&y) && (16..24).contains(&x);
            assert_eq!(px(&rgb, w, 24 + y, x), if hot { [255; 3] } else { [0; 3] }, "({y}, {x})");
        }
    }
    // Half the maximum is mid grey; NaN, infinities and negatives count as 0.
    let m2 = vec![1.0, 2.0, f32::NAN, -5.0, f32::INFINITY, 0.0, 0.0, 0.0, 0.0];
    let (rgb, _, w) = attention_grid(&[m2], 3, &strings(&["x"]), 3).unwrap();
    let band = 16; // "x" does not fit 3 px at ×2 or ×1: a blank ×1 strip
    assert_eq!(px(&rgb, w, band, 0), [128; 3]);
    assert_eq!(px(&rgb, w, band, 1), [255; 3]);
    assert_eq!(px(&rgb, w, band, 2), [0; 3]);
    assert_eq!(px(&rgb, w, band + 1, 0), [0; 3]);
    assert_eq!(px(&rgb, w, band + 1, 1), [0; 3]);
    // Viridis ends.
    let (rgb, _, w) = attention_grid_with(&[m], 4, &strings(&["x"]), 32, Colormap::Viridis).unwrap();
    assert_eq!(px(&rgb, w, 24 + 8, 16), [0xFD, 0xE7, 0x25]);
    assert_eq!(px(&rgb, w, 24, 0), [0x44, 0x01, 0x54]);
    assert_eq!(Colormap::Viridis.rgb(0.5), [0x23, 0x90, 0x8C]);
}

#[test]
fn token_labels() {
    assert_eq!(token_label("bicycle</w>"), "bicycle");
    assert_eq!(token_label("bi"), "bi");
    assert_eq!(token_label("<|startoftext|>"), "<sot>");
    assert_eq!(token_label("<|endoftext|>"), "<eot>");
    let m = vec![vec![1.0f32; 4]];
    assert_eq!(
        attention_grid(&m, 2, &strings(&["bicycle</w>"]), 128).unwrap(),
        attention_grid(&m, 2, &strings(&["bicycle"]), 128).unwrap()
    );
    let (rgb, _, w) = attention_grid(&m, 2, &strings(&["bicycle</w>"]), 128).unwrap();
    assert!(shows_line(&rgb, w, MARGIN_Y, 2, "bicycle"));
}

#[test]
fn mask_grid_layout() {
    // Two binary 4×4 masks at 16 px: a column holds one ×1 character, so "p0" wraps to two lines (26 px); a
    // caption longer than three lines ends in "…".
    let a: Vec<f32> = (0..16).map(|i| (i % 4 < 2) as u8 as f32).collect();
    let b = vec![1.0f32; 16];
    let (rgb, h, w) = mask_grid(&[a, b], 4, 4, &strings(&["p0", "long"]), 16).unwrap();
    let band = caption_height(3, 1);
    assert_eq!((h, w), (band + 16, 16 + GAP + 16));
    assert!(shows_glyph(&rgb, w, MARGIN_Y, 4, 1, glyph('p')));
    assert!(shows_glyph(&rgb, w, MARGIN_Y + 10, 4, 1, glyph('0')));
    assert!(shows_glyph(&rgb, w, MARGIN_Y + 20, 16 + GAP + 4, 1, glyph('…')));
    assert_eq!(px(&rgb, w, band, 0), [255; 3]);
    assert_eq!(px(&rgb, w, band + 15, 7), [255; 3]);
    assert_eq!(px(&rgb, w, band, 8), [0; 3]);
    assert_eq!(px(&rgb, w, band + 15, 15), [0; 3]);
    assert_eq!(px(&rgb, w, band + 4, 16 + GAP), [255; 3]);
    // A 2×4 mask at 64 px wide is 32 px high; values are clamped, not normalised.
    let (rgb, h, w) = mask_grid(&[vec![0.5, 2.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0]], 2, 4, &strings(&["m"]), 64).unwrap();
    assert_eq!((h, w), (24 + 32, 64));
    assert_eq!(px(&rgb, w, 24, 0), [128; 3]);
    assert_eq!(px(&rgb, w, 24, 16), [255; 3]);
    assert_eq!(px(&rgb, w, 24, 32), [0; 3]);
}

#[test]
fn empty_and_bad_inputs_are_errors() {
    let img = (ramp(16, 16), 16, 16);
    assert!(caption("x", 0).is_err());
    assert!(caption_lines("x", 10, 0).is_err());
    assert!(captioned_grid(&[], &[]).is_err());
    assert!(captioned_grid(std::slice::from_ref(&img), &[]).is_err());
    assert!(captioned_grid(&[(vec![0; 10], 16, 16)], &strings(&["x"])).is_err());
    assert!(captioned_grid(&[(vec![], 0, 0)], &strings(&["x"])).is_err());
    assert!(captioned_grid(&[(vec![0; 3], usize::MAX, 1)], &strings(&["x"])).is_err());
    assert!(attention_grid(&[], 4, &[], 32).is_err());
    assert!(attention_grid(&[vec![0.0; 16]], 4, &[], 32).is_err());
    assert!(attention_grid(&[vec![0.0; 15]], 4, &strings(&["x"]), 32).is_err());
    assert!(attention_grid(&[vec![]], 0, &strings(&["x"]), 32).is_err());
    assert!(attention_grid(&[vec![0.0; 16]], 4, &strings(&["x"]), 0).is_err());
    assert!(attention_grid(&[vec![0.0; 16]], 4, &strings(&["x"]), usize::MAX).is_err());
    assert!(mask_grid(&[], 4, 4, &[], 16).is_err());
    assert!(mask_grid(&[vec![0.0; 16]], 4, 0, &strings(&["x"]), 16).is_err());
    assert!(mask_grid(&[vec![0.0; 16]], 4, 4, &strings(&["x"]), 0).is_err());
    assert!(mask_grid(&[vec![0.0; 16]], 4, 4, &strings(&["x", "y"]), 16).is_err());
}

#[test]
fn grid_png_round_trip() {
    let img = ramp(16, 16);
    let (rgb, h, w) = captioned_grid(&[(img.clone(), 16, 16), (img, 16, 16)], &strings(&["source", "edit"])).unwrap();
    let bytes = output::png(&rgb, h, w).unwrap();
    let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!((back.height() as usize, back.width() as usize), (h, w));
    assert_eq!(back.into_raw(), rgb);
    let (rgb, h, w) = attention_grid(&vec![vec![1.0; 16]; 3], 4, &strings(&["a", "b", "c"]), 64).unwrap();
    let back = image::load_from_memory(&output::png(&rgb, h, w).unwrap()).unwrap();
    assert_eq!((back.height() as usize, back.width() as usize), (h, w));
}
