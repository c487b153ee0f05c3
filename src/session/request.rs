//! A run as plain data: what the command line builds from its flags and what a JSON file or an HTTP body holds.
//! Field names are the command line's long flags with `_` for `-` (`negative_prompt`, `cross_steps`); edits keep
//! the flags' syntax (`"swap": ["cat=dog"]`, `"reweight": ["fluffy=2"]`, `"cross_steps": "0.8"`). Unknown fields
//! are an error naming the field. A request never names a file: initial noise comes as data ([`InitialNoise`]).
use serde::{Deserialize, Serialize};

use super::inversion::Inversion;
use crate::error::{Error, Result};
use crate::input_image::{Picture, Resize};
use crate::output::Quantize;
use crate::p2p::{EditSpec, Mode, Window, spec};
use crate::pipelines::Method;
use crate::schedulers::Kind;

fn default_blend_threshold() -> f32 {
    0.3
}
/// The largest `height` or `width` a request may ask for, in pixels (the model's own multiple is checked with the
/// model).
pub const MAX_SIDE: usize = 8192;

fn default_cross_steps() -> String {
    "0.8".into()
}
fn default_self_steps() -> String {
    "0.4".into()
}
fn default_self_max_res() -> usize {
    16
}

/// One run: a prompt, optionally edits, and how to sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The (source) prompt.
    pub prompt: String,
    /// Unconditional prompt for classifier-free guidance.
    #[serde(default)]
    pub negative_prompt: String,
    /// Sampling steps (None: the model's `num_inference_steps`, else 50).
    #[serde(default)]
    pub steps: Option<usize>,
    /// Guidance scale (None: the model's `guidance_scale`, else 7.5).
    #[serde(default)]
    pub guidance: Option<f64>,
    /// pndm, ddim, dpm++ (dpmsolver++) or euler (None: the model's scheduler config).
    #[serde(default)]
    pub scheduler: Option<String>,
    /// Seed of the initial noise (None, without `latents`: a random seed, reported in `Output::seed`).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Initial noise as data (replaces the seed's noise).
    #[serde(default)]
    pub latents: Option<InitialNoise>,
    /// Image size in pixels (None: the model's native size).
    #[serde(default)]
    pub height: Option<usize>,
    #[serde(default)]
    pub width: Option<usize>,
    /// Cascade: super-resolution steps and guidance (None: the model's).
    #[serde(default)]
    pub sr_steps: Option<usize>,
    #[serde(default)]
    pub sr_guidance: Option<f64>,
    /// "ptp": reproduce the reference implementation's quirks.
    #[serde(default)]
    pub compat: Option<String>,

    /// Word swaps `OLD=NEW`.
    #[serde(default)]
    pub swap: Vec<String>,
    /// Full target prompts.
    #[serde(default)]
    pub target: Vec<String>,
    /// "replace" or "refine" (None: replace when every target has the prompt's word count).
    #[serde(default)]
    pub mode: Option<String>,
    /// `WORD=C` attention reweights.
    #[serde(default)]
    pub reweight: Vec<String>,
    /// Local-blend words, `W1,W2,...`.
    #[serde(default)]
    pub blend: Option<String>,
    #[serde(default = "default_blend_threshold")]
    pub blend_threshold: f32,
    #[serde(default)]
    pub blend_start: f64,
    #[serde(default)]
    pub blend_res: Option<usize>,
    /// Cross-attention window, `F` or `S:E` fractions of the steps.
    #[serde(default = "default_cross_steps")]
    pub cross_steps: String,
    /// Per-word windows `W=F` or `W=S:E`.
    #[serde(default)]
    pub cross_steps_word: Vec<String>,
    #[serde(default = "default_self_steps")]
    pub self_steps: String,
    #[serde(default = "default_self_max_res")]
    pub self_max_res: usize,

    /// Also return the per-token attention maps (and their side; None: as `blend_res`).
    #[serde(default)]
    pub attention: bool,
    #[serde(default)]
    pub attention_res: Option<usize>,

    /// Real-image editing: the picture to edit, decoded RGB8 of any size (`prompt` describes it).
    #[serde(default)]
    pub image: Option<Picture>,
    /// How the picture becomes the model's size: "crop" (the default), "stretch" or "pad".
    #[serde(default)]
    pub resize: Option<String>,
    /// How the edit starts from the inversion: "ddim", "negative-prompt" or "direct" (the default).
    #[serde(default)]
    pub inversion: Option<String>,
    /// Real-image editing from an inversion made before ([`Session::invert`](super::Session::invert)): replaces
    /// `image`; the prompt and step counts must be the inversion's.
    #[serde(default)]
    pub inverted: Option<Inversion>,
}

