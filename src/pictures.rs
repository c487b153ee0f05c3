//! Pictures for people: captions drawn with an 8×8 bitmap font, the edit grid (source | edit-1 | edit-2 … with the
//! prompts above the images), cross-attention maps per token and local-blend masks. Pure host code on RGB bytes
//! (row-major, 3 bytes a pixel, as `output::to_rgb8` makes them); `output::png` encodes the results.
//!
//! Every function returns `(rgb, h, w)` and checks its inputs: empty or inconsistent inputs are errors, never panics.
use std::borrow::Cow;

use crate::error::{Error, Result};

/// Side of a glyph cell in font pixels.
pub const GLYPH: usize = 8;
/// White pixels left and right of a caption line (the text never comes closer to the strip's edge).
pub const MARGIN_X: usize = 2;
/// White pixels above the first and below the last caption line.
pub const MARGIN_Y: usize = 4;
/// White font pixels between two caption lines (multiplied by the text scale).
pub const LINE_GAP: usize = 2;
/// White pixels between tiles of a grid, across and down.
pub const GAP: usize = 8;
/// Images narrower than this are enlarged (nearest, by an integer factor) in `captioned_grid`.
pub const MIN_TILE: usize = 128;
/// Most caption lines above an image in `captioned_grid`; longer prompts end in an ellipsis.
pub const MAX_CAPTION_LINES: usize = 3;
/// Most tiles in a row of `attention_grid` and `mask_grid`.
pub const TILES_PER_ROW: usize = 8;
/// Largest picture these functions make, in pixels (about 800 MB of RGB).
const MAX_PIXELS: usize = 1 << 28;

/// Marker byte for the ellipsis glyph in sanitised text (ASCII is 0..=127).
const ELLIPSIS: u8 = 0x80;
/// "…": three 2×2 dots on the baseline of the '.' glyph.
const ELLIPSIS_GLYPH: [u8; 8] = [0, 0, 0, 0, 0, 0xDB, 0xDB, 0];

/// An RGB picture: bytes, height, width.
pub type Rgb = (Vec<u8>, usize, usize);

/// How an attention map's [0, 1] values become colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Colormap {
    /// 0 → black, 1 → white (as the Prompt-to-Prompt reference shows them).
    #[default]
    Gray,
    /// Matplotlib's perceptually uniform viridis (dark violet → yellow), interpolated from ten stops.
    Viridis,
}

/// viridis(10): the colour map at i/9, i = 0..=9.
const VIRIDIS: [[u8; 3]; 10] = [
    [0x44, 0x01, 0x54],
    [0x48, 0x28, 0x78],
    [0x3E, 0x4A, 0x89],
    [0x31, 0x68, 0x8E],
    [0x26, 0x82, 0x8E],
    [0x1F, 0x9E, 0x89],
    [0x35, 0xB7, 0x79],
    [0x6D, 0xCD, 0x59],
    [0xB4, 0xDE, 0x2C],
    [0xFD, 0xE7, 0x25],
];

impl Colormap {
    /// The colour of `t` in [0, 1] (clamped; NaN counts as 0).
    pub fn rgb(self, t: f32) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        match self {
            Colormap::Gray => {
                let v = (t * 255.0).round() as u8;
                [v, v, v]
            }
            Colormap::Viridis => {
                let x = t * (VIRIDIS.len() - 1) as f32;
                let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
                let f = x - i as f32;
                let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
                std::array::from_fn(|c| (a[c] as f32 + (b[c] as f32 - a[c] as f32) * f).round() as u8)
            }
        }
    }
}

/// The 8×8 bitmap of `c` as drawn: row 0 on top, bit 0 of a row is its leftmost pixel. Characters outside
/// printable ASCII are drawn as '?', except '…' (the ellipsis the captions end with).
pub fn glyph(c: char) -> [u8; 8] {
    if c == '…' { ELLIPSIS_GLYPH } else { glyph_of(sanitize_char(c)) }
}

