//! The CLIP BPE tokenizer, through the `tokenizers` crate.
//!
//! A tokenizer folder holds either a `tokenizer.json` (what current transformers writes) or `vocab.json` +
//! `merges.txt` (folders written by transformers 4.x). For the latter we build CLIP's pipeline in code, the same one
//! transformers 5 builds: normalizer NFC → `\s+` to one space → lowercase; pre-tokenizer CLIP's split pattern →
//! ByteLevel; BPE with the `</w>` end-of-word suffix; BOS/EOS post-processing. The special tokens (BOS, EOS, pad,
//! unk) come from `special_tokens_map.json` / `tokenizer_config.json` when present and are registered as special
//! added tokens, as transformers does; this matters for SD 2.x, whose pad token `!` is then split out of prompts.
//!
//! Encoding pads and truncates by hand to `max_len`, the text encoder's `max_position_embeddings` (77), never
//! `model_max_length`: `[BOS, first max_len-2 tokens, EOS, pad...]`, exactly what transformers gives with
//! `padding="max_length", max_length=77, truncation=True`.
use std::path::Path;

use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::weights::folder;
use crate::{Error, Result};

/// CLIP's pre-tokenizer pattern (`CLIPTokenizer.pat` in transformers, without its case-insensitive flag: the
/// normalizer lowercases first).
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// CLIP's end-of-word suffix on BPE symbols.
const END_OF_WORD: &str = "</w>";

const EMBEDDED_VOCAB: &[u8] = include_bytes!("../../assets/clip-tokenizer/vocab.json");
const EMBEDDED_MERGES: &[u8] = include_bytes!("../../assets/clip-tokenizer/merges.txt");

/// The special tokens of a CLIP tokenizer. Defaults are SD 1.x's: BOS `<|startoftext|>`, EOS, pad and unk
/// `<|endoftext|>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: String,
    pub eos: String,
    pub pad: String,
    pub unk: String,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        SpecialTokens {
            bos: "<|startoftext|>".into(),
            eos: "<|endoftext|>".into(),
            pad: "<|endoftext|>".into(),
            unk: "<|endoftext|>".into(),
        }
    }
}

impl SpecialTokens {
    /// Reads `bos_token`, `eos_token`, `pad_token` and `unk_token` from `special_tokens_map.json` and
    /// `tokenizer_config.json` in `dir` (the former wins where both name one); missing files or keys keep the
    /// defaults. A value is a string or an object with a `content` string (transformers 4.x `AddedToken`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut out = SpecialTokens::default();
        for file in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let json = read_json(&path)?;
            for (key, slot) in [
                ("bos_token", &mut out.bos),
                ("eos_token", &mut out.eos),
                ("pad_token", &mut out.pad),
                ("unk_token", &mut out.unk),
            ] {
                match json.get(key) {
                    None | Some(serde_json::Value::Null) => {}
                    Some(serde_json::Value::String(s)) => *slot = s.clone(),
                    Some(v) => match v.get("content").and_then(|c| c.as_str()) {
                        Some(s) => *slot = s.to_string(),
                        None => {
                            return Err(Error::model(format!(
                                "{}: `{key}` is neither a string nor an object with a `content` string",
                                path.display()
                            )));
                        }
                    },
                }
            }
        }
        Ok(out)
    }
}

/// A prompt encoded to a fixed-length row of token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Exactly `max_len` ids: BOS, the prompt's tokens (at most `max_len - 2`), EOS, then the pad id.
    pub ids: Vec<u32>,
    /// The vocabulary string of each of the `max_len` ids (`photo</w>`, byte-level symbols for non-ASCII bytes,
    /// `<|startoftext|>`...).
    pub tokens: Vec<String>,
    /// Number of real positions, BOS and EOS included (the index of EOS is `length - 1`).
    pub length: usize,
    /// The end of the prompt that did not fit, as typed (from the first cut token on), for a warning.
    pub truncated: Option<String>,
}