/// Initial noise given as data, NCHW f32: `latents` `[1, C, h, w]`; for a cascade optionally the SR noises
/// `[1, 3, 4h, 4w]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialNoise {
    pub shape: [usize; 4],
    pub latents: Vec<f32>,
    #[serde(default)]
    pub sr_aug_noise: Option<Vec<f32>>,
    #[serde(default)]
    pub sr_latents: Option<Vec<f32>>,
}

impl Request {
    /// A plain generation of `prompt` with every other field at its default.
    pub fn new(prompt: impl Into<String>) -> Request {
        Request {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            steps: None,
            guidance: None,
            scheduler: None,
            seed: None,
            latents: None,
            height: None,
            width: None,
            sr_steps: None,
            sr_guidance: None,
            compat: None,
            swap: Vec::new(),
            target: Vec::new(),
            mode: None,
            reweight: Vec::new(),
            blend: None,
            blend_threshold: default_blend_threshold(),
            blend_start: 0.0,
            blend_res: None,
            cross_steps: default_cross_steps(),
            cross_steps_word: Vec::new(),
            self_steps: default_self_steps(),
            self_max_res: default_self_max_res(),
            attention: false,
            attention_res: None,
            image: None,
            resize: None,
            inversion: None,
            inverted: None,
        }
    }

    /// Parses a JSON request; an unknown field or a wrong type is an error naming it.
    pub fn from_json(text: &str) -> Result<Request> {
        serde_json::from_str(text).map_err(|e| Error::input(format!("request: {e}")))
    }

    /// Whether the request edits (a swap, a target or a reweight).
    pub fn is_edit(&self) -> bool {
        !self.swap.is_empty() || !self.target.is_empty() || !self.reweight.is_empty()
    }

    /// The scheduler asked for.
    pub fn scheduler_kind(&self) -> Result<Option<Kind>> {
        Ok(match self.scheduler.as_deref() {
            None => None,
            Some("pndm") => Some(Kind::Pndm),
            Some("ddim") => Some(Kind::Ddim),
            Some("dpm++" | "dpmsolver++") => Some(Kind::DpmSolverPp),
            Some("euler") => Some(Kind::Euler),
            Some(other) => {
                return Err(Error::input(format!(
                    "scheduler {other:?}: expected pndm, ddim, dpm++ (dpmsolver++) or euler"
                )));
            }
        })
    }

    /// How images become bytes.
    pub fn quantize(&self) -> Quantize {
        if self.compat.is_some() { Quantize::Truncate } else { Quantize::Round }
    }

    /// Checks what needs no model: step counts, finite numbers, options that need an edit.
    pub fn validate(&self) -> Result<()> {
        for (flag, s) in [("--steps", self.steps), ("--sr-steps", self.sr_steps)] {
            if let Some(s) = s.filter(|s| *s == 0 || *s > 1000) {
                return Err(Error::input(format!("{flag} must be between 1 and 1000, got {s}")));
            }
        }
        for (flag, v) in [("--height", self.height), ("--width", self.width)] {
            if let Some(v) = v.filter(|v| *v == 0 || *v > MAX_SIDE) {
                return Err(Error::input(format!("{flag} must be between 1 and {MAX_SIDE} pixels, got {v}")));
            }
        }
        if let Some(g) = self.guidance.filter(|g| !g.is_finite()) {
            return Err(Error::input(format!("--guidance must be a finite number, got {g}")));
        }
        if let Some(g) = self.sr_guidance.filter(|g| !g.is_finite()) {
            return Err(Error::input(format!("--sr-guidance must be a finite number, got {g}")));
        }
        self.validate_image()?;
        if !self.is_edit() && (self.blend.is_some() || self.attention || !self.cross_steps_word.is_empty()) {
            return Err(Error::input(
                "--blend, --cross-steps-word and --save-attention need an edit (--swap, --target or --reweight)",
            ));
        }
        if self.self_max_res == 0 {
            return Err(Error::input("--self-max-res must be positive"));
        }
        if let Some(c) = self.compat.as_deref().filter(|c| *c != "ptp") {
            return Err(Error::input(format!("compat {c:?}: the only compatibility mode is \"ptp\"")));
        }
        if let Some(m) = self.mode.as_deref().filter(|m| !matches!(*m, "replace" | "refine")) {
            return Err(Error::input(format!("mode {m:?}: expected replace or refine")));
        }
        self.scheduler_kind()?;
        if let Some(n) = &self.latents {
            let [one, c, h, w] = n.shape;
            if one != 1 || n.latents.len() != c * h * w {
                return Err(Error::input(format!(
                    "latents: shape {:?} with {} values, expected [1, C, h, w]",
                    n.shape,
                    n.latents.len()
                )));
            }
            if let Some(bad) = n.latents.iter().find(|v| !v.is_finite()) {
                return Err(Error::input(format!("latents hold {bad}")));
            }
        }
        Ok(())
    }

