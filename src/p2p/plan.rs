//! The edit plan: from what the user asked (`EditSpec`) to the data the attention kernels read (`EditPlan`).
//!
//! [`EditPlan::new`] follows docs/DESIGN.md §5 (the google/prompt-to-prompt notebooks):
//! - targets: the swap target (the prompt with each swapped word replaced), then the `--target` prompts; with none
//!   but reweights, the prompt itself;
//! - mode: given, or Replace when every target has the prompt's word count, else Refine;
//! - mapper and r: the replacement mapper ([`super::mapper`], r = 0) or the refinement alignment
//!   ([`super::align`], r = 1 − a);
//! - eq: each reweight factor on its word's tokens in each target that has the word (`get_equalizer`);
//! - alpha: the cross window table, S+1 rows, with per-word windows ([`super::windows`]);
//! - the self window and the local blend positions.
use super::align::{auto_mode, refinement_mapper};
use super::mapper::replacement_mapper;
use super::windows::{absent, cross_table, self_window};
use crate::error::{Error, Result};
use crate::ops::attention::EditData;
use crate::text::{PromptWords, Tokenizer};

/// Cross-attention edit mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Word swap: the replacement mapper (same word count).
    Replace,
    /// Refinement: the Needleman–Wunsch token alignment.
    Refine,
}

/// A window as fractions of the steps, `[start, end)`, both in [0, 1]. "F" means (0, F); "S:E" means (S, E).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub start: f64,
    pub end: f64,
}

/// What the user asked for (the CLI's edit options, parsed).
#[derive(Clone, Debug, PartialEq)]
pub struct EditSpec {
    /// The source prompt.
    pub prompt: String,
    /// `--swap OLD=NEW`: one target = prompt with each OLD word replaced by NEW (NEW may be several words).
    pub swaps: Vec<(String, String)>,
    /// `--target TEXT`: more full target prompts.
    pub targets: Vec<String>,
    /// `--mode`; None: Replace when every target has the prompt's word count, else Refine.
    pub mode: Option<Mode>,
    /// `--reweight WORD=C`: factor C on WORD's tokens in each target (with no target at all, target = prompt).
    pub reweights: Vec<(String, f32)>,
    /// `--blend W1,W2,...`: local blending on these words, looked up in every prompt.
    pub blend_words: Vec<String>,
    pub blend_threshold: f32,
    /// Fraction of the steps before blending starts.
    pub blend_start: f64,
    /// `--cross-steps`, default (0, 0.8).
    pub cross_steps: Window,
    /// `--cross-steps-word W=F|W=S:E`: per-word windows (looked up in each target).
    pub cross_steps_word: Vec<(String, Window)>,
    /// `--self-steps`, default (0, 0.4).
    pub self_steps: Window,
    /// `--compat ptp`: reproduce the reference's replacement-mapper quirk.
    pub compat_ptp: bool,
}

/// Local blending, resolved to token positions.
#[derive(Clone, Debug, PartialEq)]
pub struct BlendPlan {
    /// Per prompt (source, then targets): the token positions (BOS = 0) of all blend words found in it.
    pub positions: Vec<Vec<usize>>,
    pub threshold: f32,
    /// No blending after scheduler steps with index < this (`int(blend_start · S)`).
    pub start_step: usize,
}

/// Everything the engine needs per step, for `steps` = S sampling steps.
#[derive(Clone, Debug, PartialEq)]
pub struct EditPlan {
    /// `[source, target_1, ..., target_T]`.
    pub prompts: Vec<String>,
    pub mode: Mode,
    /// Token row length (the tokenizer's max_len, 77).
    pub keys: usize,
    /// Per target, per target token n: the sparse column n of W (source token w, weight).
    pub mapper: Vec<Vec<Vec<(u32, f32)>>>,
    /// `[T][keys]`.
    pub r: Vec<Vec<f32>>,
    /// `[T][keys]`, the reweight factors (1 elsewhere).
    pub eq: Vec<Vec<f32>>,
    /// `[S + 1][T][keys]`: the cross-attention window table, indexed by UNet evaluation.
    pub alpha: Vec<Vec<Vec<f32>>>,
    /// Self-attention injection on UNet evaluations `[start, end)` (`int(s·S)`, `int(e·S)`).
    pub self_steps: (usize, usize),
    pub blend: Option<BlendPlan>,
}

