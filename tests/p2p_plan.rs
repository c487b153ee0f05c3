//! The edit plan (docs/DESIGN.md §5): replacement and refinement mappers, reweight factors, the cross and self windows,
//! local-blend positions, the kernel's edit data, and every error, on the embedded CLIP tokenizer. The expected
//! values are worked out by hand from the reference algorithms (google/prompt-to-prompt's `seq_aligner` and
//! `ptp_utils`), with the token positions shown by `p2p-wgpu tokens`.
#![allow(clippy::needless_range_loop)] // columns are checked by index, as the hand-worked tables read
use std::sync::OnceLock;

use p2p_wgpu::p2p::spec::{parse_blend_words, parse_reweight, parse_swap, parse_word_window};
use p2p_wgpu::p2p::{EditPlan, EditSpec, Mode, Window};
use p2p_wgpu::text::Tokenizer;

const CAT_BICYCLE: &str = "a photo of a fluffy cat riding a bicycle";

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::embedded_clip().unwrap())
}

fn plan(spec: &EditSpec, steps: usize) -> EditPlan {
    EditPlan::new(spec, tok(), steps).unwrap_or_else(|e| panic!("{e}"))
}

fn error(spec: &EditSpec, steps: usize) -> String {
    let e = EditPlan::new(spec, tok(), steps).expect_err("expected an error").to_string();
    assert!(!e.contains('\n'), "error is not one line: {e}");
    e
}

fn swap(prompt: &str, old: &str, new: &str) -> EditSpec {
    let mut s = EditSpec::new(prompt);
    s.swaps.push((old.into(), new.into()));
    s
}

fn win(start: f64, end: f64) -> Window {
    Window { start, end }
}

/// Column n of an identity mapper.
fn id(n: usize) -> Vec<(u32, f32)> {
    vec![(n as u32, 1.0)]
}

/// Checks the invariants every plan has: shapes, finite values, source indices in range.
fn check_shapes(p: &EditPlan, steps: usize) {
    let t = p.prompts.len() - 1;
    assert_eq!(p.keys, 77);
    assert_eq!(p.mapper.len(), t);
    assert_eq!(p.r.len(), t);
    assert_eq!(p.eq.len(), t);
    assert_eq!(p.alpha.len(), steps + 1);
    for m in &p.mapper {
        assert_eq!(m.len(), 77);
        for col in m {
            assert!(col.iter().all(|&(w, v)| (w as usize) < 77 && v.is_finite() && v != 0.0));
            assert!(col.windows(2).all(|e| e[0].0 < e[1].0), "entries sorted by source: {col:?}");
        }
    }
    assert!(p.r.iter().chain(&p.eq).all(|v| v.len() == 77));
    assert!(p.alpha.iter().all(|row| row.len() == t && row.iter().all(|v| v.len() == 77)));
    for eval in 0..steps + 2 {
        p.edit_data(eval).unwrap();
    }
}

#[test]
fn swap_with_equal_token_counts() {
    let p = plan(&swap(CAT_BICYCLE, "bicycle", "car"), 50);
    check_shapes(&p, 50);
    assert_eq!(p.prompts, vec![CAT_BICYCLE.to_string(), "a photo of a fluffy cat riding a car".to_string()]);
    assert_eq!(p.mode, Mode::Replace);
    // One token for one: W = I (bicycle at 9 → car at 9), r = 0, eq = 1.
    for n in 0..77 {
        assert_eq!(p.mapper[0][n], id(n), "column {n}");
    }
    assert!(p.r[0].iter().all(|&v| v == 0.0));
    assert!(p.eq[0].iter().all(|&v| v == 1.0));
    assert!(p.blend.is_none());
    assert_eq!(p.self_steps, (0, 20));
}

#[test]
fn swap_replaces_every_occurrence_and_several_swaps_at_once() {
    let mut s = swap("a cat and a dog", "cat", "dog");
    s.swaps.push(("dog".into(), "cat".into()));
    s.swaps.push(("a".into(), "one".into()));
    let p = plan(&s, 10);
    assert_eq!(p.prompts[1], "one dog and one cat");
    assert_eq!(p.mode, Mode::Replace);
}

