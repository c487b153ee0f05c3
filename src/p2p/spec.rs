//! Parsing and checking the edit options (`--swap OLD=NEW`, `--reweight WORD=C`, `--cross-steps F|S:E`,
//! `--cross-steps-word W=F|W=S:E`, `--self-steps`, `--blend W1,W2`) into the parts of an [`EditSpec`].
//!
//! Every error is one line that names the value it rejects.
use std::str::FromStr;

use super::plan::{EditSpec, Window};
use crate::{Error, Result};

/// The default `--cross-steps`: (0, 0.8).
pub const DEFAULT_CROSS_STEPS: Window = Window { start: 0.0, end: 0.8 };
/// The default `--self-steps`: (0, 0.4).
pub const DEFAULT_SELF_STEPS: Window = Window { start: 0.0, end: 0.4 };
/// The default local-blend threshold (the reference's `LocalBlend(threshold=.3)`).
pub const DEFAULT_BLEND_THRESHOLD: f32 = 0.3;

impl Window {
    /// A checked window: both bounds finite, in [0, 1], and `start <= end`.
    pub fn new(start: f64, end: f64) -> Result<Window> {
        let w = Window { start, end };
        w.validate()?;
        Ok(w)
    }

    /// Checks the bounds (see [`Window::new`]); the error names the window.
    pub fn validate(&self) -> Result<()> {
        for v in [self.start, self.end] {
            if v.is_nan() {
                return Err(Error::input(format!("window {self} is not a number")));
            }
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::input(format!("window {v} is outside [0, 1]")));
            }
        }
        if self.start > self.end {
            return Err(Error::input(format!("window {self}: its start {} is after its end {}", self.start, self.end)));
        }
        Ok(())
    }

    /// Parses `"F"` as (0, F) and `"S:E"` as (S, E), then checks the bounds.
    pub fn parse(text: &str) -> Result<Window> {
        let t = text.trim();
        let num = |s: &str| -> Result<f64> {
            let s = s.trim();
            let v: f64 = s.parse().map_err(|_| {
                Error::input(format!(
                    "window {t:?} is not a fraction F or START:END (fractions of the steps in [0, 1])"
                ))
            })?;
            if v.is_nan() {
                return Err(Error::input(format!("window {t:?} is not a number")));
            }
            Ok(v)
        };
        let (start, end) = match t.split_once(':') {
            Some((s, e)) => (num(s)?, num(e)?),
            None => (0.0, num(t)?),
        };
        Window::new(start, end)
    }

    /// The rows `[int(start·n), int(end·n))` of a table with `n` rows (truncating, as Python's `int()`).
    pub fn rows(&self, n: usize) -> (usize, usize) {
        let at = |f: f64| ((f * n as f64) as usize).min(n);
        (at(self.start), at(self.end))
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == 0.0 { write!(f, "{}", self.end) } else { write!(f, "{}:{}", self.start, self.end) }
    }
}

impl FromStr for Window {
    type Err = Error;
    fn from_str(s: &str) -> Result<Window> {
        Window::parse(s)
    }
}

/// Splits `KEY=VALUE` at the `=` chosen by `split`, trims both sides of spaces and checks that the key is one
/// non-empty word.
fn key_value<'a>(
    text: &'a str,
    option: &str,
    form: &str,
    split: impl Fn(&'a str) -> Option<(&'a str, &'a str)>,
) -> Result<(&'a str, &'a str)> {
    let Some((key, value)) = split(text) else {
        return Err(Error::input(format!("{option} {text:?} is not of the form {form}")));
    };
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() {
        return Err(Error::input(format!("{option} {text:?} has no word before '='")));
    }
    if key.contains(' ') {
        return Err(Error::input(format!(
            "{option} {text:?}: {key:?} is not one word (prompts are split into words on single spaces)"
        )));
    }
    Ok((key, value))
}

/// Parses `--swap OLD=NEW` (split at the first `=`): OLD is one word of the prompt, NEW one or more words.
pub fn parse_swap(text: &str) -> Result<(String, String)> {
    let (old, new) = key_value(text, "--swap", "OLD=NEW", |t| t.split_once('='))?;
    if new.is_empty() {
        return Err(Error::input(format!("--swap {text:?} has no replacement after '='")));
    }
    if new.contains('=') {
        return Err(Error::input(format!(
            "--swap {text:?}: the replacement {new:?} contains '=' (give one OLD=NEW per --swap)"
        )));
    }
    Ok((old.to_string(), new.to_string()))
}

