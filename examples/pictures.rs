//! Writes sample pictures of `p2p_wgpu::pictures` (captioned grids, attention-map grids in both colour maps, a
//! mask grid) into a folder, for a look by eye after changing the picture code. No GPU, no model.
//!
//! `cargo run --release --example pictures -- /tmp/pictures` (default folder: `pictures-example/`).
use std::path::PathBuf;

use p2p_wgpu::output;
use p2p_wgpu::pictures::{Colormap, attention_grid, attention_grid_with, captioned_grid, mask_grid};

/// An RGB ramp: red grows down the rows, green along the columns.
fn ramp(h: usize, w: usize) -> Vec<u8> {
    (0..h * w).flat_map(|i| [(i / w) as u8, (i % w) as u8, 7]).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn main() -> p2p_wgpu::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "pictures-example".into()));
    std::fs::create_dir_all(&dir).map_err(|e| p2p_wgpu::Error::input(format!("{}: {e}", dir.display())))?;
    let write = |name: &str, (rgb, h, w): (Vec<u8>, usize, usize)| -> p2p_wgpu::Result<()> {
        let path = dir.join(name);
        output::write_atomic(&path, &output::png(&rgb, h, w)?)?;
        println!("wrote {}", path.display());
        Ok(())
    };
    let prompts =
        ["source", "a cat riding a bicycle", "a photograph of a dog riding a motorcycle on a sunny day in the park"];
    let small: Vec<_> = prompts.iter().map(|_| (ramp(64, 64), 64, 64)).collect();
    write("grid-small.png", captioned_grid(&small, &strings(&prompts))?)?;
    let big: Vec<_> = prompts.iter().map(|_| (ramp(256, 256).repeat(2), 512, 256)).collect();
    write("grid-512.png", captioned_grid(&big, &strings(&prompts))?)?;
    let tokens =
        ["<|startoftext|>", "a</w>", "cat</w>", "riding</w>", "a</w>", "bicycle</w>", "<|endoftext|>", "x", "y"];
    // One blob per token, moving down the 16×16 map.
    let maps: Vec<Vec<f32>> = (0..tokens.len())
        .map(|t| {
            (0..256)
                .map(|i| (((i / 16) as f32 - t as f32).powi(2) + ((i % 16) as f32 - 8.0).powi(2)).sqrt())
                .map(|d| (-d / 4.0).exp())
                .collect()
        })
        .collect();
    write("attention.png", attention_grid(&maps, 16, &strings(&tokens), 96)?)?;
    write("attention-viridis.png", attention_grid_with(&maps, 16, &strings(&tokens), 96, Colormap::Viridis)?)?;
    let masks: Vec<Vec<f32>> =
        maps.iter().take(3).map(|m| m.iter().map(|&v| (v > 0.3) as u8 as f32).collect()).collect();
    write("masks.png", mask_grid(&masks, 16, 16, &strings(&prompts), 128)?)?;
    Ok(())
}