/// "a dog on the grass" → "a hippopotamus on the grass": dog is position 2, hippopotamus is hippo potam us at
/// 2, 3, 4. Each of the three target tokens takes 1/3 of the source "dog"; then the corrected walk maps the rest
/// shifted by 2 (target n ← source n − 2).
#[test]
fn length_changing_swap_corrected() {
    let p = plan(&swap("a dog on the grass", "dog", "hippopotamus"), 50);
    check_shapes(&p, 50);
    assert_eq!(p.mode, Mode::Replace);
    let m = &p.mapper[0];
    let third = (1.0f64 / 3.0) as f32;
    assert_eq!(m[0], id(0));
    assert_eq!(m[1], id(1));
    for n in 2..=4 {
        assert_eq!(m[n], vec![(2, third)], "column {n}");
    }
    // on, the, grass, EOS, padding: target n ← source n − 2, up to target 76 ← source 74.
    for n in 5..77 {
        assert_eq!(m[n], vec![(n as u32 - 2, 1.0)], "column {n}");
    }
    assert!(p.r[0].iter().all(|&v| v == 0.0));
}

/// The same swap under `--compat ptp`: after the last replaced word the reference writes `mapper[j, j]`, so the
/// target's "on" (5) takes the source's "grass" (5), "the" (6) the source EOS (6), and so on.
#[test]
fn length_changing_swap_compat_ptp() {
    let mut s = swap("a dog on the grass", "dog", "hippopotamus");
    s.compat_ptp = true;
    let p = plan(&s, 50);
    check_shapes(&p, 50);
    let m = &p.mapper[0];
    let third = (1.0f64 / 3.0) as f32;
    assert_eq!(m[0], id(0));
    assert_eq!(m[1], id(1));
    for n in 2..=4 {
        assert_eq!(m[n], vec![(2, third)], "column {n}");
    }
    // The misaligned tail: identity from 5 on (the loop ends when j reaches 77, with i = 75).
    for n in 5..77 {
        assert_eq!(m[n], id(n), "column {n}");
    }
}

/// Source longer than target: "a hippopotamus on the grass" → "a dog on the grass". The target "dog" (2) sums the
/// three source tokens with weight 1/1; the corrected tail maps target n ← source n + 2 until the source runs out
/// (target 75 and 76 get no entry); compat maps n ← n until i runs out at target 74.
#[test]
fn shrinking_swap_both_modes() {
    let s = swap("a hippopotamus on the grass", "hippopotamus", "dog");
    let p = plan(&s, 50);
    let m = &p.mapper[0];
    assert_eq!(m[2], vec![(2, 1.0), (3, 1.0), (4, 1.0)]);
    for n in 3..75 {
        assert_eq!(m[n], vec![(n as u32 + 2, 1.0)], "column {n}");
    }
    assert!(m[75].is_empty() && m[76].is_empty());

    let mut s = s;
    s.compat_ptp = true;
    let p = plan(&s, 50);
    let m = &p.mapper[0];
    assert_eq!(m[2], vec![(2, 1.0), (3, 1.0), (4, 1.0)]);
    for n in 3..75 {
        assert_eq!(m[n], id(n), "column {n}");
    }
    assert!(m[75].is_empty() && m[76].is_empty());
}

/// A multi-word NEW changes the word count, so the mode is refine: source [BOS a photo of a fluffy cat riding a
/// bicycle EOS] (11 tokens) and target [... riding a red car EOS] (12): positions 0..=8 align to themselves,
/// "red" (9) and "car" (10) are insertions (a = 0, r = 1), EOS 11 ← 10, and padding 12.. maps to itself.
#[test]
fn multi_word_new_is_refine() {
    let p = plan(&swap(CAT_BICYCLE, "bicycle", "red car"), 50);
    check_shapes(&p, 50);
    assert_eq!(p.prompts[1], "a photo of a fluffy cat riding a red car");
    assert_eq!(p.mode, Mode::Refine);
    let (m, r) = (&p.mapper[0], &p.r[0]);
    for n in 0..=8 {
        assert_eq!(m[n], id(n), "column {n}");
        assert_eq!(r[n], 0.0);
    }
    for n in [9, 10] {
        assert!(m[n].is_empty(), "column {n}");
        assert_eq!(r[n], 1.0);
    }
    assert_eq!(m[11], vec![(10, 1.0)]);
    assert_eq!(r[11], 0.0);
    for n in 12..77 {
        assert_eq!(m[n], id(n), "column {n}");
        assert_eq!(r[n], 0.0);
    }
}