fn glyph_of(b: u8) -> [u8; 8] {
    if b == ELLIPSIS { ELLIPSIS_GLYPH } else { font8x8::legacy::BASIC_LEGACY[(b & 0x7F) as usize] }
}

fn sanitize_char(c: char) -> u8 {
    match c {
        c if c.is_whitespace() => b' ',
        ' '..='~' => c as u8,
        _ => b'?',
    }
}

/// Printable ASCII with single spaces between words and none at either end.
fn sanitize(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for b in text.chars().map(sanitize_char) {
        if b == b' ' && out.last().is_none_or(|&l| l == b' ') {
            continue;
        }
        out.push(b);
    }
    if out.last() == Some(&b' ') {
        out.pop();
    }
    out
}

/// Greedy word wrap of sanitised `s` into lines of at most `cols` characters (words longer than a line are broken),
/// all of the text, however many lines that takes. Returns the byte ranges of the lines.
fn wrap_ranges(s: &[u8], cols: usize) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    let mut pos = 0;
    while pos < s.len() {
        let rest = &s[pos..];
        if rest.len() <= cols {
            lines.push((pos, s.len()));
            break;
        }
        match rest[..=cols].iter().rposition(|&b| b == b' ') {
            Some(sp) if sp > 0 => {
                lines.push((pos, pos + sp));
                pos += sp + 1;
            }
            _ => {
                lines.push((pos, pos + cols));
                pos += cols;
            }
        }
        while pos < s.len() && s[pos] == b' ' {
            pos += 1;
        }
    }
    lines
}

/// `text` wrapped into at most `max_lines` lines of at most `cols` characters; when it does not fit, the last line
/// holds as much of the rest as fits, then an ellipsis. Returns the lines and whether the text was cut.
fn layout(text: &str, cols: usize, max_lines: usize) -> (Vec<Vec<u8>>, bool) {
    let s = sanitize(text);
    if s.is_empty() || cols == 0 || max_lines == 0 {
        return (Vec::new(), !s.is_empty());
    }
    let ranges = wrap_ranges(&s, cols);
    if ranges.len() <= max_lines {
        return (ranges.iter().map(|&(a, b)| s[a..b].to_vec()).collect(), false);
    }
    let mut lines: Vec<Vec<u8>> = ranges[..max_lines - 1].iter().map(|&(a, b)| s[a..b].to_vec()).collect();
    let mut last = s[ranges[max_lines - 1].0..].to_vec();
    last.truncate(cols - 1);
    while last.last() == Some(&b' ') {
        last.pop();
    }
    last.push(ELLIPSIS);
    lines.push(last);
    (lines, true)
}

/// Characters a line holds in a strip `width` pixels wide at text scale `scale`.
fn columns(width: usize, scale: usize) -> usize {
    width.saturating_sub(2 * MARGIN_X) / (GLYPH * scale)
}

/// Height in pixels of a caption strip of `lines` lines (at least one) at text scale `scale`.
pub fn caption_height(lines: usize, scale: usize) -> usize {
    let lines = lines.max(1);
    2 * MARGIN_Y + lines * GLYPH * scale + (lines - 1) * LINE_GAP * scale
}

/// Draws `lines` (sanitised bytes) black on white, each centred, into a strip `width` wide and `n_lines` lines
/// high.
fn render(lines: &[Vec<u8>], width: usize, n_lines: usize, scale: usize) -> Rgb {
    let h = caption_height(n_lines, scale);
    let mut out = vec![255u8; h * width * 3];
    for (i, line) in lines.iter().enumerate() {
        let line_w = line.len() * GLYPH * scale;
        let x0 = width.saturating_sub(line_w) / 2;
        let y0 = MARGIN_Y + i * (GLYPH + LINE_GAP) * scale;
        for (k, &b) in line.iter().enumerate() {
            let g = glyph_of(b);
            for (r, bits) in g.iter().enumerate() {
                for c in 0..GLYPH {
                    if bits >> c & 1 == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        let y = y0 + r * scale + dy;
                        let x = x0 + (k * GLYPH + c) * scale;
                        if y >= h || x + scale > width {
                            continue;
                        }
                        let p = (y * width + x) * 3;
                        out[p..p + 3 * scale].fill(0);
                    }
                }
            }
        }
    }
    (out, h, width)
}

