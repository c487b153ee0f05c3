//! A small WGSL preprocessor for the embedded kernel files.
//!
//! Directives (each alone on its line, leading whitespace allowed):
//! - `#include "family/file.wgsl"`: insert that kernel file (path relative to `kernels/`), once per output;
//! - `#define NAME VALUE` / `#define NAME`: define a name; later identifiers `NAME` are replaced by `VALUE`;
//! - `#ifdef NAME`, `#ifndef NAME`, `#else`, `#endif`: conditional sections, nestable.
//!
//! Defines given by the caller (the op's variant: `F16`, tile sizes, activation, ...) act as if defined on top of
//! the root file. Substitution is by whole identifier, one level deep.
use std::collections::{BTreeMap, HashSet};

use crate::error::{Error, Result};

/// One set of defines; ordered so that it can key the pipeline cache.
pub type Defines = BTreeMap<String, String>;

/// Looks up an embedded kernel file by its path relative to `kernels/`.
pub fn kernel_source(path: &str) -> Option<&'static str> {
    super::kernel_files::KERNEL_FILES.iter().find(|(p, _)| *p == path).map(|(_, s)| *s)
}

/// All embedded kernel file paths.
pub fn kernel_paths() -> impl Iterator<Item = &'static str> {
    super::kernel_files::KERNEL_FILES.iter().map(|(p, _)| *p)
}

/// Expands `path` with `defines` into plain WGSL.
pub fn preprocess(path: &str, defines: &Defines) -> Result<String> {
    expand(path, defines).map(|(src, _)| src)
}

/// Like `preprocess`, also returning every kernel file the expansion read (the root and its includes).
pub fn expand(path: &str, defines: &Defines) -> Result<(String, Vec<String>)> {
    let mut st = State { defines: defines.clone(), included: HashSet::new(), out: String::new() };
    st.file(path, 0)?;
    let mut files: Vec<String> = st.included.into_iter().collect();
    files.sort();
    Ok((st.out, files))
}

struct State {
    defines: Defines,
    included: HashSet<String>,
    out: String,
}

fn err(path: &str, line: usize, message: impl std::fmt::Display) -> Error {
    Error::Kernel { path: format!("{path}:{}", line + 1), message: message.to_string() }
}

impl State {
    fn file(&mut self, path: &str, depth: usize) -> Result<()> {
        if depth > 16 {
            return Err(err(path, 0, "#include nested more than 16 deep"));
        }
        if !self.included.insert(path.to_string()) {
            return Ok(());
        }
        let src = kernel_source(path)
            .ok_or_else(|| Error::Kernel { path: path.to_string(), message: "no such embedded kernel file".into() })?;
        // Stack of (this section active, some branch already taken) for #ifdef nesting.
        let mut stack: Vec<(bool, bool)> = Vec::new();
        let active = |s: &Vec<(bool, bool)>| s.iter().all(|(a, _)| *a);
        for (ln, line) in src.lines().enumerate() {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix('#') {
                let mut parts = rest.splitn(2, char::is_whitespace);
                let dir = parts.next().unwrap_or("");
                let arg = parts.next().unwrap_or("").trim();
                match dir {
                    "ifdef" | "ifndef" => {
                        let name = ident(arg).ok_or_else(|| err(path, ln, "#ifdef needs a name"))?;
                        let has = self.defines.contains_key(name);
                        let cond = if dir == "ifdef" { has } else { !has };
                        stack.push((cond, cond));
                    }
                    "else" => {
                        let top = stack.last_mut().ok_or_else(|| err(path, ln, "#else without #ifdef"))?;
                        *top = (!top.1, true);
                    }
                    "endif" => {
                        stack.pop().ok_or_else(|| err(path, ln, "#endif without #ifdef"))?;
                    }
                    "define" if active(&stack) => {
                        let mut kv = arg.splitn(2, char::is_whitespace);
                        let name = kv.next().and_then(ident).ok_or_else(|| err(path, ln, "#define needs a name"))?;
                        let value = kv.next().unwrap_or("").trim().to_string();
                        self.defines.insert(name.to_string(), value);
                    }
                    "include" if active(&stack) => {
                        let inc = arg.trim_matches('"');
                        if inc.is_empty() || !arg.starts_with('"') {
                            return Err(err(path, ln, "#include needs a quoted path"));
                        }
                        self.file(inc, depth + 1).map_err(|e| match e {
                            Error::Kernel { path: p, message } => {
                                err(path, ln, format!("in #include {inc}: {p}: {message}"))
                            }
                            other => other,
                        })?;
                    }
                    "define" | "include" => {}
                    _ => return Err(err(path, ln, format!("unknown directive #{dir}"))),
                }
                continue;
            }
            if active(&stack) {
                self.out += &substitute(line, &self.defines);
                self.out.push('\n');
            }
        }
        if !stack.is_empty() {
            return Err(err(path, src.lines().count(), "unterminated #ifdef"));
        }
        Ok(())
    }
}

fn ident(s: &str) -> Option<&str> {
    let s = s.split_whitespace().next()?;
    let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(s)
}

/// Replaces whole identifiers that are defined (with a non-empty value) by their value.
fn substitute(line: &str, defines: &Defines) -> String {
    let mut out = String::with_capacity(line.len());
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &line[start..i];
            match defines.get(word) {
                Some(v) if !v.is_empty() => out += v,
                _ => out += word,
            }
        } else if c.is_ascii_digit() {
            // Numbers with suffixes (`16u`, `1e-3f`) are not identifiers.
            let start = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            out += &line[start..i];
        } else if line[i..].starts_with("//") {
            out += &line[i..];
            break;
        } else {
            let ch = line[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_whole_identifiers_only() {
        let mut d = Defines::new();
        d.insert("DT".into(), "f16".into());
        d.insert("TILE".into(), "64u".into());
        assert_eq!(substitute("var x: DT = DT(1.0); // DT", &d), "var x: f16 = f16(1.0); // DT");
        assert_eq!(substitute("let DTX = TILE * 2u; a_DT", &d), "let DTX = 64u * 2u; a_DT");
        assert_eq!(substitute("let y = 16u + 1e-3;", &d), "let y = 16u + 1e-3;");
    }

    #[test]
    fn ident_parsing() {
        assert_eq!(ident("F16 // x"), Some("F16"));
        assert_eq!(ident("1abc"), None);
        assert_eq!(ident(""), None);
    }
}
