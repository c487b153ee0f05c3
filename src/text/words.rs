//! Word → token positions, exactly as google/prompt-to-prompt's `ptp_utils.get_word_inds` (docs/DESIGN.md §5):
//!
//! - the prompt's words are `prompt.split(" ")` (single spaces; runs of spaces give empty words);
//! - the prompt's tokens (untruncated, without BOS/EOS) are walked in order; each is decoded alone
//!   (`tokenizer.decode([id]).strip("#")`) and its length in characters is added to a running length;
//! - a token belongs to the current word; once the running length reaches that word's length, the word pointer
//!   advances and the running length restarts at 0;
//! - a word given as a string selects every word equal to it (exact, case-sensitive comparison), and all their
//!   tokens; positions count BOS as 0.
//!
//! Two things the reference leaves undefined, and what we do:
//! - When the decoded lengths over-count (a multi-token emoji decodes to one U+FFFD per token) the pointer can pass
//!   the last word while tokens remain; the reference then raises `IndexError`. We keep such tokens on the last word.
//! - The reference walks the untruncated prompt, so it can return positions past the 77-token row. We walk the
//!   untruncated prompt too (so the mapping of the kept tokens is the same) but only return positions that exist in
//!   the encoded row (`1..=max_len-2`); a word whose tokens were all cut is an error in [`PromptWords::find`].
use super::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The words of one prompt and the word each of its tokens belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptWords {
    prompt: String,
    words: Vec<String>,
    token_words: Vec<usize>,
    max_len: usize,
}

/// Assigns each token to a word: the core of `get_word_inds`. `word_lens` are the words' lengths in characters,
/// `token_lens` the decoded (and `#`-stripped) tokens' lengths in characters. Returns one word index per token,
/// kept on the last word when the pointer runs past it (see the module notes).
pub fn assign_tokens_to_words(word_lens: &[usize], token_lens: &[usize]) -> Vec<usize> {
    let last = word_lens.len().saturating_sub(1);
    let (mut cur_len, mut ptr) = (0usize, 0usize);
    let mut out = Vec::with_capacity(token_lens.len());
    for &len in token_lens {
        cur_len += len;
        out.push(ptr);
        if cur_len >= word_lens.get(ptr).copied().unwrap_or(0) {
            ptr = (ptr + 1).min(last);
            cur_len = 0;
        }
    }
    out
}

impl PromptWords {
    /// Splits `prompt` into words and maps its tokens to them with `tokenizer`.
    pub fn new(tokenizer: &Tokenizer, prompt: &str) -> Result<Self> {
        let words: Vec<String> = prompt.split(' ').map(str::to_string).collect();
        let ids = tokenizer.tokenize(prompt)?;
        let token_lens: Vec<usize> =
            ids.iter().map(|&id| tokenizer.decode(id).trim_matches('#').chars().count()).collect();
        let word_lens: Vec<usize> = words.iter().map(|w| w.chars().count()).collect();
        let token_words = assign_tokens_to_words(&word_lens, &token_lens);
        Ok(PromptWords { prompt: prompt.to_string(), words, token_words, max_len: tokenizer.max_len() })
    }

    /// The prompt's words, `prompt.split(" ")`.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The word index of each of the prompt's tokens, untruncated, without BOS/EOS (token `i` is at position
    /// `i + 1`).
    pub fn token_words(&self) -> &[usize] {
        &self.token_words
    }

    /// The word index of each of the `max_len` positions of the encoded row; `None` for BOS, EOS and padding.
    pub fn position_words(&self) -> Vec<Option<usize>> {
        let mut out = vec![None; self.max_len];
        for (i, &w) in self.token_words.iter().take(self.max_len - 2).enumerate() {
            out[i + 1] = Some(w);
        }
        out
    }

    /// Positions (BOS = 0) of the tokens of word `index` that are in the encoded row; empty when the index is out
    /// of range or its tokens were cut.
    pub fn positions_of_index(&self, index: usize) -> Vec<usize> {
        self.positions_where(|w| w == index)
    }

    /// Positions (BOS = 0) of the tokens of every word equal to `word`, in the encoded row; empty when there are
    /// none.
    pub fn positions(&self, word: &str) -> Vec<usize> {
        self.positions_where(|w| self.words[w] == word)
    }

    /// Whether `word` has tokens, but all of them lie past the encoded row's cut (the token limit).
    pub fn cut_off(&self, word: &str) -> bool {
        let kept = self.max_len - 2;
        let mut of_word = self.token_words.iter().enumerate().filter(|&(_, &w)| self.words[w] == word);
        let mut any = false;
        let all_cut = of_word.all(|(i, _)| {
            any = true;
            i >= kept
        });
        any && all_cut
    }

    fn positions_where(&self, pick: impl Fn(usize) -> bool) -> Vec<usize> {
        let kept = self.max_len - 2;
        self.token_words.iter().enumerate().filter(|&(i, &w)| i < kept && pick(w)).map(|(i, _)| i + 1).collect()
    }

    /// Like [`positions`](Self::positions), but an error when the word is not in the prompt or none of its tokens
    /// fit in the encoded row.
    pub fn find(&self, word: &str) -> Result<Vec<usize>> {
        if !self.words.iter().any(|w| w == word) {
            let list = self.words.iter().map(|w| format!("{w:?}")).collect::<Vec<_>>().join(", ");
            return Err(Error::input(format!(
                "word {word:?} is not in the prompt {:?} (its words, split on single spaces: {list})",
                self.prompt
            )));
        }
        let found = self.positions(word);
        if found.is_empty() {
            return Err(self.no_tokens(&format!("word {word:?}")));
        }
        Ok(found)
    }