/// Text scale (2 or 1) and caption lines for a set of captions that share a strip height: ×2 when every caption fits
/// whole in `max_lines` lines at ×2, else ×1 (cut with an ellipsis where needed).
fn plan(texts: &[&str], widths: &[usize], max_lines: usize) -> (usize, Vec<Vec<Vec<u8>>>) {
    let at = |scale: usize| -> (Vec<Vec<Vec<u8>>>, bool) {
        let mut cut = false;
        let lines = texts
            .iter()
            .zip(widths)
            .map(|(t, &w)| {
                let (l, c) = layout(t, columns(w, scale), max_lines);
                cut |= c;
                l
            })
            .collect();
        (lines, cut)
    };
    let (big, cut) = at(2);
    if !cut { (2, big) } else { (1, at(1).0) }
}

/// One line of `text` as a strip `width` pixels wide: black on white, centred, at ×2 when it fits whole, else ×1
/// and cut with "…". Non-ASCII characters are drawn as '?'. Errors when `width` is 0.
pub fn caption(text: &str, width: usize) -> Result<Rgb> {
    caption_lines(text, width, 1)
}

/// `text` word-wrapped into at most `max_lines` lines (the last one ending in "…" when the text does not fit), as a
/// strip `width` pixels wide; ×2 text when it all fits at ×2. The strip is as high as the lines need (at least one).
pub fn caption_lines(text: &str, width: usize, max_lines: usize) -> Result<Rgb> {
    if width == 0 || max_lines == 0 {
        return Err(Error::shape("caption", format!("width {width} and max_lines {max_lines} must be positive")));
    }
    let (scale, lines) = plan(&[text], &[width], max_lines);
    let n = lines[0].len();
    Ok(render(&lines[0], width, n, scale))
}

/// A picture as a cell of a grid: its pixels and its caption.
struct Tile<'a> {
    rgb: Cow<'a, [u8]>,
    h: usize,
    w: usize,
    label: &'a str,
}

/// Lays tiles out in rows of at most `per_row`, `GAP` apart, each under its caption; all captions share one text
/// scale and strip height.
fn tile_grid(op: &str, tiles: &[Tile], per_row: usize, max_lines: usize) -> Result<Rgb> {
    let texts: Vec<&str> = tiles.iter().map(|t| t.label).collect();
    let widths: Vec<usize> = tiles.iter().map(|t| t.w).collect();
    let (scale, lines) = plan(&texts, &widths, max_lines);
    let n_lines = lines.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let band = caption_height(n_lines, scale);

    let rows: Vec<&[Tile]> = tiles.chunks(per_row).collect();
    let row_w = |r: &[Tile]| r.iter().map(|t| t.w).sum::<usize>() + (r.len() - 1) * GAP;
    let row_h = |r: &[Tile]| band + r.iter().map(|t| t.h).max().unwrap_or(0);
    let gw = rows.iter().map(|r| row_w(r)).max().unwrap_or(0);
    let gh = rows.iter().map(|r| row_h(r)).sum::<usize>() + (rows.len() - 1) * GAP;
    if gw.checked_mul(gh).is_none_or(|p| p > MAX_PIXELS) {
        return Err(Error::limit(op, format!("a {gh}×{gw} picture is too large")));
    }
    let mut out = vec![255u8; gh * gw * 3];
    let blit = |out: &mut [u8], src: &[u8], h: usize, w: usize, y0: usize, x0: usize| {
        for y in 0..h {
            let d = ((y0 + y) * gw + x0) * 3;
            out[d..d + w * 3].copy_from_slice(&src[y * w * 3..(y + 1) * w * 3]);
        }
    };
    let mut y0 = 0;
    let mut k = 0;
    for row in &rows {
        let mut x0 = 0;
        for t in row.iter() {
            let (cap, ch, cw) = render(&lines[k], t.w, n_lines, scale);
            blit(&mut out, &cap, ch, cw, y0, x0);
            blit(&mut out, &t.rgb, t.h, t.w, y0 + band, x0);
            x0 += t.w + GAP;
            k += 1;
        }
        y0 += row_h(row) + GAP;
    }
    Ok((out, gh, gw))
}

