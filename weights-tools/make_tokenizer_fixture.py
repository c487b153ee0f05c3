#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/corpus.json: the CLIP tokenizer parity fixture for tests/tokenizer.rs.

This script is ours (p2p-wgpu), run in the pinned environment of weights-tools/requirements.txt
(transformers 5.23.0, tokenizers 0.23.3):

    weights-tools/.venv/bin/python weights-tools/make_tokenizer_fixture.py

For each prompt of a corpus (punctuation, numbers, contractions, accents, CJK, emoji, whitespace runs, upper case,
over-long prompts, the empty string...) it records:

- "ids": the 77 input ids from transformers' CLIPTokenizer with padding="max_length", max_length=77,
  truncation=True, for a folder with only vocab.json + merges.txt; the same tokenizer loaded from tokenizer.json
  must give the same ids (asserted here);
- "tokens": the untruncated token ids without BOS/EOS (`tokenizer.encode(prompt)[1:-1]`);
- "decoded": `tokenizer.decode([id])` of each of those tokens;
- "words": `prompt.split(" ")`;
- "word_positions": for each word index, its token positions (BOS = 0) over the untruncated prompt, from OUR PORT
  of google/prompt-to-prompt's `ptp_utils.get_word_inds` below (written from the reference's description and
  code, not copied);
- "by_word": the same for each distinct word given as a string;
- "reference_raises": true where the reference code raises IndexError (its word pointer runs past the last word);
  the positions recorded there are our defined behaviour: the pointer stays on the last word.

"sd2" holds ids for a few prompts with an SD 2.x tokenizer config (pad token "!", which transformers registers as a
special token, so "!" is split out of prompts), from both vocab.json + merges.txt and tokenizer.json folders.

Inputs: the CLIP tokenizer files of the crate (assets/clip-tokenizer/{vocab,merges}, and
tests/fixtures/tokenizer/tokenizer.json).
"""

import json
import os
import shutil
import sys
import tempfile

import tokenizers
import transformers
from transformers import CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets", "clip-tokenizer")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
MAX_LEN = 77

LONG_CATS = " ".join(["a cat"] * 40)  # 80 tokens
LONG_BORDER = " ".join(["cat"] * 73) + " hippopotamus river"  # hippopotamus straddles the 75-token limit
CORPUS = [
    "a photo of a cat",
    "A Photo Of A CAT",
    "a cat, a dog; and a bird!",
    "wow!!! really?! yes... (maybe) [no] {ok} <tag>",
    "don't stop, it's fine, we're here, they've gone, i'm ok, you'll see, he'd go",
    "DON'T IT'S WE'RE",
    "rock'n'roll isn't o'clock",
    "café naïve résumé façade",
    "cafe\u0301 nai\u0308ve",
    "東京の夜景 and 北京",
    "한국어 텍스트",
    "Ελληνικά και Русский текст",
    "arabic عربي and hebrew עברית",
    "हिन्दी text",
    "😀 🦩 hippopotamus",
    "🦩",
    "emoji at end 🦩🦩",
    "ninja 🐱‍👤 thumbs 👍🏽",
    "a  cat   with    spaces",
    "  leading and trailing  ",
    "tabs\tand\nnewlines\r\nmixed",
    "numbers 1234 3.14 1,000,000 2nd 4k 1080p",
    "#sunset ##hashtags c# code #",
    "email@example.com http://x.y/z?a=b&c=d",
    "<|startoftext|> a <|endoftext|> b",
    "\"quoted\" 'single' `back`",
    "ﬁne ligature",
    "İstanbul",
    "straße STRASSE",
    "x\u001fy\u001cz",
    "non-breaking\u00a0space and em\u2014dash \u2013 en",
    "zero-width\u200bspace",
    "a cat a cat a cat",
    "mixed.Case.Words,no spaces",
    "a hippopotamus, a rhinoceros and a crocodile",
    "an oil painting of a squirrel eating a burger",
    "hippopotamus",
    "",
    " ",
    LONG_CATS,
    LONG_BORDER,
    " ".join(["cat"] * 75),
    " ".join(["cat"] * 76),
]
SD2_CORPUS = ["a photo of a cat", "wow!!! great!", "hello ! world !!", "a cat! a dog!", ""]


def get_word_inds(text, word_place, tokenizer, clamp=False):
    """Our port of ptp_utils.get_word_inds (google/prompt-to-prompt): the token positions (BOS = 0) of a word given
    by index or as a string. With clamp=True the word pointer stays on the last word instead of running past it
    (where the reference raises IndexError)."""
    split_text = text.split(" ")
    if isinstance(word_place, str):
        word_place = [i for i, word in enumerate(split_text) if word_place == word]
    elif isinstance(word_place, int):
        word_place = [word_place]
    out = []
    if len(word_place) > 0:
        words_encode = [tokenizer.decode([item]).strip("#") for item in tokenizer.encode(text)][1:-1]
        cur_len, ptr = 0, 0
        last = len(split_text) - 1
        for i in range(len(words_encode)):
            cur_len += len(words_encode[i])
            if ptr in word_place:
                out.append(i + 1)
            if cur_len >= len(split_text[min(ptr, last) if clamp else ptr]):
                ptr = min(ptr + 1, last) if clamp else ptr + 1
                cur_len = 0
    return out


def byte_decode(tokenizer, token_id):
    """An independent decode of one token (GPT-2 byte alphabet, invalid UTF-8 replaced, </w> -> space, strip), to
    check that `tokenizer.decode([id])` means what tests/tokenizer.rs assumes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_of = {chr(c): b for b, c in zip(bs, cs)}
    token = tokenizer.convert_ids_to_tokens(token_id)
    if token_id in tokenizer.all_special_ids:
        return token
    data = bytes(byte_of[c] for c in token)
    return data.decode("utf-8", errors="replace").replace("</w>", " ").strip()


