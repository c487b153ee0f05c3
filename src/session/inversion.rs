//! A real image's inversion as data ([`Inversion`]) and as one safetensors file: `p2p-wgpu invert` writes it,
//! `--inverted FILE` edits from it without inverting again.
//!
//! File layout (format `p2p-wgpu-inversion`, version 1):
//! - tensors: `inversion_latents` F32 `[S + 1, C, h, w]` (x_0, the encoded image, … x_S, NCHW), for a cascade
//!   `sr_inversion_latents` F32 `[S_sr + 1, 3, H, W]`, and `input` U8 `[H, W, 3]` (the picture as the model saw
//!   it, after fitting);
//! - metadata: `format`, `version`, `prompt`, `model_id` (see [`crate::weights::folder::model_identity`]),
//!   `model_name` (the folder's name, for messages), `steps`, and for a cascade `sr_steps`.
//!
//! Reading checks the format, every shape against the metadata and that every latent is finite; the session then
//! refuses a file made with another model, prompt or step count, by name.
use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::input_image::Picture;
use crate::weights::SafetensorsFile;
use crate::weights::safetensors_file::FileDType;

/// The `format` metadata value of an inversion file.
pub const FORMAT: &str = "p2p-wgpu-inversion";
/// The `version` metadata value this build writes and reads.
pub const VERSION: &str = "1";

/// Everything an edit from an inversion needs, with what it was made with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inversion {
    /// The source prompt the image was inverted with (the edit's source prompt).
    pub prompt: String,
    /// The model's identity (hash of its config files).
    pub model_id: String,
    /// The model folder's name (messages only).
    pub model_name: String,
    /// Base-stage DDIM steps.
    pub steps: usize,
    /// Cascade: SR-stage DDIM steps.
    pub sr_steps: Option<usize>,
    /// The picture as the model saw it (fitted to the run's size).
    pub input: Picture,
    /// `[steps + 1, C, h, w]`.
    pub shape: [usize; 4],
    /// NCHW f32, `shape`.
    pub latents: Vec<f32>,
    /// Cascade: NCHW f32 `[sr_steps + 1, 3, H, W]` (H, W: the input's).
    pub sr_latents: Option<Vec<f32>>,
}

impl Inversion {
    /// The SR trajectory's shape, when it has one.
    pub fn sr_shape(&self) -> Option<[usize; 4]> {
        self.sr_steps.map(|s| [s + 1, 3, self.input.height as usize, self.input.width as usize])
    }

    /// Checks that the data agree with the stated shapes and are finite (a request's inversion may come from
    /// anywhere).
    pub fn validate(&self) -> Result<()> {
        self.input.validate()?;
        let [n, c, h, w] = self.shape;
        if n != self.steps + 1 || c == 0 || h == 0 || w == 0 || self.latents.len() != n * c * h * w {
            return Err(Error::input(format!(
                "inversion: latents of shape {:?} ({} values) do not hold {} steps",
                self.shape,
                self.latents.len(),
                self.steps
            )));
        }
        match (&self.sr_latents, self.sr_shape()) {
            (None, None) => {}
            (Some(v), Some(s)) if v.len() == s.iter().product::<usize>() => {}
            _ => {
                return Err(Error::input(format!(
                    "inversion: the SR latents do not match sr_steps {:?} and the {}x{} input",
                    self.sr_steps, self.input.width, self.input.height
                )));
            }
        }
        let all = self.latents.iter().chain(self.sr_latents.iter().flatten());
        if let Some(bad) = all.into_iter().find(|v| !v.is_finite()) {
            return Err(Error::input(format!("inversion: the latents hold {bad}")));
        }
        Ok(())
    }