/// "a castle" → "children drawing of a castle": source [BOS a castle EOS], target [BOS children drawing of a castle
/// EOS]. BOS ← 0, children/drawing/of unmatched, a ← 1, castle ← 2, EOS ← 3; padding 7.. ← itself (a = 1).
#[test]
fn refine_castle() {
    let mut s = EditSpec::new("a castle");
    s.targets.push("children drawing of a castle".into());
    let p = plan(&s, 50);
    check_shapes(&p, 50);
    assert_eq!(p.mode, Mode::Refine);
    let (m, r) = (&p.mapper[0], &p.r[0]);
    let expect: [Option<u32>; 7] = [Some(0), None, None, None, Some(1), Some(2), Some(3)];
    for (n, e) in expect.iter().enumerate() {
        match e {
            Some(w) => {
                assert_eq!(m[n], vec![(*w, 1.0)], "column {n}");
                assert_eq!(r[n], 0.0, "r {n}");
            }
            None => {
                assert!(m[n].is_empty(), "column {n}");
                assert_eq!(r[n], 1.0, "r {n}");
            }
        }
    }
    for n in 7..77 {
        assert_eq!(m[n], id(n), "column {n}");
        assert_eq!(r[n], 0.0);
    }
    assert!(p.eq[0].iter().all(|&v| v == 1.0));
}

/// The reverse: the target is shorter; its padding 4.. maps to source positions 4.. even though source 4 and 5
/// are "a castle" (the reference's `mapper[len(y):] = len(y) + arange`).
#[test]
fn refine_shorter_target() {
    let mut s = EditSpec::new("children drawing of a castle");
    s.targets.push("a castle".into());
    let p = plan(&s, 10);
    let m = &p.mapper[0];
    assert_eq!(m[0], id(0));
    assert_eq!(m[1], vec![(4, 1.0)]);
    assert_eq!(m[2], vec![(5, 1.0)]);
    assert_eq!(m[3], vec![(6, 1.0)]);
    for n in 4..77 {
        assert_eq!(m[n], id(n));
    }
    assert!(p.r[0].iter().all(|&v| v == 0.0));
}

#[test]
fn explicit_refine_with_equal_word_counts() {
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.mode = Some(Mode::Refine);
    let p = plan(&s, 10);
    assert_eq!(p.mode, Mode::Refine);
    let m = &p.mapper[0];
    for n in 0..9 {
        assert_eq!(m[n], id(n));
    }
    assert!(m[9].is_empty());
    assert_eq!(p.r[0][9], 1.0);
    assert_eq!(m[10], id(10));
}

/// Reweight only: the target is the prompt itself, with the identity mapper, so E = eq · P_s.
#[test]
fn reweight_only() {
    let mut s = EditSpec::new(CAT_BICYCLE);
    s.reweights.push(("fluffy".into(), 2.5));
    let p = plan(&s, 50);
    check_shapes(&p, 50);
    assert_eq!(p.prompts, vec![CAT_BICYCLE.to_string(), CAT_BICYCLE.to_string()]);
    assert_eq!(p.mode, Mode::Replace);
    for n in 0..77 {
        assert_eq!(p.mapper[0][n], id(n));
        assert_eq!(p.eq[0][n], if n == 5 { 2.5 } else { 1.0 }, "eq {n}");
    }
    assert!(p.r[0].iter().all(|&v| v == 0.0));
}