/// A CLIP tokenizer with a fixed output length.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    max_len: usize,
    special: SpecialTokens,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    origin: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("origin", &self.origin)
            .field("max_len", &self.max_len)
            .field("special", &self.special)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads a tokenizer folder (a diffusers model's `tokenizer/`): `tokenizer.json` when present, else
    /// `vocab.json` + `merges.txt`. `max_len` is the text encoder's `max_position_embeddings`.
    pub fn from_dir(dir: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::model(format!("tokenizer folder {} does not exist", dir.display())));
        }
        let special = SpecialTokens::from_dir(dir)?;
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let bytes = read_file(&json)?;
            return Self::from_tokenizer_json(&bytes, special, max_len, &json.display().to_string());
        }
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        if !vocab.is_file() || !merges.is_file() {
            return Err(Error::model(format!(
                "tokenizer folder {} has neither tokenizer.json nor vocab.json + merges.txt",
                dir.display()
            )));
        }
        let vocab_bytes = read_file(&vocab)?;
        let merges_bytes = read_file(&merges)?;
        Self::build(
            parse_vocab(&vocab_bytes, &vocab.display().to_string())?,
            parse_merges(&merges_bytes, &merges.display().to_string())?,
            special,
            max_len,
            &dir.display().to_string(),
        )
    }

    /// Loads the tokenizer of a diffusers model folder: `dir/tokenizer/`, with `max_len` read from
    /// `dir/text_encoder/config.json` (`max_position_embeddings`).
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.is_file() {
            return Err(Error::model(format!("{} is a file, not a model folder", dir.display())));
        }
        if !dir.is_dir() {
            return Err(Error::model(format!("model folder {} does not exist", dir.display())));
        }
        let config = dir.join(folder::TEXT_ENCODER).join(folder::CONFIG);
        let json = read_json(&config)?;
        let max_len = json
            .get("max_position_embeddings")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| Error::model(format!("{}: no integer `max_position_embeddings`", config.display())))?;
        let max = crate::weights::config::limit("max_position_embeddings");
        if max_len < 2 || max_len > max as u64 {
            return Err(Error::model(format!(
                "{}: `max_position_embeddings` is {max_len}, outside the engine's range 2..={max}",
                config.display()
            )));
        }
        Self::from_dir(dir.join(folder::TOKENIZER), max_len as usize)
    }

    /// The CLIP ViT-L/14 tokenizer (SD 1.x) embedded in the binary, with max length 77. It is built from
    /// `vocab.json` + `merges.txt` like a transformers 4.x folder.
    pub fn embedded_clip() -> Result<Self> {
        let origin = "embedded CLIP tokenizer";
        Self::build(
            parse_vocab(EMBEDDED_VOCAB, origin)?,
            parse_merges(EMBEDDED_MERGES, origin)?,
            SpecialTokens::default(),
            77,
            origin,
        )
    }

    /// Loads a `tokenizer.json`. `origin` names it in errors.
    pub fn from_tokenizer_json(bytes: &[u8], special: SpecialTokens, max_len: usize, origin: &str) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::model(format!("{origin}: not a valid tokenizer.json: {}", one_line(&e.to_string()))))?;
        Self::finish(inner, special, max_len, origin)
    }

    /// Builds CLIP's pipeline in code from a `vocab.json` and a `merges.txt`. `origin` names them in errors.
    pub fn from_vocab_merges(
        vocab_json: &[u8],
        merges_txt: &[u8],
        special: SpecialTokens,
        max_len: usize,
        origin: &str,
    ) -> Result<Self> {
        Self::build(parse_vocab(vocab_json, origin)?, parse_merges(merges_txt, origin)?, special, max_len, origin)
    }

    fn build(vocab: Vocab, merges: Merges, special: SpecialTokens, max_len: usize, origin: &str) -> Result<Self> {
        let err = |what: &str, e: tokenizers::Error| {
            Error::model(format!("{origin}: cannot build the CLIP {what}: {}", one_line(&e.to_string())))
        };
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(special.unk.clone())
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix(END_OF_WORD.into())
            .fuse_unk(false)
            .build()
            .map_err(|e| err("BPE model", e))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let collapse = Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(|e| err("normalizer", e))?;
        inner.with_normalizer(Some(NormSequence::new(vec![NFC.into(), collapse.into(), Lowercase.into()])));
        let split = Split::new(SplitPattern::Regex(CLIP_SPLIT_PATTERN.into()), SplitDelimiterBehavior::Removed, true)
            .map_err(|e| err("pre-tokenizer", e))?;
        inner.with_pre_tokenizer(Some(PreSequence::new(vec![split.into(), ByteLevel::new(false, true, true).into()])));
        inner.with_decoder(Some(ByteLevel::default()));
        Self::finish(inner, special, max_len, origin)
    }

    /// Registers the special tokens, sets the BOS/EOS post-processor, turns off any padding or truncation from the
    /// file (we do both by hand) and resolves the special ids.
    fn finish(mut inner: tokenizers::Tokenizer, special: SpecialTokens, max_len: usize, origin: &str) -> Result<Self> {
        if max_len < 2 {
            return Err(Error::model(format!("{origin}: max length {max_len} leaves no room for BOS and EOS")));
        }
        let mut names: Vec<&str> = Vec::new();
        for t in [&special.bos, &special.eos, &special.pad, &special.unk] {
            if !names.contains(&t.as_str()) {
                names.push(t);
            }
        }
        let added: Vec<AddedToken> = names.iter().map(|t| AddedToken::from(*t, true)).collect();
        inner.add_special_tokens(&added);
        let id = |name: &str, what: &str| {
            inner
                .token_to_id(name)
                .ok_or_else(|| Error::model(format!("{origin}: {what} token `{name}` is not in the vocabulary")))
        };
        let bos_id = id(&special.bos, "BOS")?;
        let eos_id = id(&special.eos, "EOS")?;
        let pad_id = id(&special.pad, "pad")?;
        inner.with_post_processor(Some(
            RobertaProcessing::new((special.eos.clone(), eos_id), (special.bos.clone(), bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::model(format!("{origin}: cannot turn off truncation: {}", one_line(&e.to_string()))))?;
        Ok(Tokenizer { inner, max_len, special, bos_id, eos_id, pad_id, origin: origin.to_string() })
    }

    /// The fixed output length (BOS and EOS included).
    pub fn max_len(&self) -> usize {
        self.max_len
    }
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }
    /// Where the tokenizer came from (a path, or "embedded CLIP tokenizer").
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The prompt's tokens, untruncated and without BOS/EOS, with the byte offsets in `prompt` where each starts.
    fn tokenize_with_offsets(&self, prompt: &str) -> Result<(Vec<u32>, Vec<usize>)> {
        let enc = self.inner.encode(prompt, false).map_err(|e| {
            Error::model(format!("{}: cannot tokenize the prompt: {}", self.origin, one_line(&e.to_string())))
        })?;
        let starts = enc.get_offsets().iter().map(|o| o.0).collect();
        Ok((enc.get_ids().to_vec(), starts))
    }

    /// The prompt's tokens, untruncated and without BOS/EOS (transformers' `encode(prompt)[1:-1]`).
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(self.tokenize_with_offsets(prompt)?.0)
    }

    /// Encodes a prompt to exactly `max_len` ids: BOS, the first `max_len - 2` tokens, EOS, pad.
    pub fn encode(&self, prompt: &str) -> Result<Encoded> {
        let (ids, starts) = self.tokenize_with_offsets(prompt)?;
        let keep = self.max_len - 2;
        let truncated = if ids.len() > keep {
            let cut = prompt.get(starts[keep]..).map(|s| s.trim().to_string());
            Some(cut.unwrap_or_else(|| ids[keep..].iter().map(|&i| self.decode(i)).collect::<Vec<_>>().join(" ")))
        } else {
            None
        };
        let mut row = Vec::with_capacity(self.max_len);
        row.push(self.bos_id);
        row.extend_from_slice(&ids[..ids.len().min(keep)]);
        row.push(self.eos_id);
        let length = row.len();
        row.resize(self.max_len, self.pad_id);
        let tokens = row.iter().map(|&i| self.token(i).unwrap_or_default()).collect();
        Ok(Encoded { ids: row, tokens, length, truncated })
    }

    /// The vocabulary string of an id (`photo</w>`), or `None` for an id outside the vocabulary.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The text of a single token, as transformers' `tokenizer.decode([id])` gives it: byte-level symbols back to
    /// bytes (invalid UTF-8, e.g. part of an emoji, becomes U+FFFD), `</w>` to a space, then stripped of
    /// whitespace as Python's `str.strip()` does. An id outside the vocabulary decodes to an empty string.
    pub fn decode(&self, id: u32) -> String {
        let Some(token) = self.inner.id_to_token(id) else {
            return String::new();
        };
        let mut bytes = Vec::with_capacity(token.len());
        let mut buf = [0u8; 4];
        for c in token.chars() {
            match byte_of_symbol(c) {
                Some(b) => bytes.push(b),
                None => bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            }
        }
        let text = String::from_utf8_lossy(&bytes).replace(END_OF_WORD, " ");
        py_strip(&text).to_string()
    }
}

