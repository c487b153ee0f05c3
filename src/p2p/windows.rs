//! The step windows: the cross-attention table (`ptp_utils.get_time_words_attention_alpha`) and the
//! self-attention window (`AttentionControlEdit.num_self_replace`), docs/DESIGN.md §5.
use super::plan::Window;
use crate::text::PromptWords;
use crate::{Error, Result};

/// Sets rows `[int(s·R), int(e·R))` of `columns` of target `t` to 1 and its other rows to 0 (`update_alpha_time_word`,
/// R = the table's row count).
fn update(table: &mut [Vec<Vec<f32>>], window: Window, t: usize, columns: &[usize]) {
    let (start, end) = window.rows(table.len());
    for (row, r) in table.iter_mut().enumerate() {
        let v = if (start..end).contains(&row) { 1.0 } else { 0.0 };
        for &n in columns {
            r[t][n] = v;
        }
    }
}

/// The cross-attention window table `[steps + 1][T][keys]`: the default window on every column of every target,
/// then each per-word window on that word's token columns in each target that has the word (later entries win).
/// A per-word window whose word is in no target is an error naming it.
pub fn cross_table(
    steps: usize,
    keys: usize,
    targets: &[(&str, &PromptWords)],
    default: Window,
    per_word: &[(String, Window)],
) -> Result<Vec<Vec<Vec<f32>>>> {
    let mut table = vec![vec![vec![0f32; keys]; targets.len()]; steps + 1];
    let all: Vec<usize> = (0..keys).collect();
    for t in 0..targets.len() {
        update(&mut table, default, t, &all);
    }
    for (word, window) in per_word {
        let found: Vec<Vec<usize>> = targets.iter().map(|(_, w)| w.positions(word)).collect();
        if found.iter().all(Vec::is_empty) {
            return Err(absent("--cross-steps-word", word, targets.iter().map(|t| t.0)));
        }
        for (t, cols) in found.iter().enumerate() {
            update(&mut table, *window, t, cols);
        }
    }
    Ok(table)
}

/// The self-attention window `(int(s·S), int(e·S))` in UNet evaluations.
pub fn self_window(window: Window, steps: usize) -> (usize, usize) {
    window.rows(steps)
}

/// "OPTION: the word W is in none of the prompts P1, P2" (a word whose tokens were all cut off the token row
/// counts as absent).
pub(crate) fn absent<'a>(option: &str, word: &str, prompts: impl IntoIterator<Item = &'a str>) -> Error {
    let list = prompts.into_iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ");
    Error::input(format!(
        "{option}: the word {word:?} is in none of the prompts it applies to: {list} (words are split on single \
         spaces and compared exactly; a word cut off by the token limit does not count)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Tokenizer;

    #[test]
    fn default_table() {
        let t = Tokenizer::embedded_clip().unwrap();
        let w = PromptWords::new(&t, "a dog").unwrap();
        let tab = cross_table(50, 77, &[("a dog", &w)], Window { start: 0.0, end: 0.8 }, &[]).unwrap();
        assert_eq!(tab.len(), 51);
        for (row, r) in tab.iter().enumerate() {
            let v = if row < 40 { 1.0 } else { 0.0 };
            assert!(r[0].iter().all(|&a| a == v), "row {row}");
        }
    }

    #[test]
    fn self_windows() {
        assert_eq!(self_window(Window { start: 0.0, end: 0.4 }, 50), (0, 20));
        assert_eq!(self_window(Window { start: 0.2, end: 0.6 }, 50), (10, 30));
        assert_eq!(self_window(Window { start: 0.0, end: 0.4 }, 4), (0, 1));
    }
}