/// Parses `--reweight WORD=C` (split at the last `=`): a finite factor, negative and fractional allowed.
pub fn parse_reweight(text: &str) -> Result<(String, f32)> {
    let (word, value) = key_value(text, "--reweight", "WORD=FACTOR", |t| t.rsplit_once('='))?;
    let c: f32 = value
        .trim()
        .parse()
        .map_err(|_| Error::input(format!("--reweight {text:?}: the factor {value:?} is not a number")))?;
    if !c.is_finite() {
        return Err(Error::input(format!("--reweight {text:?}: the factor {value:?} is not a finite number")));
    }
    Ok((word.to_string(), c))
}

/// Parses `--cross-steps-word WORD=F` or `WORD=S:E` (split at the last `=`).
pub fn parse_word_window(text: &str) -> Result<(String, Window)> {
    let (word, value) = key_value(text, "--cross-steps-word", "WORD=F or WORD=START:END", |t| t.rsplit_once('='))?;
    let w = Window::parse(value).map_err(|e| Error::input(format!("--cross-steps-word {text:?}: {e}")))?;
    Ok((word.to_string(), w))
}

/// Parses `--blend W1,W2,...` into its words (each trimmed of spaces; none may be empty).
pub fn parse_blend_words(text: &str) -> Result<Vec<String>> {
    let words: Vec<String> = text.split(',').map(|w| w.trim().to_string()).collect();
    if let Some(bad) = words.iter().find(|w| w.is_empty() || w.contains(' ')) {
        let what = if bad.is_empty() { "an empty word".to_string() } else { format!("{bad:?}, which is not one word") };
        return Err(Error::input(format!("--blend {text:?} has {what} (give words separated by commas)")));
    }
    Ok(words)
}

/// Checks a blend threshold: finite (typically in (0, 1); the mask is the map over its maximum, `> threshold`).
pub fn check_blend_threshold(threshold: f32) -> Result<()> {
    if !threshold.is_finite() {
        return Err(Error::input(format!("blend threshold {threshold} is not a finite number")));
    }
    Ok(())
}

/// Checks a blend start: a fraction of the steps in [0, 1].
pub fn check_blend_start(start: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&start) {
        return Err(Error::input(format!("blend start {start} is not a fraction of the steps in [0, 1]")));
    }
    Ok(())
}

impl EditSpec {
    /// A spec for `prompt` with no edit yet and the defaults: cross window (0, 0.8), self window (0, 0.4), blend
    /// threshold 0.3 from the first step, auto mode, corrected replacement mapper.
    pub fn new(prompt: impl Into<String>) -> EditSpec {
        EditSpec {
            prompt: prompt.into(),
            swaps: Vec::new(),
            targets: Vec::new(),
            mode: None,
            reweights: Vec::new(),
            blend_words: Vec::new(),
            blend_threshold: DEFAULT_BLEND_THRESHOLD,
            blend_start: 0.0,
            cross_steps: DEFAULT_CROSS_STEPS,
            cross_steps_word: Vec::new(),
            self_steps: DEFAULT_SELF_STEPS,
            compat_ptp: false,
        }
    }