#[test]
fn negative_and_repeated_word_reweight() {
    let mut s = EditSpec::new(CAT_BICYCLE);
    s.reweights.push(parse_reweight("fluffy=-2").unwrap());
    s.reweights.push(parse_reweight("a=0.5").unwrap());
    let p = plan(&s, 50);
    let eq = &p.eq[0];
    assert_eq!(eq[5], -2.0);
    for n in [1, 4, 8] {
        assert_eq!(eq[n], 0.5, "every \"a\"");
    }
    assert_eq!(eq.iter().filter(|&&v| v != 1.0).count(), 4);
    // A later factor for the same word wins (assignment, as `get_equalizer`).
    s.reweights.push(("fluffy".into(), 3.0));
    assert_eq!(plan(&s, 50).eq[0][5], 3.0);
}

/// Refine + reweight: "a cake with decorations" → "a cake with jelly beans decorations" with jelly ×2 (target
/// position 4); the alignment leaves jelly (4) and beans (5) unmatched.
#[test]
fn refine_and_reweight() {
    let mut s = EditSpec::new("a cake with decorations");
    s.targets.push("a cake with jelly beans decorations".into());
    s.reweights.push(("jelly".into(), 2.0));
    let p = plan(&s, 50);
    check_shapes(&p, 50);
    assert_eq!(p.mode, Mode::Refine);
    let (m, r, eq) = (&p.mapper[0], &p.r[0], &p.eq[0]);
    for n in 0..4 {
        assert_eq!(m[n], id(n));
    }
    assert!(m[4].is_empty() && m[5].is_empty());
    assert_eq!((r[4], r[5]), (1.0, 1.0));
    assert_eq!(m[6], vec![(4, 1.0)]);
    assert_eq!(m[7], vec![(5, 1.0)]);
    assert_eq!(eq[4], 2.0);
    assert_eq!(eq.iter().filter(|&&v| v != 1.0).count(), 1);
}

/// Swap + reweight on the target's word, with a second target that lacks it (skipped there).
#[test]
fn reweight_skips_targets_without_the_word() {
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.targets.push("a photo of a fluffy dog riding a bicycle".into());
    s.reweights.push(("car".into(), 0.0));
    let p = plan(&s, 50);
    check_shapes(&p, 50);
    assert_eq!(p.prompts.len(), 3);
    assert_eq!(p.mode, Mode::Replace);
    assert_eq!(p.eq[0][9], 0.0);
    assert!(p.eq[1].iter().all(|&v| v == 1.0));
}

#[test]
fn window_table_s50() {
    let p = plan(&swap(CAT_BICYCLE, "bicycle", "car"), 50);
    assert_eq!(p.alpha.len(), 51);
    for (row, a) in p.alpha.iter().enumerate() {
        let v = if row < 40 { 1.0 } else { 0.0 };
        assert!(a[0].iter().all(|&x| x == v), "row {row}");
    }
    assert_eq!(p.alpha.iter().filter(|a| a[0][0] == 1.0).count(), 40);
}

#[test]
fn window_table_s4_and_bounds() {
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    let p = plan(&s, 4);
    // int(0.8 · 5) = 4: rows 0..4 of 5.
    let col: Vec<f32> = p.alpha.iter().map(|a| a[0][3]).collect();
    assert_eq!(col, vec![1.0, 1.0, 1.0, 1.0, 0.0]);
    // int(0.4 · 4) = 1.
    assert_eq!(p.self_steps, (0, 1));
    s.cross_steps = win(0.2, 0.6);
    s.self_steps = win(0.25, 1.0);
    let p = plan(&s, 4);
    // int(0.2 · 5) = 1, int(0.6 · 5) = 3.
    let col: Vec<f32> = p.alpha.iter().map(|a| a[0][0]).collect();
    assert_eq!(col, vec![0.0, 1.0, 1.0, 0.0, 0.0]);
    assert_eq!(p.self_steps, (1, 4));
    s.cross_steps = win(0.0, 1.0);
    let p = plan(&s, 4);
    assert!(p.alpha.iter().all(|a| a[0].iter().all(|&x| x == 1.0)));
}

#[test]
fn self_window() {
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    assert_eq!(plan(&s, 50).self_steps, (0, 20));
    s.self_steps = win(0.2, 0.6);
    let p = plan(&s, 50);
    assert_eq!(p.self_steps, (10, 30));
    assert!(!p.self_active(9) && p.self_active(10) && p.self_active(29) && !p.self_active(30));
    s.self_steps = win(0.0, 0.0);
    assert_eq!(plan(&s, 50).self_steps, (0, 0));
}