    /// Like [`positions_of_index`](Self::positions_of_index), but an error when the index is out of range or the
    /// word has no token in the encoded row.
    pub fn find_index(&self, index: usize) -> Result<Vec<usize>> {
        if index >= self.words.len() {
            return Err(Error::input(format!(
                "word index {index} is out of range: the prompt {:?} has {} words",
                self.prompt,
                self.words.len()
            )));
        }
        let found = self.positions_of_index(index);
        if found.is_empty() {
            return Err(self.no_tokens(&format!("word {index} ({:?})", self.words[index])));
        }
        Ok(found)
    }

    fn no_tokens(&self, what: &str) -> Error {
        let cut = self.token_words.len() > self.max_len - 2;
        Error::input(if cut {
            format!("{what} of the prompt {:?} has no token within the {}-token limit", self.prompt, self.max_len)
        } else {
            format!("{what} of the prompt {:?} has no token of its own", self.prompt)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip() -> Tokenizer {
        Tokenizer::embedded_clip().unwrap()
    }

    #[test]
    fn one_token_words() {
        let t = clip();
        let w = PromptWords::new(&t, "a photo of a cat").unwrap();
        assert_eq!(w.token_words(), &[0, 1, 2, 3, 4]);
        assert_eq!(w.find("cat").unwrap(), vec![5]);
        assert_eq!(w.find_index(1).unwrap(), vec![2]);
        let pw = w.position_words();
        assert_eq!(pw.len(), 77);
        assert_eq!(&pw[..7], &[None, Some(0), Some(1), Some(2), Some(3), Some(4), None]);
    }

    #[test]
    fn multi_token_word() {
        let t = clip();
        // hippopotamus is hippo + potam + us.
        let w = PromptWords::new(&t, "a hippopotamus in a river").unwrap();
        assert_eq!(w.find("hippopotamus").unwrap(), vec![2, 3, 4]);
        assert_eq!(w.find("in").unwrap(), vec![5]);
        assert_eq!(w.find("river").unwrap(), vec![7]);
    }

    #[test]
    fn repeated_word_selects_every_occurrence() {
        let t = clip();
        let w = PromptWords::new(&t, "a cat and a dog").unwrap();
        assert_eq!(w.find("a").unwrap(), vec![1, 4]);
        assert_eq!(w.find_index(3).unwrap(), vec![4]);
    }

    #[test]
    fn punctuation_attached_to_words() {
        let t = clip();
        // "cat," is one word of two tokens, "dog." too; "cat" alone is not a word of this prompt.
        let w = PromptWords::new(&t, "a cat, a dog.").unwrap();
        assert_eq!(w.find("cat,").unwrap(), vec![2, 3]);
        assert_eq!(w.find("dog.").unwrap(), vec![5, 6]);
        assert!(w.find("cat").is_err());
    }

    #[test]
    fn missing_word_is_an_error_naming_it() {
        let t = clip();
        let w = PromptWords::new(&t, "a photo of a cat").unwrap();
        let e = w.find("bicycle").unwrap_err().to_string();
        assert!(e.contains("\"bicycle\""), "{e}");
        assert!(!e.contains('\n'));
        assert!(w.find_index(5).unwrap_err().to_string().contains("out of range"));
        assert!(w.positions("bicycle").is_empty());
    }

    #[test]
    fn case_sensitive_like_the_reference() {
        let t = clip();
        let w = PromptWords::new(&t, "A Cat").unwrap();
        assert_eq!(w.find("Cat").unwrap(), vec![2]);
        assert!(w.find("cat").is_err());
    }

    #[test]
    fn double_space_gives_an_empty_word() {
        let t = clip();
        // words: "a", "", "cat": the empty word swallows "cat"'s token, as in the reference.
        let w = PromptWords::new(&t, "a  cat").unwrap();
        assert_eq!(w.words(), &["a", "", "cat"]);
        assert_eq!(w.token_words(), &[0, 1]);
        assert!(w.find("cat").unwrap_err().to_string().contains("no token of its own"));
    }

    #[test]
    fn pointer_stays_on_the_last_word() {
        // Two tokens of a 1-character word, then one more: the reference raises IndexError, we keep the last word.
        assert_eq!(assign_tokens_to_words(&[1, 1], &[1, 1, 1]), vec![0, 1, 1]);
        assert_eq!(assign_tokens_to_words(&[3], &[]), Vec::<usize>::new());
        assert_eq!(assign_tokens_to_words(&[5, 2], &[2, 3, 2]), vec![0, 0, 1]);
    }

    #[test]
    fn words_past_the_limit() {
        let t = clip();
        let mut words: Vec<&str> = vec!["cat"; 80];
        words[79] = "zebra";
        let prompt = words.join(" ");
        let w = PromptWords::new(&t, &prompt).unwrap();
        assert_eq!(w.token_words().len(), 80);
        assert!(w.positions("zebra").is_empty());
        assert!(w.find("zebra").unwrap_err().to_string().contains("77-token limit"));
        assert_eq!(w.positions("cat"), (1..=75).collect::<Vec<_>>());
    }
}
