//! CLIP tokenizer parity with transformers and word → token positions against our port of prompt-to-prompt's
//! `get_word_inds`, on the fixture of `weights-tools/make_tokenizer_fixture.py`; and the `tokens` command.
//!
//! Tokenizer folders: `assets/clip-tokenizer` (vocab.json + merges.txt, built in code) and
//! `tests/fixtures/tokenizer` (tokenizer.json), plus the embedded copy.
use std::path::{Path, PathBuf};
use std::process::Command;

use p2p_wgpu::text::{PromptWords, SpecialTokens, TokenReport, Tokenizer};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_dir() -> PathBuf {
    root().join("tests/fixtures/tokenizer")
}

fn assets_dir() -> PathBuf {
    root().join("assets/clip-tokenizer")
}

fn corpus() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("corpus.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

/// The three builds: tokenizer.json, vocab.json + merges.txt from a folder, and the embedded copy.
fn builds() -> Vec<(&'static str, Tokenizer)> {
    vec![
        ("tokenizer.json", Tokenizer::from_dir(fixture_dir(), 77).unwrap()),
        ("vocab+merges", Tokenizer::from_dir(assets_dir(), 77).unwrap()),
        ("embedded", Tokenizer::embedded_clip().unwrap()),
    ]
}

/// A fresh scratch folder under the target directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tokenizer-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn ids_match_transformers() {
    let corpus = corpus();
    assert_eq!(corpus["max_length"], 77);
    let prompts = corpus["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 40);
    for (name, tok) in builds() {
        assert_eq!(tok.max_len(), 77);
        assert_eq!((tok.bos_id(), tok.eos_id(), tok.pad_id()), (49406, 49407, 49407), "{name}");
        for p in prompts {
            let prompt = p["prompt"].as_str().unwrap();
            let want = u32s(&p["ids"]);
            let tokens = u32s(&p["tokens"]);
            let enc = tok.encode(prompt).unwrap();
            assert_eq!(enc.ids, want, "{name}: ids of {prompt:?}");
            assert_eq!(enc.tokens.len(), 77);
            assert_eq!(enc.length, (tokens.len() + 2).min(77), "{name}: length of {prompt:?}");
            assert_eq!(enc.truncated.is_some(), tokens.len() > 75, "{name}: truncation of {prompt:?}");
            assert_eq!(tok.tokenize(prompt).unwrap(), tokens, "{name}: untruncated tokens of {prompt:?}");
            for (&id, d) in tokens.iter().zip(p["decoded"].as_array().unwrap()) {
                assert_eq!(tok.decode(id), d.as_str().unwrap(), "{name}: decode({id}) in {prompt:?}");
            }
        }
    }
}

#[test]
fn sd2_pad_token_from_config() {
    let corpus = corpus();
    let vm = scratch("sd2-vocab-merges");
    let tj = scratch("sd2-tokenizer-json");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(assets_dir().join(f), vm.join(f)).unwrap();
    }
    std::fs::copy(fixture_dir().join("tokenizer.json"), tj.join("tokenizer.json")).unwrap();
    std::fs::write(vm.join("tokenizer_config.json"), r#"{"pad_token": "!", "model_max_length": 1000000000000}"#)
        .unwrap();
    // transformers 4.x writes AddedToken objects in special_tokens_map.json.
    std::fs::write(tj.join("special_tokens_map.json"), r#"{"pad_token": {"content": "!", "lstrip": false}}"#).unwrap();
    for dir in [vm, tj] {
        let tok = Tokenizer::from_dir(&dir, 77).unwrap();
        assert_eq!(tok.special_tokens().pad, "!");
        assert_eq!(tok.pad_id(), 0);
        for p in corpus["sd2"].as_array().unwrap() {
            let prompt = p["prompt"].as_str().unwrap();
            assert_eq!(tok.encode(prompt).unwrap().ids, u32s(&p["ids"]), "{}: {prompt:?}", dir.display());
        }
    }
}

#[test]
fn word_positions_match_the_reference_port() {
    let corpus = corpus();
    let tok = Tokenizer::embedded_clip().unwrap();
    let mut raising = 0;
    for p in corpus["prompts"].as_array().unwrap() {
        let prompt = p["prompt"].as_str().unwrap();
        raising += p["reference_raises"].as_bool().unwrap() as usize;
        let w = PromptWords::new(&tok, prompt).unwrap();
        let words: Vec<&str> = p["words"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        assert_eq!(w.words(), words.as_slice(), "{prompt:?}");
        for (index, want) in p["word_positions"].as_array().unwrap().iter().enumerate() {
            let want = usizes(want);
            // The reference walks the untruncated prompt; token i is at position i + 1.
            let untruncated: Vec<usize> =
                w.token_words().iter().enumerate().filter(|&(_, &wi)| wi == index).map(|(i, _)| i + 1).collect();
            assert_eq!(untruncated, want, "word {index} of {prompt:?}");
            let kept: Vec<usize> = want.iter().copied().filter(|&q| q <= 75).collect();
            assert_eq!(w.positions_of_index(index), kept, "word {index} of {prompt:?}");
            match w.find_index(index) {
                Ok(found) => assert_eq!(found, kept),
                Err(e) => assert!(kept.is_empty(), "{e}"),
            }
        }
        for (word, want) in p["by_word"].as_object().unwrap() {
            let kept: Vec<usize> = usizes(want).into_iter().filter(|&q| q <= 75).collect();
            assert_eq!(w.positions(word), kept, "word {word:?} of {prompt:?}");
            match w.find(word) {
                Ok(found) => assert_eq!(found, kept),
                Err(e) => {
                    assert!(kept.is_empty(), "{e}");
                    assert!(e.to_string().contains(&format!("{word:?}")), "{e}");
                }
            }
        }
        // The per-position word index agrees with the positions.
        let pw = w.position_words();
        assert_eq!(pw.len(), 77);
        for (q, wi) in pw.iter().enumerate() {
            if let Some(wi) = wi {
                assert!(w.positions_of_index(*wi).contains(&q));
            }
        }
    }
    assert!(raising > 0);
}

#[test]
fn load_errors_are_one_line_and_name_the_path() {
    let missing = root().join("tests/fixtures/tokenizer/no-such-folder");
    let e = Tokenizer::from_dir(&missing, 77).unwrap_err().to_string();
    assert!(e.contains("no-such-folder") && !e.contains('\n'), "{e}");

    let empty = scratch("empty");
    let e = Tokenizer::from_dir(&empty, 77).unwrap_err().to_string();
    assert!(e.contains("neither tokenizer.json nor vocab.json + merges.txt") && !e.contains('\n'), "{e}");

    let bad = scratch("bad-json");
    std::fs::write(bad.join("tokenizer.json"), "{ not json").unwrap();
    let e = Tokenizer::from_dir(&bad, 77).unwrap_err().to_string();
    assert!(e.contains(&bad.join("tokenizer.json").display().to_string()) && !e.contains('\n'), "{e}");

    let bad_config = scratch("bad-config");
    std::fs::copy(fixture_dir().join("tokenizer.json"), bad_config.join("tokenizer.json")).unwrap();
    std::fs::write(bad_config.join("tokenizer_config.json"), "[1,").unwrap();
    let e = Tokenizer::from_dir(&bad_config, 77).unwrap_err().to_string();
    assert!(e.contains("tokenizer_config.json") && e.contains("invalid JSON") && !e.contains('\n'), "{e}");

    let bad_vocab = scratch("bad-vocab");
    std::fs::write(bad_vocab.join("vocab.json"), r#"{"a": "x"}"#).unwrap();
    std::fs::write(bad_vocab.join("merges.txt"), "#version: 0.2\n").unwrap();
    let e = Tokenizer::from_dir(&bad_vocab, 77).unwrap_err().to_string();
    assert!(e.contains("vocab.json") && !e.contains('\n'), "{e}");

    let e = Tokenizer::from_dir(fixture_dir(), 1).unwrap_err().to_string();
    assert!(e.contains("no room for BOS and EOS"), "{e}");

    let special = SpecialTokens { pad: "<|pad|>".into(), ..SpecialTokens::default() };
    let bytes = std::fs::read(fixture_dir().join("tokenizer.json")).unwrap();
    // An unknown pad token is added to the vocabulary, as transformers does.
    let tok = Tokenizer::from_tokenizer_json(&bytes, special, 77, "test").unwrap();
    assert_eq!(tok.pad_id(), 49408);
}

#[test]
fn model_dir_reads_max_len_from_the_text_encoder() {
    let model = scratch("model");
    std::fs::create_dir_all(model.join("tokenizer")).unwrap();
    std::fs::create_dir_all(model.join("text_encoder")).unwrap();
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(assets_dir().join(f), model.join("tokenizer").join(f)).unwrap();
    }
    std::fs::write(
        model.join("tokenizer/tokenizer_config.json"),
        r#"{"model_max_length": 1000000000000000019884624838656}"#,
    )
    .unwrap();
    std::fs::write(model.join("text_encoder/config.json"), r#"{"max_position_embeddings": 16}"#).unwrap();
    let tok = Tokenizer::from_model_dir(&model).unwrap();
    assert_eq!(tok.max_len(), 16);
    let e =
        tok.encode("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen").unwrap();
    assert_eq!(e.ids.len(), 16);
    assert_eq!(e.truncated.as_deref(), Some("fifteen"));
    let words = PromptWords::new(
        &tok,
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen",
    )
    .unwrap();
    assert_eq!(words.find("fourteen").unwrap(), vec![14]);
    assert!(words.find("fifteen").unwrap_err().to_string().contains("16-token limit"));

    std::fs::write(model.join("text_encoder/config.json"), r#"{"hidden_size": 768}"#).unwrap();
    let e = Tokenizer::from_model_dir(&model).unwrap_err().to_string();
    assert!(e.contains("max_position_embeddings") && e.contains("config.json"), "{e}");
}

#[test]
fn report_table_and_json() {
    let tok = Tokenizer::embedded_clip().unwrap();
    let r = TokenReport::new(&tok, "a hippopotamus").unwrap();
    let table = r.table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + 6 + 1, "{table}");
    assert!(lines[0].contains("pos") && lines[0].contains("word"));
    assert!(lines[2].contains("320") && lines[2].contains("\"a</w>\"") && lines[2].contains("0 \"a\""), "{table}");
    assert!(lines[3].contains("\"hippo\"") && lines[3].contains("1 \"hippopotamus\""), "{table}");
    assert!(lines[7].starts_with("6..76: padding, 71 x id 49407"), "{table}");
    let json: Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["length"], 6);
    assert_eq!(json["words"][2], 1);
    assert_eq!(json["words"][5], Value::Null);
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_p2p-wgpu")).args(args).output().unwrap()
}

#[test]
fn cli_tokens_json() {
    let corpus = corpus();
    let find = |prefix: &str| {
        corpus["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["prompt"].as_str().unwrap().starts_with(prefix))
            .unwrap()
    };
    let p = find("😀 🦩 hippopotamus");
    let prompt = p["prompt"].as_str().unwrap();
    let out = cli(&["tokens", "--json", prompt]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u32s(&json["ids"]), u32s(&p["ids"]));
    let tokens = json["tokens"].as_array().unwrap();
    let words = json["words"].as_array().unwrap();
    assert_eq!((tokens.len(), words.len()), (77, 77));
    assert_eq!(tokens[0], "<|startoftext|>");
    let n = p["tokens"].as_array().unwrap().len();
    assert_eq!(words[0], Value::Null);
    assert_eq!(words[n + 1], Value::Null);
    for (index, positions) in p["word_positions"].as_array().unwrap().iter().enumerate() {
        for q in usizes(positions) {
            assert_eq!(words[q], index, "position {q} of {prompt:?}");
        }
    }
    assert_eq!(json["prompt_words"], p["words"]);
    assert_eq!(json["truncated"], Value::Null);

    // The same through --model with a diffusers layout, and a truncation warning naming the cut words.
    let model = scratch("cli-model");
    std::fs::create_dir_all(model.join("tokenizer")).unwrap();
    std::fs::create_dir_all(model.join("text_encoder")).unwrap();
    std::fs::copy(fixture_dir().join("tokenizer.json"), model.join("tokenizer/tokenizer.json")).unwrap();
    std::fs::write(model.join("text_encoder/config.json"), r#"{"max_position_embeddings": 77}"#).unwrap();
    let long = find("a cat a cat a cat a cat");
    let out = cli(&["tokens", "--model", model.to_str().unwrap(), "--json", long["prompt"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u32s(&json["ids"]), u32s(&long["ids"]));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("longer than 77 tokens") && stderr.contains("a cat"),
        "{stderr}"
    );
    assert_eq!(json["truncated"], "cat a cat a cat");

    let out = cli(&["tokens", "a photo of a cat"]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("\"photo</w>\"") && table.contains("7..76: padding"), "{table}");
}

#[test]
fn cli_tokens_missing_model_dir() {
    let missing = root().join("tests/fixtures/tokenizer/no-such-model");
    let out = cli(&["tokens", "--model", missing.to_str().unwrap(), "a photo of a cat"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("p2p-wgpu: error: ") && stderr.contains("no-such-model"), "{stderr}");

    // A model folder without a text encoder config.
    let model = scratch("cli-no-config");
    std::fs::create_dir_all(model.join("tokenizer")).unwrap();
    let out = cli(&["tokens", "--model", model.to_str().unwrap(), "a cat"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("text_encoder") && stderr.contains("config.json"), "{stderr}");
}