/// Per-word windows override only that word's columns, in each target that has it.
#[test]
fn per_word_windows() {
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.targets.push("a photo of a fluffy dog riding a bicycle".into());
    s.cross_steps_word.push(parse_word_window("car=0.2:0.6").unwrap());
    s.cross_steps_word.push(parse_word_window("a=1").unwrap());
    let p = plan(&s, 50);
    check_shapes(&p, 50);
    for (row, a) in p.alpha.iter().enumerate() {
        let default = if row < 40 { 1.0 } else { 0.0 };
        let car = if (10..30).contains(&row) { 1.0 } else { 0.0 };
        for n in 0..77 {
            let want0 = match n {
                9 => car,
                1 | 4 | 8 => 1.0,
                _ => default,
            };
            let want1 = if matches!(n, 1 | 4 | 8) { 1.0 } else { default };
            assert_eq!(a[0][n], want0, "row {row} target 0 column {n}");
            assert_eq!(a[1][n], want1, "row {row} target 1 column {n}");
        }
    }
}

/// A multi-token word's window covers all its tokens.
#[test]
fn per_word_window_on_a_multi_token_word() {
    let mut s = swap("a dog on the grass", "dog", "hippopotamus");
    s.cross_steps_word.push(("hippopotamus".into(), win(0.0, 0.1)));
    let p = plan(&s, 10);
    // int(0.1 · 11) = 1.
    for (row, a) in p.alpha.iter().enumerate() {
        for n in 2..=4 {
            assert_eq!(a[0][n], if row < 1 { 1.0 } else { 0.0 });
        }
        assert_eq!(a[0][5], if row < 8 { 1.0 } else { 0.0 });
    }
}

#[test]
fn blend_positions() {
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.targets.push("a photo of a fluffy cat riding a red car".into());
    s.mode = Some(Mode::Refine);
    s.blend_words = parse_blend_words("bicycle,car").unwrap();
    s.blend_threshold = 0.25;
    s.blend_start = 0.2;
    let p = plan(&s, 50);
    let b = p.blend.as_ref().unwrap();
    assert_eq!(b.positions, vec![vec![9], vec![9], vec![10]]);
    assert_eq!(b.threshold, 0.25);
    assert_eq!(b.start_step, 10);
    // A word in several places and in every prompt; duplicates merge.
    s.blend_words = vec!["a".into(), "cat".into(), "a".into()];
    s.blend_start = 0.0;
    let b = plan(&s, 50).blend.unwrap();
    assert_eq!(b.positions, vec![vec![1, 4, 6, 8]; 3]);
    assert_eq!(b.start_step, 0);
}

#[test]
fn edit_data_rows() {
    let mut s = swap("a dog on the grass", "dog", "hippopotamus");
    s.targets.push("a cat on the grass".into());
    s.reweights.push(("cat".into(), -1.0));
    let p = plan(&s, 4);
    let d = p.edit_data(0).unwrap();
    assert_eq!((d.targets, d.keys), (2, 77));
    assert!(d.alpha.iter().all(|&v| v == 1.0));
    assert_eq!(d.eq[77 + 2], -1.0);
    assert_eq!(d.w_ptr.len(), 2 * 78);
    // Target 0 column 3: one entry, source 2, weight 1/3.
    let (a, b) = (d.w_ptr[3] as usize, d.w_ptr[4] as usize);
    assert_eq!(&d.w_idx[a..b], &[2]);
    assert_eq!(&d.w_weight[a..b], &[(1.0f64 / 3.0) as f32]);
    // Target 1 is the identity.
    let t1 = &d.w_ptr[78..];
    assert!(t1.windows(2).all(|w| w[1] - w[0] == 1));
    // Row 4 is past the window; rows past the table use its last row.
    assert!(p.edit_data(4).unwrap().alpha.iter().all(|&v| v == 0.0));
    assert_eq!(p.edit_data(100).unwrap(), p.edit_data(4).unwrap());
    assert_eq!(p.edit_data(3).unwrap().alpha, d.alpha);
}

