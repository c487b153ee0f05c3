//! What a run returns ([`Output`]) and the files it makes: `source.png`, `edit.png` (or `edit-1.png`, …),
//! `input.png` (a real image as the model saw it), `grid.png` ([input |] source | edits with the prompts above),
//! `attention-K.png` per prompt, `blend-masks.png` and `raw.safetensors`. The files are built in memory
//! ([`Output::files`]) and written atomically by [`Output::write`], each only after all of them were made.
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::input_image::Picture;
use crate::output::{Quantize, WriteSet, png, safetensors_f32, to_rgb8};
use crate::pictures::{attention_grid, captioned_grid, mask_grid};

/// Per-token cross-attention maps of an edit: the sum over UNet evaluations of the stored maps, heads and layers.
#[derive(Clone, Debug)]
pub struct AttentionMaps {
    /// `[B, res², keys]`.
    pub sum: Vec<f32>,
    pub res: usize,
    pub keys: usize,
    pub evaluations: usize,
    /// Per prompt, the label of each token from BOS to EOS.
    pub labels: Vec<Vec<String>>,
}

impl AttentionMaps {
    /// The mean map of token `n` of prompt `b`, `res²` values.
    pub fn map(&self, b: usize, n: usize) -> Vec<f32> {
        let r2 = self.res * self.res;
        (0..r2).map(|q| self.sum[(b * r2 + q) * self.keys + n] / self.evaluations as f32).collect()
    }
}

/// Wall-clock times of a run, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Sampling and decoding (the model was loaded by `Session::open`).
    pub run: f64,
}

/// The result of one request. Rows: the prompt (source), then the edits' targets.
#[derive(Clone, Debug)]
pub struct Output {
    pub prompts: Vec<String>,
    /// `[B, 3, H, W]` in [0, 1].
    pub images: Vec<f32>,
    pub image_hw: (usize, usize),
    /// How [`Output::rgb8`] makes bytes (`compat: "ptp"` truncates).
    pub quantize: Quantize,
    /// Raw tensors beside `images` for `raw.safetensors`: the final latents (a cascade: the base stage's
    /// samples, and `base_images`).
    pub raw: Vec<(&'static str, Vec<usize>, Vec<f32>)>,
    /// The initial noise used (name, NCHW shape, values), so that the run can be reproduced exactly.
    pub noise: Vec<(&'static str, Vec<usize>, Vec<f32>)>,
    pub attention: Option<AttentionMaps>,
    /// The last local-blend masks, `[B][h·w]` at the sample size `sample_hw`.
    pub blend_masks: Option<Vec<Vec<f32>>>,
    pub sample_hw: (usize, usize),
    /// The seed of the initial noise (None: all of it came as data).
    pub seed: Option<u64>,
    /// Real-image editing: the picture as the model saw it (after fitting), `image_hw` in size.
    pub input: Option<Picture>,
    /// Things the user may want to know (a prompt cut at the tokenizer's length).
    pub warnings: Vec<String>,
    pub timings: Timings,
}

/// Which optional files [`Output::files`] makes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Files {
    /// `raw.safetensors`.
    pub raw: bool,
}

impl Output {
    /// Row `k` as RGB bytes.
    pub fn rgb8(&self, k: usize) -> Vec<u8> {
        let (h, w) = self.image_hw;
        to_rgb8(&self.images[k * 3 * h * w..(k + 1) * 3 * h * w], h, w, self.quantize)
    }

    /// The image file names: source.png, then edit.png or edit-1.png, edit-2.png, ...
    pub fn image_names(rows: usize) -> Vec<String> {
        let mut v = vec!["source.png".to_string()];
        match rows.saturating_sub(1) {
            0 => {}
            1 => v.push("edit.png".into()),
            n => v.extend((1..=n).map(|k| format!("edit-{k}.png"))),
        }
        v
    }