/// GPT-2's byte-level alphabet, inverted: the byte a symbol stands for. Printable bytes (`!`..`~`, `¡`..`¬`,
/// `®`..`ÿ`) stand for themselves; the other 68 bytes are U+0100.. in byte order.
fn byte_of_symbol(c: char) -> Option<u8> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let code = c as u32;
    if code < 256 {
        return printable(code).then_some(code as u8);
    }
    let mut n = 256;
    for b in 0..256u32 {
        if !printable(b) {
            if n == code {
                return Some(b as u8);
            }
            n += 1;
        }
    }
    None
}

/// Python's `str.strip()` with no argument: strips what `str.isspace()` calls whitespace, which is Rust's
/// `char::is_whitespace` plus U+001C..U+001F.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::model(format!("cannot read {}: {e}", path.display())))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::model(format!("{}: invalid JSON: {e}", path.display())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_vocab(bytes: &[u8], origin: &str) -> Result<Vocab> {
    let map: std::collections::HashMap<String, u32> = serde_json::from_slice(bytes)
        .map_err(|e| Error::model(format!("{origin}: vocab.json is not a JSON object of token → id: {e}")))?;
    Ok(map.into_iter().collect())
}

/// `merges.txt`: `#version` header lines, then one `left right` pair per line (blank lines ignored).
fn parse_merges(bytes: &[u8], origin: &str) -> Result<Merges> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| Error::model(format!("{origin}: merges.txt is not UTF-8: {e}")))?;
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => merges.push((a.to_string(), b.to_string())),
            _ => {
                return Err(Error::model(format!("{origin}: merges.txt line {} is not a `left right` pair", n + 1)));
            }
        }
    }
    Ok(merges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let mut seen = [false; 256];
        for code in 0..1024u32 {
            if let Some(b) = char::from_u32(code).and_then(byte_of_symbol) {
                assert!(!seen[b as usize], "byte {b} twice");
                seen[b as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(byte_of_symbol('Ġ'), Some(b' '));
        assert_eq!(byte_of_symbol('a'), Some(b'a'));
    }

    #[test]
    fn embedded_readme_check() {
        let t = Tokenizer::embedded_clip().unwrap();
        let e = t.encode("a photo of a cat").unwrap();
        assert_eq!(&e.ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
        assert!(e.ids[7..].iter().all(|&i| i == 49407));
        assert_eq!(e.ids.len(), 77);
        assert_eq!(e.length, 7);
        assert_eq!(e.tokens[2], "photo</w>");
        assert_eq!(e.truncated, None);
        assert_eq!(t.decode(1125), "photo");
        assert_eq!(t.decode(49406), "<|startoftext|>");
    }

    #[test]
    fn truncation_keeps_bos_first_tokens_eos() {
        let t = Tokenizer::embedded_clip().unwrap();
        let prompt = (0..80).map(|i| if i == 76 { "zebra" } else { "cat" }).collect::<Vec<_>>().join(" ");
        let e = t.encode(&prompt).unwrap();
        assert_eq!(e.ids.len(), 77);
        assert_eq!(e.length, 77);
        assert_eq!(e.ids[0], 49406);
        assert_eq!(e.ids[76], 49407);
        assert!(e.ids[1..76].iter().all(|&i| i == 2368));
        assert_eq!(e.truncated.as_deref(), Some("cat zebra cat cat cat"));
    }

    #[test]
    fn merges_errors_name_the_line() {
        let e = parse_merges(b"#version: 0.2\na b\nc\n", "m").unwrap_err().to_string();
        assert_eq!(e, "m: merges.txt line 3 is not a `left right` pair");
        assert_eq!(parse_merges(b"#version: 0.2\na b\n\n", "m").unwrap(), vec![("a".into(), "b".into())]);
    }

    #[test]
    fn python_strip() {
        assert_eq!(py_strip("\u{1f} x \u{a0}"), "x");
        assert_eq!(py_strip("</w>".replace("</w>", " ").as_str()), "");
    }
}