#[test]
fn errors() {
    // A swap word that is not in the prompt.
    let e = error(&swap(CAT_BICYCLE, "dog", "car"), 50);
    assert!(e.contains("\"dog\"") && e.contains("not a word of the prompt"), "{e}");
    // Nothing to edit.
    assert_eq!(error(&EditSpec::new(CAT_BICYCLE), 50), "nothing to edit: give --swap, --target or --reweight");
    // A reweight word absent from every target.
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.reweights.push(("bicycle".into(), 2.0));
    let e = error(&s, 50);
    assert!(e.contains("--reweight") && e.contains("\"bicycle\""), "{e}");
    // Reweight only: absent from the prompt.
    let mut s = EditSpec::new(CAT_BICYCLE);
    s.reweights.push(("zebra".into(), 2.0));
    assert!(error(&s, 50).contains("\"zebra\""));
    // A blend word absent from every prompt.
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.blend_words = vec!["car".into(), "zebra".into()];
    let e = error(&s, 50);
    assert!(e.contains("--blend") && e.contains("\"zebra\""), "{e}");
    // A per-word window on a word absent from every target.
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.cross_steps_word.push(("bicycle".into(), win(0.0, 0.5)));
    assert!(error(&s, 50).contains("\"bicycle\""));
    // Replace with different word counts.
    let mut s = swap(CAT_BICYCLE, "bicycle", "red car");
    s.mode = Some(Mode::Replace);
    let e = error(&s, 50);
    assert!(e.contains("replace mode") && e.contains("9 words") && e.contains("10"), "{e}");
    // Windows out of range or not numbers.
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.cross_steps = win(0.0, 1.5);
    assert!(error(&s, 50).contains("window 1.5 is outside [0, 1]"));
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.self_steps = win(f64::NAN, 0.5);
    assert!(error(&s, 50).contains("not a number"));
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.cross_steps_word.push(("car".into(), win(0.7, 0.3)));
    assert!(error(&s, 50).contains("\"car\""));
    let mut s = EditSpec::new(CAT_BICYCLE);
    s.reweights.push(("cat".into(), f32::NAN));
    assert!(error(&s, 50).contains("not a finite number"));
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.blend_words = vec!["car".into()];
    s.blend_threshold = f32::INFINITY;
    assert!(error(&s, 50).contains("threshold"));
    // Zero steps.
    assert!(error(&swap(CAT_BICYCLE, "bicycle", "car"), 0).contains("step"));
    // A swapped word without a token of its own (double space: the empty word takes the next word's token).
    let e = error(&swap("a  cat", "cat", "dog"), 50);
    assert!(e.contains("\"cat\"") && e.contains("no token of its own"), "{e}");
    // The same word swapped twice.
    let mut s = swap(CAT_BICYCLE, "bicycle", "car");
    s.swaps.push(("bicycle".into(), "bus".into()));
    assert!(error(&s, 50).contains("more than once"));
}

#[test]
fn parsers() {
    assert_eq!(Window::parse("0.8").unwrap(), win(0.0, 0.8));
    assert_eq!(Window::parse("0.2:0.6").unwrap(), win(0.2, 0.6));
    assert_eq!(Window::parse("1.5").unwrap_err().to_string(), "window 1.5 is outside [0, 1]");
    assert!(Window::parse("0.6:0.2").is_err());
    assert!(Window::parse("NaN").unwrap_err().to_string().contains("not a number"));
    assert!(Window::parse("soon").unwrap_err().to_string().contains("\"soon\""));
    assert_eq!(parse_swap("bicycle=car").unwrap(), ("bicycle".into(), "car".into()));
    assert_eq!(parse_reweight("fluffy=-2").unwrap(), ("fluffy".into(), -2.0));
    assert_eq!(parse_reweight("fluffy=.5").unwrap(), ("fluffy".into(), 0.5));
    assert!(parse_reweight("fluffy=nan").is_err());
    assert!(parse_reweight("fluffy=inf").is_err());
    assert_eq!(parse_word_window("cat=0.2:0.6").unwrap(), ("cat".into(), win(0.2, 0.6)));
    assert_eq!(parse_blend_words("a,b").unwrap(), vec!["a".to_string(), "b".to_string()]);
}