/// Nearest-neighbour resize of RGB `src` (`h`×`w`) to `nh`×`nw`.
fn resize_nearest(src: &[u8], h: usize, w: usize, nh: usize, nw: usize) -> Vec<u8> {
    let mut out = vec![0u8; nh * nw * 3];
    for y in 0..nh {
        let sy = y * h / nh;
        for x in 0..nw {
            let sx = x * w / nw;
            let s = (sy * w + sx) * 3;
            let d = (y * nw + x) * 3;
            out[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
    out
}

/// The edit grid: `images` (RGB bytes, height, width) side by side, `GAP` white pixels apart, each under its caption
/// (wrapped to at most `MAX_CAPTION_LINES` lines of the image's width, then "…"). Images narrower than `MIN_TILE`
/// are enlarged by the smallest integer factor that makes them at least that wide. Errors on no images, a caption
/// count that differs from the image count, or an image whose bytes do not match its size.
pub fn captioned_grid(images: &[(Vec<u8>, usize, usize)], captions: &[String]) -> Result<Rgb> {
    const OP: &str = "captioned_grid";
    if images.is_empty() {
        return Err(Error::shape(OP, "no images"));
    }
    if captions.len() != images.len() {
        return Err(Error::shape(OP, format!("{} captions for {} images", captions.len(), images.len())));
    }
    let mut tiles = Vec::with_capacity(images.len());
    for (i, ((rgb, h, w), label)) in images.iter().zip(captions).enumerate() {
        let (h, w) = (*h, *w);
        if h == 0 || w == 0 || h.checked_mul(w).and_then(|p| p.checked_mul(3)) != Some(rgb.len()) {
            return Err(Error::shape(OP, format!("image {i}: {} bytes for {h}×{w} RGB", rgb.len())));
        }
        let k = MIN_TILE.div_ceil(w).max(1);
        if (h * k).checked_mul(w * k).is_none_or(|p| p > MAX_PIXELS) {
            return Err(Error::limit(OP, format!("image {i} of {h}×{w} is too large")));
        }
        let rgb = if k == 1 { Cow::Borrowed(&rgb[..]) } else { Cow::Owned(resize_nearest(rgb, h, w, h * k, w * k)) };
        tiles.push(Tile { rgb, h: h * k, w: w * k, label });
    }
    tile_grid(OP, &tiles, tiles.len(), MAX_CAPTION_LINES)
}

/// A token's text as a label: without the CLIP word-end suffix `</w>`, and the start/end tokens shortened to
/// `<sot>`/`<eot>`.
pub fn token_label(token: &str) -> String {
    match token {
        "<|startoftext|>" => "<sot>".to_string(),
        "<|endoftext|>" => "<eot>".to_string(),
        t => t.strip_suffix("</w>").unwrap_or(t).to_string(),
    }
}

/// Checks one-channel `h`×`w` maps and colours them with `cmap`, enlarged (nearest) to `cell_h`×`cell_w`. With
/// `normalise`, each map is divided by its own maximum (an all-zero map stays 0); non-finite and negative values
/// count as 0.
fn map_tiles(
    op: &str,
    maps: &[Vec<f32>],
    (h, w): (usize, usize),
    labels: &[String],
    (cell_h, cell_w): (usize, usize),
    cmap: Colormap,
    normalise: bool,
) -> Result<Vec<Vec<u8>>> {
    if maps.is_empty() {
        return Err(Error::shape(op, "no maps"));
    }
    if labels.len() != maps.len() {
        return Err(Error::shape(op, format!("{} labels for {} maps", labels.len(), maps.len())));
    }
    if h == 0 || w == 0 || cell_h == 0 || cell_w == 0 {
        return Err(Error::shape(op, format!("map size {h}×{w} and cell size {cell_h}×{cell_w} must be positive")));
    }
    if cell_h.checked_mul(cell_w).is_none_or(|p| p > MAX_PIXELS) {
        return Err(Error::limit(op, format!("a {cell_h}×{cell_w} cell is too large")));
    }
    let clean = |v: f32| if v.is_finite() && v > 0.0 { v } else { 0.0 };
    let mut out = Vec::with_capacity(maps.len());
    for (i, m) in maps.iter().enumerate() {
        if h.checked_mul(w) != Some(m.len()) {
            return Err(Error::shape(op, format!("map {i}: {} values for {h}×{w}", m.len())));
        }
        let scale = if normalise {
            let max = m.iter().copied().map(clean).fold(0.0f32, f32::max);
            if max > 0.0 { 1.0 / max } else { 0.0 }
        } else {
            1.0
        };
        let small: Vec<u8> = m.iter().flat_map(|&v| cmap.rgb(clean(v) * scale)).collect();
        out.push(resize_nearest(&small, h, w, cell_h, cell_w));
    }
    Ok(out)
}

/// Cross-attention maps, one tile per token: each `res`×`res` map (row-major, non-negative) normalised to its own
/// maximum (0 → black, max → white), enlarged (nearest) to `cell_px`×`cell_px`, under its label (a token's text;
/// `</w>` is dropped, see `token_label`), in rows of at most `TILES_PER_ROW`. Errors on no maps, a label count that
/// differs from the map count, a map of the wrong length, or a zero size.
pub fn attention_grid(maps: &[Vec<f32>], res: usize, labels: &[String], cell_px: usize) -> Result<Rgb> {
    attention_grid_with(maps, res, labels, cell_px, Colormap::Gray)
}

/// `attention_grid` with a choice of colour map.
pub fn attention_grid_with(
    maps: &[Vec<f32>],
    res: usize,
    labels: &[String],
    cell_px: usize,
    cmap: Colormap,
) -> Result<Rgb> {
    const OP: &str = "attention_grid";
    let labels: Vec<String> = labels.iter().map(|l| token_label(l)).collect();
    let rgbs = map_tiles(OP, maps, (res, res), &labels, (cell_px, cell_px), cmap, true)?;
    let tiles: Vec<Tile> = rgbs
        .into_iter()
        .zip(&labels)
        .map(|(rgb, label)| Tile { rgb: Cow::Owned(rgb), h: cell_px, w: cell_px, label })
        .collect();
    tile_grid(OP, &tiles, TILES_PER_ROW, 1)
}

/// Local-blend masks, one tile per prompt: each `h`×`w` mask (row-major; 0 → black, 1 → white, values between as
/// grey, clamped to [0, 1]) enlarged (nearest) to `cell_px` wide and `cell_px · h / w` high (rounded up), under its
/// caption (wrapped to at most `MAX_CAPTION_LINES` lines), in rows of at most `TILES_PER_ROW`. Errors as
/// `attention_grid`.
pub fn mask_grid(masks: &[Vec<f32>], h: usize, w: usize, captions: &[String], cell_px: usize) -> Result<Rgb> {
    const OP: &str = "mask_grid";
    if w == 0 {
        return Err(Error::shape(OP, "mask width must be positive"));
    }
    let cell_h = cell_px.checked_mul(h).map(|p| p.div_ceil(w).max(1));
    let cell_h = cell_h.ok_or_else(|| Error::limit(OP, format!("{cell_px}-pixel cells of {h}×{w} masks")))?;
    let rgbs = map_tiles(OP, masks, (h, w), captions, (cell_h, cell_px), Colormap::Gray, false)?;
    let tiles: Vec<Tile> = rgbs
        .into_iter()
        .zip(captions)
        .map(|(rgb, label)| Tile { rgb: Cow::Owned(rgb), h: cell_h, w: cell_px, label })
        .collect();
    tile_grid(OP, &tiles, TILES_PER_ROW, MAX_CAPTION_LINES)
}
