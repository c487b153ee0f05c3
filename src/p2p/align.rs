//! Refinement: the Needleman–Wunsch alignment of the source and target token ids, exactly as google/prompt-to-prompt's
//! `seq_aligner.global_align` / `get_aligned_sequences` / `get_mapper` (docs/DESIGN.md §5).
//!
//! - The score matrix has `len(x)+1` rows and `len(y)+1` columns; row 0 and column 0 hold `k·gap`.
//! - Each cell is `max(left, up, diag)` with `left = M[i][j-1] + gap`, `up = M[i-1][j] + gap`,
//!   `diag = M[i-1][j-1] + (match if x[i-1] == y[j-1] else mismatch)`; the traceback records the first of left
//!   (insertion in y), up (deletion from x), diag that equals the maximum.
//! - The walk back from `(len(x), len(y))` gives each y position its x position (diagonal) or none (insertion).
//!   A diagonal step is taken on a mismatch too; with gap 0 and mismatch −1 it is never the maximum's first
//!   choice, so in practice only equal tokens are paired.
use super::plan::Mode;

/// The reference's scores: gap 0, match +1, mismatch −1 (`ScoreParams(0, 1, -1)`).
pub const GAP: i32 = 0;
pub const MATCH: i32 = 1;
pub const MISMATCH: i32 = -1;

const LEFT: u8 = 1;
const UP: u8 = 2;
const DIAG: u8 = 3;
const DONE: u8 = 4;

/// For each position of `y`, the position of `x` it is aligned with, or `None` (`get_aligned_sequences`'s
/// `mapper_y_to_x`, with −1 as `None`).
pub fn align<T: PartialEq>(x: &[T], y: &[T]) -> Vec<Option<usize>> {
    let (nx, ny) = (x.len(), y.len());
    let w = ny + 1;
    let mut score = vec![0i32; (nx + 1) * w];
    let mut trace = vec![0u8; (nx + 1) * w];
    for j in 1..=ny {
        score[j] = j as i32 * GAP;
        trace[j] = LEFT;
    }
    for i in 1..=nx {
        score[i * w] = i as i32 * GAP;
        trace[i * w] = UP;
    }
    trace[0] = DONE;
    for i in 1..=nx {
        for j in 1..=ny {
            let left = score[i * w + j - 1] + GAP;
            let up = score[(i - 1) * w + j] + GAP;
            let diag = score[(i - 1) * w + j - 1] + if x[i - 1] == y[j - 1] { MATCH } else { MISMATCH };
            let best = left.max(up).max(diag);
            score[i * w + j] = best;
            trace[i * w + j] = if best == left {
                LEFT
            } else if best == up {
                UP
            } else {
                DIAG
            };
        }
    }
    let mut out = vec![None; ny];
    let (mut i, mut j) = (nx, ny);
    while i > 0 || j > 0 {
        match trace[i * w + j] {
            DIAG => {
                i -= 1;
                j -= 1;
                out[j] = Some(i);
            }
            LEFT => j -= 1,
            UP => i -= 1,
            _ => break,
        }
    }
    out
}

/// The refinement mapper of one target (`seq_aligner.get_mapper`): `x` and `y` are the source and target ids with
/// BOS and EOS, without padding, each at most `keys` long. Returns, per target position n < `keys`, the mapper
/// column (the aligned source position with weight a = 1, or nothing when a = 0; padding positions n ≥ len(y) map
/// to n with a = 1) and `r[n] = 1 − a[n]`.
///
/// The reference indexes source position −1 (the last one) with weight 0 for an unmatched token; that term is 0, so
/// no entry is emitted.
pub fn refinement_mapper(x: &[u32], y: &[u32], keys: usize) -> (Vec<Vec<(u32, f32)>>, Vec<f32>) {
    let aligned = align(x, y);
    let mut cols = Vec::with_capacity(keys);
    let mut r = Vec::with_capacity(keys);
    for n in 0..keys {
        match aligned.get(n) {
            Some(Some(m)) => {
                cols.push(vec![(*m as u32, 1.0)]);
                r.push(0.0);
            }
            Some(None) => {
                cols.push(Vec::new());
                r.push(1.0);
            }
            None => {
                cols.push(vec![(n as u32, 1.0)]);
                r.push(0.0);
            }
        }
    }
    (cols, r)
}