    /// The file's bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        use safetensors::tensor::TensorView;
        let err = |e: safetensors::SafeTensorError| Error::msg(format!("inversion file: {e}"));
        let input_shape = vec![self.input.height as usize, self.input.width as usize, 3];
        let lat: &[u8] = bytemuck::cast_slice(&self.latents);
        let mut views =
            vec![("inversion_latents".to_string(), TensorView::new(safetensors::Dtype::F32, self.shape.to_vec(), lat))];
        views.push(("input".to_string(), TensorView::new(safetensors::Dtype::U8, input_shape, &self.input.rgb)));
        if let (Some(v), Some(s)) = (&self.sr_latents, self.sr_shape()) {
            let b: &[u8] = bytemuck::cast_slice(v);
            views.push(("sr_inversion_latents".to_string(), TensorView::new(safetensors::Dtype::F32, s.to_vec(), b)));
        }
        let views = views.into_iter().map(|(n, v)| v.map(|v| (n, v))).collect::<std::result::Result<Vec<_>, _>>();
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("version".to_string(), VERSION.to_string());
        meta.insert("prompt".to_string(), self.prompt.clone());
        meta.insert("model_id".to_string(), self.model_id.clone());
        meta.insert("model_name".to_string(), self.model_name.clone());
        meta.insert("steps".to_string(), self.steps.to_string());
        if let Some(s) = self.sr_steps {
            meta.insert("sr_steps".to_string(), s.to_string());
        }
        safetensors::tensor::serialize(views.map_err(err)?, Some(meta)).map_err(err)
    }

    /// Reads and checks an inversion file.
    pub fn read(path: &Path) -> Result<Inversion> {
        let name = path.display().to_string();
        let bad = |m: String| Error::input(format!("{name}: {m}"));
        let f = SafetensorsFile::open(path).map_err(|e| Error::input(e.to_string()))?;
        let meta = f.metadata();
        let text = |key: &str| -> Result<String> {
            meta.get(key).cloned().ok_or_else(|| bad(format!("no `{key}` in its metadata (a damaged file?)")))
        };
        match meta.get("format") {
            Some(v) if v == FORMAT => {}
            _ => {
                return Err(bad(format!(
                    "not an inversion file (no format {FORMAT:?}; make one with p2p-wgpu invert)"
                )));
            }
        }
        let version = text("version")?;
        if version != VERSION {
            return Err(bad(format!("inversion file version {version}; this build reads version {VERSION}")));
        }
        let count = |key: &str| -> Result<usize> {
            let v = text(key)?;
            v.parse::<usize>()
                .ok()
                .filter(|s| (1..=1000).contains(s))
                .ok_or_else(|| bad(format!("`{key}` is {v:?}, not a step count from 1 to 1000")))
        };
        let steps = count("steps")?;
        let sr_steps = if meta.contains_key("sr_steps") { Some(count("sr_steps")?) } else { None };
        let tensor = |key: &str, dtype: FileDType, rank: usize| -> Result<Vec<usize>> {
            let info = f.info(key).ok_or_else(|| bad(format!("no tensor `{key}` (a damaged file?)")))?;
            if info.dtype != dtype || info.shape.len() != rank {
                return Err(bad(format!(
                    "`{key}` is {} {:?}, expected {dtype} of rank {rank}",
                    info.dtype, info.shape
                )));
            }
            Ok(info.shape.clone())
        };
        let s = tensor("input", FileDType::U8, 3)?;
        if s[2] != 3 {
            return Err(bad(format!("`input` is {s:?}, expected [H, W, 3]")));
        }
        let too_big = |d: usize| u32::try_from(d).is_err();
        if too_big(s[0]) || too_big(s[1]) {
            return Err(bad(format!("`input` is {s:?}, too large")));
        }
        let input = Picture { width: s[1] as u32, height: s[0] as u32, rgb: f.read_bytes("input")? };
        let l = tensor("inversion_latents", FileDType::F32, 4)?;
        let shape = [l[0], l[1], l[2], l[3]];
        let latents = f.read_f32("inversion_latents").map_err(|e| Error::input(e.to_string()))?.data;
        let sr_latents = match sr_steps {
            Some(_) => {
                tensor("sr_inversion_latents", FileDType::F32, 4)?;
                Some(f.read_f32("sr_inversion_latents").map_err(|e| Error::input(e.to_string()))?.data)
            }
            None => None,
        };
        let inv = Inversion {
            prompt: text("prompt")?,
            model_id: text("model_id")?,
            model_name: text("model_name")?,
            steps,
            sr_steps,
            input,
            shape,
            latents,
            sr_latents,
        };
        if let (Some(want), Some(info)) = (inv.sr_shape(), f.info("sr_inversion_latents")) {
            if info.shape != want {
                return Err(bad(format!("`sr_inversion_latents` is {:?}, expected {want:?}", info.shape)));
            }
        }
        inv.validate().map_err(|e| bad(e.to_string()))?;
        Ok(inv)
    }
}