    /// The inversion method (None: no picture).
    pub fn inversion_method(&self) -> Result<Option<Method>> {
        match (self.is_real_image(), self.inversion.as_deref()) {
            (false, _) => Ok(None),
            (true, None) => Ok(Some(Method::default())),
            (true, Some(m)) => Method::parse(m).map(Some),
        }
    }

    /// Whether the request edits a real image (a picture, or an inversion of one).
    pub fn is_real_image(&self) -> bool {
        self.image.is_some() || self.inverted.is_some()
    }

    /// How the picture is fitted.
    pub fn resize_mode(&self) -> Result<Resize> {
        self.resize.as_deref().map_or(Ok(Resize::default()), Resize::parse)
    }

    /// The checks of a real-image request (none without a picture, except that its options need one).
    fn validate_image(&self) -> Result<()> {
        if !self.is_real_image() {
            if self.resize.is_some() || self.inversion.is_some() {
                return Err(Error::input("--resize and --inversion need an --image"));
            }
            return Ok(());
        }
        if let Some(pic) = &self.image {
            pic.validate()?;
            self.resize_mode()?;
        }
        if let Some(inv) = &self.inverted {
            if self.image.is_some() {
                return Err(Error::input("--image and --inverted cannot be combined (the inversion holds its image)"));
            }
            if self.resize.is_some() || self.height.is_some() || self.width.is_some() {
                return Err(Error::input(
                    "--resize, --height and --width cannot be combined with --inverted (the inversion fixed the size)",
                ));
            }
            inv.validate()?;
        }
        let method = self.inversion_method()?;
        let flag = if self.image.is_some() { "--image" } else { "--inverted" };
        if self.seed.is_some() || self.latents.is_some() {
            return Err(Error::input(format!(
                "{flag} cannot be combined with --seed or --latents (the inversion of the image is the noise)"
            )));
        }
        if let Some(s) = self.scheduler.as_deref().filter(|s| *s != "ddim") {
            return Err(Error::input(format!(
                "--scheduler {s} with {flag}: editing a real image uses DDIM (its inversion is DDIM's), leave \
                 --scheduler out or give ddim"
            )));
        }
        if method == Some(Method::NegativePrompt) && !self.negative_prompt.is_empty() {
            return Err(Error::input(
                "--negative-prompt cannot be combined with --inversion negative-prompt (which sets it to the prompt)",
            ));
        }
        Ok(())
    }

    /// The edit specification, checked (the tokenizer-dependent checks come with the plan).
    pub fn edit_spec(&self) -> Result<EditSpec> {
        let mut e = EditSpec::new(&self.prompt);
        e.swaps = self.swap.iter().map(|s| spec::parse_swap(s)).collect::<Result<_>>()?;
        e.targets = self.target.clone();
        e.mode = match self.mode.as_deref() {
            Some("replace") => Some(Mode::Replace),
            Some("refine") => Some(Mode::Refine),
            _ => None,
        };
        e.reweights = self.reweight.iter().map(|s| spec::parse_reweight(s)).collect::<Result<_>>()?;
        if let Some(b) = &self.blend {
            e.blend_words = spec::parse_blend_words(b)?;
        }
        e.blend_threshold = self.blend_threshold;
        e.blend_start = self.blend_start;
        e.cross_steps =
            Window::parse(&self.cross_steps).map_err(|err| Error::input(format!("--cross-steps: {err}")))?;
        e.cross_steps_word = self.cross_steps_word.iter().map(|s| spec::parse_word_window(s)).collect::<Result<_>>()?;
        e.self_steps = Window::parse(&self.self_steps).map_err(|err| Error::input(format!("--self-steps: {err}")))?;
        e.compat_ptp = self.compat.is_some();
        e.validate()?;
        Ok(e)
    }
}