    /// The names of the files [`Output::files`] makes for `rows` rows, with the input picture (`input.png`),
    /// attention maps, blend masks and `raw.safetensors` as asked.
    pub fn file_names(rows: usize, input: bool, attention: bool, blend: bool, raw: bool) -> Vec<String> {
        let mut v = Self::image_names(rows);
        if input {
            v.insert(0, "input.png".into());
        }
        if rows + usize::from(input) > 1 {
            v.push("grid.png".into());
        }
        if attention {
            v.extend((0..rows).map(|b| format!("attention-{b}.png")));
        }
        if blend {
            v.push("blend-masks.png".into());
        }
        if raw {
            v.push("raw.safetensors".into());
        }
        v
    }

    /// Whether `name` is a file name that [`Output::files`] makes for some request: `source.png`, `edit.png`,
    /// `edit-N.png`, `input.png`, `grid.png`, `attention-N.png`, `blend-masks.png`, `raw.safetensors`.
    pub fn is_output_name(name: &str) -> bool {
        let numbered = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(".png"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        matches!(name, "input.png" | "source.png" | "edit.png" | "grid.png" | "blend-masks.png" | "raw.safetensors")
            || numbered("edit-")
            || numbered("attention-")
    }

    /// The files of this output, in memory: (name, bytes).
    pub fn files(&self, f: Files) -> Result<Vec<(String, Vec<u8>)>> {
        let (h, w) = self.image_hw;
        let b = self.prompts.len();
        let rgbs: Vec<Vec<u8>> = (0..b).map(|k| self.rgb8(k)).collect();
        let mut out = Vec::new();
        for (name, rgb) in Self::image_names(b).into_iter().zip(&rgbs) {
            out.push((name, png(rgb, h, w)?));
        }
        let mut tiles: Vec<(Vec<u8>, usize, usize)> = Vec::new();
        let mut captions = Vec::new();
        if let Some(p) = &self.input {
            out.insert(0, ("input.png".into(), png(&p.rgb, h, w)?));
            tiles.push((p.rgb.clone(), h, w));
            captions.push("input".to_string());
        }
        tiles.extend(rgbs.iter().map(|r| (r.clone(), h, w)));
        captions.extend(self.prompts.iter().cloned());
        if tiles.len() > 1 {
            let (g, gh, gw) = captioned_grid(&tiles, &captions)?;
            out.push(("grid.png".into(), png(&g, gh, gw)?));
        }
        if let Some(a) = &self.attention {
            for (k, labels) in a.labels.iter().enumerate() {
                let maps: Vec<Vec<f32>> = (0..labels.len()).map(|n| a.map(k, n)).collect();
                let (g, gh, gw) = attention_grid(&maps, a.res, labels, 64)?;
                out.push((format!("attention-{k}.png"), png(&g, gh, gw)?));
            }
        }
        if let Some(m) = &self.blend_masks {
            let (g, gh, gw) = mask_grid(m, self.sample_hw.0, self.sample_hw.1, &self.prompts, 128)?;
            out.push(("blend-masks.png".into(), png(&g, gh, gw)?));
        }
        if f.raw {
            let mut t: Vec<(&str, Vec<usize>, &[f32])> = vec![("images", vec![b, 3, h, w], &self.images)];
            t.extend(self.raw.iter().map(|(n, s, d)| (*n, s.clone(), d.as_slice())));
            out.push(("raw.safetensors".into(), safetensors_f32(&t)?));
        }
        Ok(out)
    }

    /// The initial noise as a safetensors file (`latents`, and a cascade's `sr_aug_noise`, `sr_latents`).
    pub fn noise_file(&self) -> Result<Vec<u8>> {
        let t: Vec<(&str, Vec<usize>, &[f32])> =
            self.noise.iter().map(|(n, s, d)| (*n, s.clone(), d.as_slice())).collect();
        safetensors_f32(&t)
    }

    /// Makes every file, then writes them all-or-nothing into the existing folder `dir` (see
    /// [`crate::output::files`]); returns the paths.
    pub fn write(&self, dir: &Path, f: Files) -> Result<Vec<PathBuf>> {
        let mut set = WriteSet::new();
        for (name, bytes) in self.files(f)? {
            set.add(dir.join(name), bytes);
        }
        set.commit()
    }
}