    /// Checks the values that need no tokenizer: windows, factors, blend threshold and start, swap words.
    pub fn validate(&self) -> Result<()> {
        self.cross_steps.validate().map_err(|e| Error::input(format!("cross-attention steps: {e}")))?;
        self.self_steps.validate().map_err(|e| Error::input(format!("self-attention steps: {e}")))?;
        for (word, w) in &self.cross_steps_word {
            w.validate().map_err(|e| Error::input(format!("cross-attention steps of {word:?}: {e}")))?;
        }
        for (word, c) in &self.reweights {
            if !c.is_finite() {
                return Err(Error::input(format!("reweight factor {c} of {word:?} is not a finite number")));
            }
        }
        for (old, new) in &self.swaps {
            if old.is_empty() || old.contains(' ') {
                return Err(Error::input(format!("swap {old:?}={new:?}: {old:?} is not one word")));
            }
            if new.is_empty() {
                return Err(Error::input(format!("swap {old:?}: the replacement is empty")));
            }
        }
        if !self.blend_words.is_empty() {
            check_blend_threshold(self.blend_threshold)?;
            check_blend_start(self.blend_start)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: f64, e: f64) -> Window {
        Window { start: s, end: e }
    }

    #[test]
    fn windows() {
        assert_eq!(Window::parse("0.8").unwrap(), w(0.0, 0.8));
        assert_eq!(Window::parse("0.2:0.6").unwrap(), w(0.2, 0.6));
        assert_eq!(Window::parse(" 0 : 1 ").unwrap(), w(0.0, 1.0));
        assert_eq!(Window::parse("1").unwrap(), w(0.0, 1.0));
        assert_eq!(Window::parse("0.3:0.3").unwrap(), w(0.3, 0.3));
        assert_eq!("0.5".parse::<Window>().unwrap(), w(0.0, 0.5));
        let err = |s: &str| Window::parse(s).unwrap_err().to_string();
        assert_eq!(err("1.5"), "window 1.5 is outside [0, 1]");
        assert_eq!(err("-0.1:0.5"), "window -0.1 is outside [0, 1]");
        assert!(err("0.6:0.2").contains("start 0.6 is after its end 0.2"), "{}", err("0.6:0.2"));
        assert!(err("NaN").contains("not a number"));
        assert!(err("0:nan").contains("not a number"));
        assert!(err("inf").contains("outside"));
        assert!(err("abc").contains("\"abc\""));
        assert!(err("0.1:").contains("not a fraction"));
        assert!(err("").contains("not a fraction"));
        assert!(err("0.1:0.2:0.3").contains("not a fraction"));
        assert!(Window::new(0.5, 0.4).is_err());
    }

    #[test]
    fn window_rows_truncate() {
        assert_eq!(w(0.0, 0.8).rows(51), (0, 40));
        assert_eq!(w(0.2, 0.6).rows(51), (10, 30));
        assert_eq!(w(0.0, 1.0).rows(51), (0, 51));
        assert_eq!(w(0.0, 0.8).rows(5), (0, 4));
        assert_eq!(w(0.0, 0.4).rows(50), (0, 20));
        assert_eq!(w(0.0, 0.4).rows(4), (0, 1));
    }

    #[test]
    fn swaps() {
        assert_eq!(parse_swap("bicycle=car").unwrap(), ("bicycle".into(), "car".into()));
        assert_eq!(parse_swap("bicycle=red car").unwrap(), ("bicycle".into(), "red car".into()));
        assert_eq!(parse_swap(" bicycle = car ").unwrap(), ("bicycle".into(), "car".into()));
        assert!(parse_swap("bicycle").unwrap_err().to_string().contains("OLD=NEW"));
        assert!(parse_swap("=car").is_err());
        assert!(parse_swap("bicycle=").is_err());
        assert!(parse_swap("red bicycle=car").unwrap_err().to_string().contains("not one word"));
    }

    #[test]
    fn reweights() {
        assert_eq!(parse_reweight("fluffy=-2").unwrap(), ("fluffy".into(), -2.0));
        assert_eq!(parse_reweight("fluffy=0.25").unwrap(), ("fluffy".into(), 0.25));
        assert_eq!(parse_reweight("a=b=3").unwrap(), ("a=b".into(), 3.0));
        for bad in ["fluffy=NaN", "fluffy=inf", "fluffy=-inf", "fluffy=1e40"] {
            assert!(parse_reweight(bad).unwrap_err().to_string().contains("not a finite number"), "{bad}");
        }
        assert!(parse_reweight("fluffy=x").unwrap_err().to_string().contains("\"x\""));
        assert!(parse_reweight("fluffy").is_err());
    }

    #[test]
    fn word_windows_and_blend() {
        assert_eq!(parse_word_window("cat=0.2:0.6").unwrap(), ("cat".into(), w(0.2, 0.6)));
        assert_eq!(parse_word_window("cat=1").unwrap(), ("cat".into(), w(0.0, 1.0)));
        let e = parse_word_window("cat=1.5").unwrap_err().to_string();
        assert!(e.contains("cat=1.5") && e.contains("outside [0, 1]"), "{e}");
        assert_eq!(parse_blend_words("a,b").unwrap(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(parse_blend_words("cat, dog").unwrap(), vec!["cat".to_string(), "dog".to_string()]);
        assert!(parse_blend_words("a,,b").is_err());
        assert!(parse_blend_words("").is_err());
    }

    #[test]
    fn spec_defaults_and_validation() {
        let s = EditSpec::new("a cat");
        assert_eq!(s.cross_steps, w(0.0, 0.8));
        assert_eq!(s.self_steps, w(0.0, 0.4));
        s.validate().unwrap();
        let mut bad = s.clone();
        bad.cross_steps = w(0.0, f64::NAN);
        assert!(bad.validate().unwrap_err().to_string().contains("not a number"));
        let mut bad = s.clone();
        bad.reweights.push(("cat".into(), f32::INFINITY));
        assert!(bad.validate().is_err());
        let mut bad = s;
        bad.blend_words.push("cat".into());
        bad.blend_threshold = f32::NAN;
        assert!(bad.validate().unwrap_err().to_string().contains("threshold"));
    }
}