def encode_row(tokenizer, prompt):
    return tokenizer(prompt, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids


def main():
    tmp = tempfile.mkdtemp()
    try:
        vm = os.path.join(tmp, "vocab-merges")
        tj = os.path.join(tmp, "tokenizer-json")
        vm2 = os.path.join(tmp, "sd2-vocab-merges")
        tj2 = os.path.join(tmp, "sd2-tokenizer-json")
        for d in (vm, tj, vm2, tj2):
            os.makedirs(d)
        for d in (vm, vm2):
            for f in ("vocab.json", "merges.txt"):
                shutil.copy(os.path.join(ASSETS, f), d)
        for d in (tj, tj2):
            shutil.copy(os.path.join(FIXTURES, "tokenizer.json"), d)
        for d in (vm2, tj2):
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump({"pad_token": "!"}, f)

        slow = CLIPTokenizer.from_pretrained(vm)
        fast = CLIPTokenizer.from_pretrained(tj)
        assert slow.pad_token == "<|endoftext|>" and fast.pad_token == "<|endoftext|>"
        assert encode_row(slow, "a photo of a cat")[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]

        prompts = []
        raising = 0
        for prompt in CORPUS:
            ids = encode_row(slow, prompt)
            assert ids == encode_row(fast, prompt), f"vocab+merges and tokenizer.json disagree on {prompt!r}"
            assert len(ids) == MAX_LEN
            full = slow.encode(prompt)
            assert full == fast.encode(prompt)
            assert full[0] == slow.bos_token_id and full[-1] == slow.eos_token_id
            tokens = full[1:-1]
            decoded = [slow.decode([t]) for t in tokens]
            for t, d in zip(tokens, decoded):
                assert d == fast.decode([t]) == byte_decode(slow, t), (prompt, t, d)
            words = prompt.split(" ")
            try:
                for i in range(len(words)):
                    get_word_inds(prompt, i, slow)
                raises = False
            except IndexError:
                raises = True
                raising += 1
            word_positions = [get_word_inds(prompt, i, slow, clamp=True) for i in range(len(words))]
            by_word = {w: get_word_inds(prompt, w, slow, clamp=True) for w in dict.fromkeys(words)}
            if not raises:
                for w in by_word:
                    assert by_word[w] == get_word_inds(prompt, w, slow)
            prompts.append(
                {
                    "prompt": prompt,
                    "ids": ids,
                    "tokens": tokens,
                    "decoded": decoded,
                    "words": words,
                    "word_positions": word_positions,
                    "by_word": by_word,
                    "reference_raises": raises,
                }
            )
        assert raising > 0, "the corpus should exercise the reference's IndexError"
        assert any(len(p["tokens"]) > MAX_LEN - 2 for p in prompts)

        slow2 = CLIPTokenizer.from_pretrained(vm2)
        fast2 = CLIPTokenizer.from_pretrained(tj2)
        assert slow2.pad_token == "!" and slow2.pad_token_id == 0 and fast2.pad_token_id == 0
        sd2 = []
        for prompt in SD2_CORPUS:
            ids = encode_row(slow2, prompt)
            assert ids == encode_row(fast2, prompt), f"SD 2 builds disagree on {prompt!r}"
            sd2.append({"prompt": prompt, "ids": ids})

        out = {
            "generator": "weights-tools/make_tokenizer_fixture.py",
            "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
            "max_length": MAX_LEN,
            "prompts": prompts,
            "sd2": sd2,
        }
        path = os.path.join(FIXTURES, "corpus.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"wrote {path}: {len(prompts)} prompts ({raising} where the reference raises), {len(sd2)} SD 2 prompts")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