impl EditPlan {
    /// Resolves `spec` for `steps` = S sampling steps with `tokenizer` (whose `max_len` is the key count). Every
    /// error is one line naming the word or value at fault.
    pub fn new(spec: &EditSpec, tokenizer: &Tokenizer, steps: usize) -> Result<EditPlan> {
        if steps == 0 {
            return Err(Error::input("an edit needs at least 1 sampling step"));
        }
        spec.validate()?;
        let keys = tokenizer.max_len();
        let source = spec.prompt.as_str();

        let mut targets = Vec::new();
        if !spec.swaps.is_empty() {
            targets.push(swap_target(source, &spec.swaps)?);
        }
        targets.extend(spec.targets.iter().cloned());
        if targets.is_empty() {
            if spec.reweights.is_empty() {
                return Err(Error::input("nothing to edit: give --swap, --target or --reweight"));
            }
            targets.push(source.to_string());
        }
        let mode = spec.mode.unwrap_or_else(|| auto_mode(source, &targets));

        let source_words = PromptWords::new(tokenizer, source)?;
        let target_words = targets.iter().map(|t| PromptWords::new(tokenizer, t)).collect::<Result<Vec<_>>>()?;
        let named: Vec<(&str, &PromptWords)> = targets.iter().map(String::as_str).zip(&target_words).collect();
        // A swapped word cut off by the token limit would change nothing the model sees: refuse, as --blend and
        // --cross-steps-word do.
        for (old, new) in &spec.swaps {
            let cut = std::iter::once((old.as_str(), source, &source_words))
                .chain(new.split(' ').map(|w| (w, targets[0].as_str(), &target_words[0])))
                .find(|(w, _, words)| !w.is_empty() && words.cut_off(w));
            if let Some((word, prompt, _)) = cut {
                return Err(Error::input(format!(
                    "--swap {old}={new}: the word {word:?} lies past the {keys}-token limit of {prompt:?}, so the \
                     model never sees it (shorten the prompt)"
                )));
            }
        }

        let (mapper, r) = match mode {
            Mode::Replace => {
                let n = source.split(' ').count();
                let mut mapper = Vec::with_capacity(targets.len());
                for &(text, words) in &named {
                    let m = text.split(' ').count();
                    if m != n {
                        return Err(Error::input(format!(
                            "replace mode needs every target to have the prompt's word count, but the prompt \
                             {source:?} has {n} words and the target {text:?} has {m} (use --mode refine)"
                        )));
                    }
                    mapper.push(replacement_mapper((source, &source_words), (text, words), keys, spec.compat_ptp)?);
                }
                (mapper, vec![vec![0.0; keys]; targets.len()])
            }
            Mode::Refine => {
                let enc = tokenizer.encode(source)?;
                let x = &enc.ids[..enc.length];
                let mut mapper = Vec::with_capacity(targets.len());
                let mut r = Vec::with_capacity(targets.len());
                for text in &targets {
                    let e = tokenizer.encode(text)?;
                    let (m, rr) = refinement_mapper(x, &e.ids[..e.length], keys);
                    mapper.push(m);
                    r.push(rr);
                }
                (mapper, r)
            }
        };

        let mut eq = vec![vec![1.0f32; keys]; targets.len()];
        for (word, c) in &spec.reweights {
            let found: Vec<Vec<usize>> = target_words.iter().map(|w| w.positions(word)).collect();
            if found.iter().all(Vec::is_empty) {
                return Err(absent("--reweight", word, targets.iter().map(String::as_str)));
            }
            for (t, positions) in found.iter().enumerate() {
                for &p in positions {
                    eq[t][p] = *c;
                }
            }
        }

        let alpha = cross_table(steps, keys, &named, spec.cross_steps, &spec.cross_steps_word)?;
        let self_steps = self_window(spec.self_steps, steps);

        let mut prompts = Vec::with_capacity(targets.len() + 1);
        prompts.push(source.to_string());
        prompts.extend(targets);

        let blend = if spec.blend_words.is_empty() {
            None
        } else {
            let all: Vec<&PromptWords> = std::iter::once(&source_words).chain(&target_words).collect();
            let mut positions = vec![Vec::new(); all.len()];
            for word in &spec.blend_words {
                let found: Vec<Vec<usize>> = all.iter().map(|w| w.positions(word)).collect();
                if found.iter().all(Vec::is_empty) {
                    return Err(absent("--blend", word, prompts.iter().map(String::as_str)));
                }
                for (b, p) in found.into_iter().enumerate() {
                    positions[b].extend(p);
                }
            }
            for p in &mut positions {
                p.sort_unstable();
                p.dedup();
            }
            let start_step = (spec.blend_start * steps as f64) as usize;
            Some(BlendPlan { positions, threshold: spec.blend_threshold, start_step })
        };

        Ok(EditPlan { prompts, mode, keys, mapper, r, eq, alpha, self_steps, blend })
    }

    /// The number of sampling steps S the plan was made for (the window table has S+1 rows).
    pub fn steps(&self) -> usize {
        self.alpha.len().saturating_sub(1)
    }

    /// The number of target prompts T.
    pub fn targets(&self) -> usize {
        self.mapper.len()
    }

    /// The window table's row for UNet evaluation `eval`: `min(eval, S)` (PNDM evaluates S+1 times, DDIM S).
    pub fn alpha_row(&self, eval: usize) -> &[Vec<f32>] {
        &self.alpha[eval.min(self.alpha.len().saturating_sub(1))]
    }

    /// Whether the targets take the source's self-attention map at UNet evaluation `eval`.
    pub fn self_active(&self, eval: usize) -> bool {
        (self.self_steps.0..self.self_steps.1).contains(&eval)
    }

    /// The kernel's edit data for UNet evaluation `eval` (rows past the table use its last row).
    pub fn edit_data(&self, eval: usize) -> Result<EditData> {
        let alpha = self.alpha_row(eval).concat();
        EditData::new(self.keys, alpha, self.eq.concat(), self.r.concat(), &self.mapper)
    }
}

/// The swap target: the prompt with every word equal to a swap's OLD replaced by its NEW (all swaps at once, so
/// `a=b` with `b=a` exchanges the two words). OLD must be a word of the prompt, and may be swapped only once.
fn swap_target(prompt: &str, swaps: &[(String, String)]) -> Result<String> {
    let words: Vec<&str> = prompt.split(' ').collect();
    for (k, (old, new)) in swaps.iter().enumerate() {
        if !words.contains(&old.as_str()) {
            let list = words.iter().map(|w| format!("{w:?}")).collect::<Vec<_>>().join(", ");
            return Err(Error::input(format!(
                "--swap {old}={new}: {old:?} is not a word of the prompt {prompt:?} (its words, split on single \
                 spaces: {list})"
            )));
        }
        if swaps[..k].iter().any(|(o, _)| o == old) {
            return Err(Error::input(format!("--swap: the word {old:?} is swapped more than once")));
        }
    }
    let out: Vec<&str> =
        words.iter().map(|w| swaps.iter().find(|(o, _)| o == w).map_or(*w, |(_, n)| n.as_str())).collect();
    Ok(out.join(" "))
}
