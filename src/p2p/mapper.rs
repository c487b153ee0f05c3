//! Word swap: the replacement mapper, exactly as google/prompt-to-prompt's `seq_aligner.get_replacement_mapper_`
//! (docs/DESIGN.md §5).
//!
//! The two prompts have the same word count. The words that differ are the replaced words; for each, the token
//! positions in the source (`inds_source`) and in the target (`inds_target`) come from the word walk
//! (`get_word_inds` by word index). Then, with `i` the source and `j` the target position, both from 0, while both
//! are below `keys`:
//! - at the next replaced word's first source position (`inds_source[k][0] == i`): equal token counts map 1:1,
//!   different counts give every target token of the word weight `1/len(target tokens)` from each source token of
//!   the word; `i` and `j` then skip the word's tokens;
//! - before the last replaced word is done: `W[i, j] = 1`, one step each;
//! - after it: `W[i, j] = 1` (corrected), or `W[j, j] = 1` as the reference does (`compat`), which misaligns the
//!   rest of the prompt after a token-count change.
//!
//! Entries are assignments into a dense `keys × keys` matrix, as in the reference, so a later write wins.
//! Where the reference would fail, we either return an error (a replaced word without a token of its own: the
//! reference raises `IndexError` or divides by zero) or skip the write (an index at or past `keys`, which the
//! reference only reaches with prompts longer than the token row, and raises `IndexError` for).
use crate::text::PromptWords;
use crate::{Error, Result};

/// Token positions (BOS = 0) of word `index`, from the untruncated word walk, as `get_word_inds(text, index)`.
fn word_positions(words: &PromptWords, index: usize) -> Vec<usize> {
    words.token_words().iter().enumerate().filter(|&(_, &w)| w == index).map(|(i, _)| i + 1).collect()
}

/// The replacement mapper of one target: per target position n < `keys`, the sparse column n of W (source position,
/// weight), in increasing source order. `source` / `target` are the prompts' texts and word walks.
pub fn replacement_mapper(
    source: (&str, &PromptWords),
    target: (&str, &PromptWords),
    keys: usize,
    compat: bool,
) -> Result<Vec<Vec<(u32, f32)>>> {
    let (xs, x) = source;
    let (ys, y) = target;
    let (wx, wy) = (x.words(), y.words());
    if wx.len() != wy.len() {
        return Err(Error::input(format!(
            "a word swap (replace mode) needs prompts with the same word count, but {xs:?} has {} words and {ys:?} \
             has {} (use refine mode)",
            wx.len(),
            wy.len()
        )));
    }
    let replaced: Vec<usize> = (0..wy.len()).filter(|&k| wx[k] != wy[k]).collect();
    let mut inds = Vec::with_capacity(replaced.len());
    for &k in &replaced {
        let (s, t) = (word_positions(x, k), word_positions(y, k));
        for (pos, text, word) in [(&s, xs, &wx[k]), (&t, ys, &wy[k])] {
            if pos.is_empty() {
                return Err(Error::input(format!(
                    "the swapped word {k} ({word:?}) of the prompt {text:?} has no token of its own (a double space \
                     gives an empty word that takes the next word's tokens)"
                )));
            }
        }
        inds.push((s, t));
    }

    let mut m = vec![0f32; keys * keys];
    let mut set = |w: usize, n: usize, v: f32| {
        if w < keys && n < keys {
            m[w * keys + n] = v;
        }
    };
    let (mut i, mut j, mut cur) = (0usize, 0usize, 0usize);
    while i < keys && j < keys {
        if cur < inds.len() && inds[cur].0[0] == i {
            let (s, t) = &inds[cur];
            if s.len() == t.len() {
                for (&a, &b) in s.iter().zip(t) {
                    set(a, b, 1.0);
                }
            } else {
                let ratio = (1.0f64 / t.len() as f64) as f32;
                for &b in t {
                    for &a in s {
                        set(a, b, ratio);
                    }
                }
            }
            cur += 1;
            i += s.len();
            j += t.len();
        } else if cur < inds.len() || !compat {
            set(i, j, 1.0);
            i += 1;
            j += 1;
        } else {
            set(j, j, 1.0);
            i += 1;
            j += 1;
        }
    }

    Ok((0..keys)
        .map(|n| (0..keys).filter(|&w| m[w * keys + n] != 0.0).map(|w| (w as u32, m[w * keys + n])).collect())
        .collect())
}

/// The identity mapper (W = I): a target that is the source prompt itself (reweight only).
pub fn identity_mapper(keys: usize) -> Vec<Vec<(u32, f32)>> {
    (0..keys).map(|n| vec![(n as u32, 1.0)]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Tokenizer;

    fn mapper(x: &str, y: &str, compat: bool) -> Vec<Vec<(u32, f32)>> {
        let t = Tokenizer::embedded_clip().unwrap();
        let (px, py) = (PromptWords::new(&t, x).unwrap(), PromptWords::new(&t, y).unwrap());
        replacement_mapper((x, &px), (y, &py), 77, compat).unwrap()
    }

    #[test]
    fn same_prompt_is_identity() {
        assert_eq!(mapper("a cat", "a cat", false), identity_mapper(77));
        assert_eq!(mapper("a cat", "a cat", true), identity_mapper(77));
    }

    #[test]
    fn one_token_swap_is_identity_too() {
        assert_eq!(mapper("a photo of a cat", "a photo of a dog", false), identity_mapper(77));
    }

    #[test]
    fn many_to_one() {
        // "a hippopotamus" (hippo potam us: positions 2, 3, 4) → "a dog" (position 2): W[2..=4, 2] = 1, then the
        // rest shifts by 2 (corrected).
        let m = mapper("a hippopotamus on grass", "a dog on grass", false);
        assert_eq!(m[0], vec![(0, 1.0)]);
        assert_eq!(m[1], vec![(1, 1.0)]);
        assert_eq!(m[2], vec![(2, 1.0), (3, 1.0), (4, 1.0)]);
        assert_eq!(m[3], vec![(5, 1.0)]);
        assert_eq!(m[4], vec![(6, 1.0)]);
        assert_eq!(m[74], vec![(76, 1.0)]);
        assert!(m[75].is_empty() && m[76].is_empty());
    }

    #[test]
    fn empty_word_is_an_error() {
        let t = Tokenizer::embedded_clip().unwrap();
        let (x, y) = ("a  cat", "a  dog");
        let (px, py) = (PromptWords::new(&t, x).unwrap(), PromptWords::new(&t, y).unwrap());
        let e = replacement_mapper((x, &px), (y, &py), 77, false).unwrap_err().to_string();
        assert!(e.contains("\"cat\"") && e.contains("no token of its own"), "{e}");
    }
}
