//! The text side: the CLIP tokenizer ([`Tokenizer`]), the word ↔ token mapping of Prompt-to-Prompt
//! ([`PromptWords`]) and the report behind `p2p-wgpu tokens` ([`TokenReport`]).
mod tokenizer;
mod words;

pub use tokenizer::{Encoded, SpecialTokens, Tokenizer};
pub use words::{PromptWords, assign_tokens_to_words};

use crate::Result;

/// One prompt's encoded row with what each position holds: the data of `p2p-wgpu tokens`.
#[derive(Clone, Debug)]
pub struct TokenReport {
    /// The encoded row (`max_len` ids and vocabulary strings, its length, the cut text).
    pub encoded: Encoded,
    /// The decoded text of each position, as the word mapping measures it (before stripping `#`).
    pub text: Vec<String>,
    /// The word index of each position, `None` for BOS, EOS and padding.
    pub words: Vec<Option<usize>>,
    /// The prompt's words (`prompt.split(" ")`), which `words` indexes.
    pub prompt_words: Vec<String>,
}

impl TokenReport {
    pub fn new(tokenizer: &Tokenizer, prompt: &str) -> Result<Self> {
        let encoded = tokenizer.encode(prompt)?;
        let words = PromptWords::new(tokenizer, prompt)?;
        let text = encoded.ids.iter().map(|&id| tokenizer.decode(id)).collect();
        Ok(TokenReport { text, words: words.position_words(), prompt_words: words.words().to_vec(), encoded })
    }

    /// A table of the real positions (BOS through EOS): position, id, vocabulary string, decoded text, word index
    /// and word; then one line for the padding.
    pub fn table(&self) -> String {
        let e = &self.encoded;
        let mut rows: Vec<[String; 5]> = vec![["pos", "id", "token", "text", "word"].map(String::from)];
        for i in 0..e.length {
            let word = match self.words[i] {
                Some(w) => format!("{w} {:?}", self.prompt_words[w]),
                None => "-".to_string(),
            };
            rows.push([
                i.to_string(),
                e.ids[i].to_string(),
                format!("{:?}", e.tokens[i]),
                format!("{:?}", self.text[i]),
                word,
            ]);
        }
        let width: Vec<usize> = (0..5).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for r in &rows {
            let fill = |c: usize| " ".repeat(width[c] - r[c].chars().count());
            // Numbers right-aligned, text left-aligned; the last column is not padded.
            out.push_str(&format!(
                "{}{}  {}{}  {}{}  {}{}  {}\n",
                fill(0),
                r[0],
                fill(1),
                r[1],
                r[2],
                fill(2),
                r[3],
                fill(3),
                r[4]
            ));
        }
        if e.length < e.ids.len() {
            out.push_str(&format!(
                "{}..{}: padding, {} x id {} {:?}\n",
                e.length,
                e.ids.len() - 1,
                e.ids.len() - e.length,
                e.ids[e.length],
                e.tokens[e.length]
            ));
        }
        out
    }

    /// The JSON form, one object on one line:
    /// `{"ids": [max_len ids], "tokens": [vocabulary string per position], "text": [decoded text per position],
    /// "words": [word index per position, null for BOS/EOS/pad], "prompt_words": [the prompt split on single
    /// spaces], "length": positions BOS..=EOS, "truncated": the cut end of the prompt or null}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "ids": self.encoded.ids,
            "tokens": self.encoded.tokens,
            "text": self.text,
            "words": self.words,
            "prompt_words": self.prompt_words,
            "length": self.encoded.length,
            "truncated": self.encoded.truncated,
        })
        .to_string()
    }
}