/// The automatic mode: Replace when every target has the prompt's word count (`split(" ")`), else Refine.
pub fn auto_mode(prompt: &str, targets: &[String]) -> Mode {
    let n = prompt.split(' ').count();
    if targets.iter().all(|t| t.split(' ').count() == n) { Mode::Replace } else { Mode::Refine }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct transcription of the reference (score and traceback matrices, then the walk), as an oracle.
    fn reference(x: &[u32], y: &[u32]) -> Vec<i64> {
        let (nx, ny) = (x.len(), y.len());
        let mut m = vec![vec![0i32; ny + 1]; nx + 1];
        let mut tb = vec![vec![0u8; ny + 1]; nx + 1];
        for cell in tb[0].iter_mut().skip(1) {
            *cell = 1;
        }
        for row in tb.iter_mut().skip(1) {
            row[0] = 2;
        }
        tb[0][0] = 4;
        for i in 1..=nx {
            for j in 1..=ny {
                let left = m[i][j - 1];
                let up = m[i - 1][j];
                let diag = m[i - 1][j - 1] + if x[i - 1] != y[j - 1] { -1 } else { 1 };
                m[i][j] = left.max(up).max(diag);
                tb[i][j] = if m[i][j] == left {
                    1
                } else if m[i][j] == up {
                    2
                } else {
                    3
                };
            }
        }
        let (mut i, mut j) = (nx, ny);
        let mut mapper = Vec::new();
        while i > 0 || j > 0 {
            if tb[i][j] == 3 {
                i -= 1;
                j -= 1;
                mapper.push((j, i as i64));
            } else if tb[i][j] == 1 {
                j -= 1;
                mapper.push((j, -1));
            } else if tb[i][j] == 2 {
                i -= 1;
            } else {
                break;
            }
        }
        mapper.reverse();
        mapper.iter().map(|p| p.1).collect()
    }

    fn as_ref(a: &[Option<usize>]) -> Vec<i64> {
        a.iter().map(|m| m.map_or(-1, |v| v as i64)).collect()
    }

    #[test]
    fn insertion_before() {
        // [BOS a castle EOS] → [BOS children drawing of a castle EOS]
        let x = [0, 10, 11, 1];
        let y = [0, 20, 21, 22, 10, 11, 1];
        let a = align(&x, &y);
        assert_eq!(a, vec![Some(0), None, None, None, Some(1), Some(2), Some(3)]);
        assert_eq!(as_ref(&a), reference(&x, &y));
    }

    #[test]
    fn substitution_is_insert_plus_delete() {
        // A swapped token is unmatched (mismatch −1 < 0 of a gap pair).
        let x = [0, 10, 11, 12, 1];
        let y = [0, 10, 13, 12, 1];
        assert_eq!(align(&x, &y), vec![Some(0), Some(1), None, Some(3), Some(4)]);
    }

    #[test]
    fn ties() {
        // Source "a a", target "a": walking back from the end, (3, 2) takes up (left scores less), so the target's
        // "a" pairs with the first source "a".
        let x = [0, 5, 5, 1];
        let y = [0, 5, 1];
        assert_eq!(align(&x, &y), vec![Some(0), Some(1), Some(3)]);
        assert_eq!(as_ref(&align(&x, &y)), reference(&x, &y));
        // Source "a", target "a a": at (2, 3) left ties with diag and wins, so the second target "a" is the insertion.
        let x = [0, 5, 1];
        let y = [0, 5, 5, 1];
        assert_eq!(align(&x, &y), vec![Some(0), Some(1), None, Some(2)]);
        assert_eq!(as_ref(&align(&x, &y)), reference(&x, &y));
    }

    #[test]
    fn matches_the_transcription_on_pseudo_random_sequences() {
        let mut state = 0x2545_f491_u64;
        let mut next = |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m) as u32
        };
        for _ in 0..500 {
            let (lx, ly) = (next(9) as usize, next(9) as usize);
            let x: Vec<u32> = (0..lx).map(|_| next(4)).collect();
            let y: Vec<u32> = (0..ly).map(|_| next(4)).collect();
            assert_eq!(as_ref(&align(&x, &y)), reference(&x, &y), "{x:?} {y:?}");
        }
    }

    #[test]
    fn refinement_columns() {
        let x = [0, 10, 11, 1];
        let y = [0, 20, 10, 11, 1];
        let (cols, r) = refinement_mapper(&x, &y, 8);
        assert_eq!(cols[0], vec![(0, 1.0)]);
        assert!(cols[1].is_empty());
        assert_eq!(r[1], 1.0);
        assert_eq!(cols[2], vec![(1, 1.0)]);
        assert_eq!(cols[4], vec![(3, 1.0)]);
        for n in 5..8 {
            assert_eq!(cols[n], vec![(n as u32, 1.0)]);
            assert_eq!(r[n], 0.0);
        }
    }
}
