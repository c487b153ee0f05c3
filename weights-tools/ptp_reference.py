#!/usr/bin/env python3
"""A PyTorch reference of Prompt-to-Prompt editing for p2p-wgpu's parity tests.

This is OUR PORT (p2p-wgpu project). It is written from the semantics in docs/DESIGN.md §4 and §5, which describe the
behaviour of the original google/prompt-to-prompt notebooks (ptp_utils.get_word_inds, seq_aligner,
get_equalizer, get_time_words_attention_alpha, AttentionStore / AttentionControlEdit / AttentionReplace /
AttentionRefine / AttentionReweight, LocalBlend). No code is copied from that repository. Where the reference has a
behaviour that DESIGN.md calls a quirk (the replacement mapper after the last changed word), both the corrected
default and the reference behaviour (`compat_ptp=True`) are implemented.

Pinned environment: weights-tools/requirements.txt (torch 2.15 on CPU, diffusers 0.42.1, transformers 5.23.0).
It is a library; weights-tools/make_p2p_fixtures.py uses it to write tests/fixtures/p2p/.

What is here
------------
Host side (numbers that p2p-wgpu's `EditPlan` must reproduce exactly):

- `word_positions(tok, text, word)`: token positions (BOS = 0) of a word given as a string (every equal word of
  `text.split(" ")`) or as a word index. The word pointer stays on the last word where the reference would raise
  IndexError (the same defined behaviour as weights-tools/make_tokenizer_fixture.py).
- `replacement_mapper(tok, src, tgt, compat_ptp)`: dense W [77, 77] (W[w, n]: weight of source token w for target
  token n) for a word swap.
- `refinement_mapper(tok, src, tgt)`: (m [77] int, a [77] float): Needleman-Wunsch on the token ids with BOS/EOS.
- `equalizer(tok, text, reweights)`: eq [77].
- `cross_window_table(...)`: alpha [S+1, T, 77]; `self_window(S, window)`: (start, end) evaluation indices.
- `build_plan(spec, tok, steps)`: everything above for one `EditSpec` (mirrors src/p2p/plan.rs).

Device side:

- `P2PController` + `P2PAttnProcessor`: a diffusers attention processor for every `attn1` / `attn2` of the UNet
  (set with `install(unet, controller)`), computing probabilities explicitly: P = softmax(Q K^T * scale) in f32.
  The UNet batch is the CFG batch [uncond x B, cond x B]; only the conditional half is touched, and in it only the
  target rows 1..B-1 (row 0 = source):
    cross layers, every evaluation:  E_b  = eq_b * (P_s . W_b + r_b * P_b)
                                      P'_b = alpha_b[eval] * E_b + (1 - alpha_b[eval]) * P_b
    self layers, evaluations in the self window and with at most `self_max_queries` query tokens:
                                      P'_b = P_s            (so out_b = P_s . V_b)
  Evaluations are counted per UNet call (PNDM with S steps makes S + 1 calls); the alpha row used is the
  evaluation index (clamped to the table's last row).
- Attention store: for the conditional rows, the head-mean of the EDITED cross maps of every layer whose query
  count is blend_res^2, summed over those layers (per-evaluation store [B, blend_res^2, 77]), then added into a
  running sum over evaluations. Local blending reads the running sum including the current evaluation.
- Local blend (`blend_masks`): per prompt the sum over its blend tokens, divided by the number of store layers
  (= mean over heads and layers when every store layer has the same head count), 3x3 max-pool (stride 1, pad 1),
  nearest upsample to the latent size, divide by the image's own max, threshold strictly > t, OR with the
  source's mask; then x_b <- x_src + mask_b * (x_b - x_src) on all channels after every scheduler step whose index
  (= evaluation index) is >= start_step = int(blend_start * S).
- `generate(...)`: the sampling loop of diffusers' StableDiffusionPipeline (text embeddings [uncond x B, cond x B],
  negative prompt "", classifier-free guidance, the model's PNDM or a DDIM built from the same config, one initial
  latent shared by every prompt), then the decode (latents / scaling_factor -> VAE -> (x/2+0.5).clamp(0,1)).

Decisions where DESIGN.md leaves room (also listed in tests/fixtures/p2p/manifest.json):

- corrected replacement mapper: the reference loop unchanged except that tokens after the last changed word map
  source i -> target j (shifted) instead of j -> j. Where a length-changing swap pushes i or j past 76, the loop
  stops as in the reference, so the target's last padding columns are left empty (W column = 0, E = 0 there).
- blend resolution: the layers with (latent side / 4)^2 query tokens. The tiny test UNet (8x8 latents) has cross
  attention only at 8x8 and 4x4, so `default_blend_res` takes the smallest cross-attention side >= latent side / 4
  (16 for SD at 64x64 latents, 4 for the tiny model); the fixtures record the value used.
- a prompt without any blend token gets a zero map; 0/0 is NaN and NaN > t is false, so its own mask is empty
  (the same as the reference, which computes exactly that in torch). An image whose max is 0 likewise gets no mask.
- reweight with no target: the target is the source prompt itself (W = identity, r = 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

MAX_LEN = 77
SELF_MAX_QUERIES = 16 * 16

# --------------------------------------------------------------------------------------------------------------
# words and tokens


def decoded_tokens(tok, text: str) -> list[str]:
    """Decoded text of each token of `text` (untruncated, without BOS/EOS), '#' stripped at both ends."""
    return [tok.decode([t]).strip("#") for t in tok.encode(text)[1:-1]]


def word_positions(tok, text: str, word) -> list[int]:
    """Token positions (BOS = 0) of `word`: a string (every word of text.split(' ') equal to it) or a word index.

    Walk the tokens, accumulating decoded lengths; a token belongs to the word under the pointer; the pointer moves
    on once the accumulated length reaches that word's length (and stays on the last word)."""
    words = text.split(" ")
    if isinstance(word, str):
        wanted = {i for i, w in enumerate(words) if w == word}
    else:
        wanted = {int(word)}
    if not wanted:
        return []
    out = []
    acc, ptr, last = 0, 0, len(words) - 1
    for i, piece in enumerate(decoded_tokens(tok, text)):
        acc += len(piece)
        if ptr in wanted:
            out.append(i + 1)
        if acc >= len(words[ptr]):
            ptr = min(ptr + 1, last)
            acc = 0
    return out


# --------------------------------------------------------------------------------------------------------------
# mappers


def replacement_mapper(tok, src: str, tgt: str, compat_ptp: bool = False, max_len: int = MAX_LEN) -> np.ndarray:
    """Dense W [max_len, max_len] for a word swap: W[w, n] is the weight of source token w for target token n."""
    ws, wt = src.split(" "), tgt.split(" ")
    if len(ws) != len(wt):
        raise ValueError(f"a word swap needs the same word count: {src!r} has {len(ws)} words, "
                         f"{tgt!r} has {len(wt)}")
    changed = [k for k in range(len(wt)) if ws[k] != wt[k]]
    src_pos = [word_positions(tok, src, k) for k in changed]
    tgt_pos = [word_positions(tok, tgt, k) for k in changed]
    w = np.zeros((max_len, max_len), dtype=np.float64)
    i = j = c = 0
    while i < max_len and j < max_len:
        if c < len(changed) and src_pos[c][0] == i:
            sp, tp = src_pos[c], tgt_pos[c]
            if len(sp) == len(tp):
                for a, b in zip(sp, tp):
                    w[a, b] = 1.0
            else:
                for b in tp:
                    for a in sp:
                        w[a, b] = 1.0 / len(tp)
            c += 1
            i += len(sp)
            j += len(tp)
        elif c < len(changed):
            w[i, j] = 1.0
            i += 1
            j += 1
        else:
            # after the last changed word: the reference writes w[j, j] (the quirk); corrected: w[i, j]
            w[j if compat_ptp else i, j] = 1.0
            i += 1
            j += 1
    return w.astype(np.float32)


def needleman_wunsch(x: Sequence[int], y: Sequence[int], gap: int = 0, match: int = 1, mismatch: int = -1):
    """Global alignment of x (source) and y (target). Returns, for every y index, its x index or -1.

    Scores: gap 0, match +1, mismatch -1. On equal scores the move is chosen in the order insertion (consume y
    only), deletion (consume x only), diagonal."""
    nx, ny = len(x), len(y)
    score = np.zeros((nx + 1, ny + 1), dtype=np.int64)
    move = np.zeros((nx + 1, ny + 1), dtype=np.int64)  # 1 insertion, 2 deletion, 3 diagonal, 4 origin
    score[0, 1:] = gap * np.arange(1, ny + 1)
    score[1:, 0] = gap * np.arange(1, nx + 1)
    move[0, 1:] = 1
    move[1:, 0] = 2
    move[0, 0] = 4
    for i in range(1, nx + 1):
        for j in range(1, ny + 1):
            ins = score[i, j - 1] + gap
            dele = score[i - 1, j] + gap
            diag = score[i - 1, j - 1] + (match if x[i - 1] == y[j - 1] else mismatch)
            best = max(ins, dele, diag)
            score[i, j] = best
            move[i, j] = 1 if best == ins else (2 if best == dele else 3)
    src_of = [-1] * ny
    i, j = nx, ny
    while i > 0 or j > 0:
        m = move[i, j]
        if m == 3:
            i, j = i - 1, j - 1
            src_of[j] = i
        elif m == 1:
            j -= 1
            src_of[j] = -1
        elif m == 2:
            i -= 1
        else:
            break
    return src_of


def refinement_mapper(tok, src: str, tgt: str, max_len: int = MAX_LEN):
    """(m [max_len] int64, a [max_len] f32): target token n takes source token m[n] with weight a[n] (a = 0: none).

    Aligns the full token-id sequences (BOS and EOS included); target positions past its EOS (padding) map to the
    same index with a = 1."""
    x, y = tok.encode(src), tok.encode(tgt)
    if len(y) > max_len or len(x) > max_len:
        raise ValueError("prompt longer than the token limit")
    src_of = needleman_wunsch(x, y)
    m = np.arange(max_len, dtype=np.int64)
    a = np.ones(max_len, dtype=np.float32)
    for n, s in enumerate(src_of):
        m[n] = s
        a[n] = 0.0 if s < 0 else 1.0
    return m, a


def equalizer(tok, text: str, reweights: Sequence[tuple[str, float]], max_len: int = MAX_LEN) -> np.ndarray:
    """eq [max_len]: 1, and each reweighted word's factor on all its token positions in `text` (the target)."""
    eq = np.ones(max_len, dtype=np.float32)
    for word, factor in reweights:
        for p in word_positions(tok, text, word):
            eq[p] = np.float32(factor)
    return eq


# --------------------------------------------------------------------------------------------------------------
# windows


def parse_window(spec) -> tuple[float, float]:
    """"F" or F -> (0, F); "S:E" or (S, E) -> (S, E)."""
    if isinstance(spec, (tuple, list)):
        return float(spec[0]), float(spec[1])
    if isinstance(spec, (int, float)):
        return 0.0, float(spec)
    if ":" in spec:
        s, e = spec.split(":", 1)
        return float(s), float(e)
    return 0.0, float(spec)


def window_rows(window: tuple[float, float], rows: int) -> tuple[int, int]:
    s, e = window
    return int(s * rows), int(e * rows)


def cross_window_table(tok, targets: Sequence[str], steps: int, default: tuple[float, float],
                       word_windows: Sequence[tuple[str, tuple[float, float]]] = (),
                       max_len: int = MAX_LEN) -> np.ndarray:
    """alpha [S+1, T, max_len]: rows [int(s*(S+1)), int(e*(S+1))) are 1, others 0; per-word windows override the
    default on that word's token columns in each target (skipped where the word is absent)."""
    rows = steps + 1
    alpha = np.zeros((rows, len(targets), max_len), dtype=np.float32)
    s, e = window_rows(default, rows)
    alpha[s:e, :, :] = 1.0
    for word, win in word_windows:
        ws, we = window_rows(win, rows)
        for t, text in enumerate(targets):
            pos = word_positions(tok, text, word)
            if not pos:
                continue
            alpha[:, t, pos] = 0.0
            alpha[ws:we, t, pos] = 1.0
    return alpha


def self_window(steps: int, window: tuple[float, float]) -> tuple[int, int]:
    """Self-attention injection on evaluations [int(s*S), int(e*S)) (S, not S+1)."""
    return window_rows(window, steps)


# --------------------------------------------------------------------------------------------------------------
# the edit spec and plan (mirrors src/p2p/plan.rs)


@dataclass
class EditSpec:
    prompt: str
    swaps: list = field(default_factory=list)          # [(old, new)] -> ONE target, every `old` word replaced
    targets: list = field(default_factory=list)        # more full target prompts (after the swap target)
    mode: Optional[str] = None                         # "replace" | "refine" | None (auto)
    reweights: list = field(default_factory=list)      # [(word, factor)] on each target
    blend_words: list = field(default_factory=list)
    blend_threshold: float = 0.3
    blend_start: float = 0.0
    cross_steps: tuple = (0.0, 0.8)
    cross_steps_word: list = field(default_factory=list)  # [(word, (s, e))]
    self_steps: tuple = (0.0, 0.4)
    compat_ptp: bool = False


@dataclass
class Plan:
    prompts: list
    mode: str
    mapper: np.ndarray      # [T, 77, 77] dense W
    r: np.ndarray           # [T, 77]
    eq: np.ndarray          # [T, 77]
    alpha: np.ndarray       # [S+1, T, 77]
    self_window: tuple      # (start, end) evaluation indices
    blend_positions: Optional[list]  # per prompt (source first), or None without blending
    blend_threshold: float
    blend_start_step: int
    refine_m: Optional[np.ndarray] = None  # [T, 77] (refine only; -1 = none)
    refine_a: Optional[np.ndarray] = None  # [T, 77]


def apply_swaps(prompt: str, swaps) -> str:
    words = prompt.split(" ")
    for old, new in swaps:
        if old not in words:
            raise ValueError(f"--swap {old}={new}: {old!r} is not a word of {prompt!r}")
        words = [new if w == old else w for w in words]
    return " ".join(words)


def build_plan(spec: EditSpec, tok, steps: int, max_len: int = MAX_LEN) -> Plan:
    targets = []
    if spec.swaps:
        targets.append(apply_swaps(spec.prompt, spec.swaps))
    targets += list(spec.targets)
    if not targets:
        if not spec.reweights:
            raise ValueError("nothing to edit")
        targets = [spec.prompt]
    nwords = len(spec.prompt.split(" "))
    mode = spec.mode or ("replace" if all(len(t.split(" ")) == nwords for t in targets) else "refine")
    T = len(targets)
    mapper = np.zeros((T, max_len, max_len), dtype=np.float32)
    r = np.zeros((T, max_len), dtype=np.float32)
    ms, as_ = [], []
    for t, text in enumerate(targets):
        if mode == "replace":
            mapper[t] = replacement_mapper(tok, spec.prompt, text, spec.compat_ptp, max_len)
        else:
            m, a = refinement_mapper(tok, spec.prompt, text, max_len)
            for n in range(max_len):
                if m[n] >= 0 and a[n] != 0:
                    mapper[t, m[n], n] = a[n]
            r[t] = 1.0 - a
            ms.append(m)
            as_.append(a)
    for word, _ in spec.reweights:
        if not any(word_positions(tok, text, word) for text in targets):
            raise ValueError(f"--reweight {word}: not a word of any target")
    eq = np.stack([equalizer(tok, text, spec.reweights, max_len) for text in targets])
    alpha = cross_window_table(tok, targets, steps, parse_window(spec.cross_steps),
                               [(w, parse_window(win)) for w, win in spec.cross_steps_word], max_len)
    prompts = [spec.prompt] + targets
    blend = None
    if spec.blend_words:
        blend = [sorted({p for w in spec.blend_words for p in word_positions(tok, text, w)}) for text in prompts]
    return Plan(
        prompts=prompts, mode=mode, mapper=mapper, r=r, eq=eq, alpha=alpha,
        self_window=self_window(steps, parse_window(spec.self_steps)),
        blend_positions=blend, blend_threshold=float(spec.blend_threshold),
        blend_start_step=int(float(spec.blend_start) * steps),
        refine_m=np.stack(ms) if ms else None, refine_a=np.stack(as_) if as_ else None,
    )


# --------------------------------------------------------------------------------------------------------------
# the controller and the attention processor


class P2PController:
    """Holds the edit tables and the attention store; the sampling loop sets `eval_index` before each UNet call
    and calls `end_eval()` after it."""

    def __init__(self, batch: int, plan: Optional[Plan] = None, blend_res: Optional[int] = None,
                 self_max_queries: int = SELF_MAX_QUERIES, enabled: bool = True):
        self.batch = batch
        self.enabled = enabled and plan is not None
        self.self_max_queries = self_max_queries
        self.blend_res = blend_res
        self.eval_index = 0
        if plan is not None:
            assert len(plan.prompts) == batch
            self.W = torch.from_numpy(plan.mapper).float()       # [T, 77, 77]
            self.r = torch.from_numpy(plan.r).float()            # [T, 77]
            self.eq = torch.from_numpy(plan.eq).float()          # [T, 77]
            self.alpha = torch.from_numpy(plan.alpha).float()    # [S+1, T, 77]
            self.self_window = plan.self_window
        self.step_store = None      # [B, res^2, 77], this evaluation
        self.running_store = None   # [B, res^2, 77], sum over evaluations so far
        self.store_layers = set()   # names of the layers that fed the store
        self.layer_log = {}         # name -> (is_cross, query count, heads)

    # -- cross attention
    def edit_cross(self, probs: torch.Tensor, heads: int) -> torch.Tensor:
        """probs [2B*h, q, 77] (batch-major: index = row * h + head) -> edited copy."""
        if not self.enabled or self.batch < 2:
            return probs
        B = self.batch
        p = probs.reshape(2, B, heads, *probs.shape[1:])
        cond = p[1]
        ps, pb = cond[0], cond[1:]                                        # [h,q,77], [T,h,q,77]
        row = min(self.eval_index, self.alpha.shape[0] - 1)
        a = self.alpha[row][:, None, None, :]                             # [T,1,1,77]
        mapped = torch.einsum("hqw,twn->thqn", ps, self.W)
        e = self.eq[:, None, None, :] * (mapped + self.r[:, None, None, :] * pb)
        new_pb = a * e + (1 - a) * pb
        out = p.clone()
        out[1, 1:] = new_pb
        return out.reshape(probs.shape)

    # -- self attention
    def edit_self(self, probs: torch.Tensor, heads: int) -> torch.Tensor:
        if not self.enabled or self.batch < 2:
            return probs
        s, e = self.self_window
        if not (s <= self.eval_index < e) or probs.shape[1] > self.self_max_queries:
            return probs
        B = self.batch
        p = probs.reshape(2, B, heads, *probs.shape[1:])
        out = p.clone()
        out[1, 1:] = p[1, 0][None]
        return out.reshape(probs.shape)

    # -- store
    def store(self, name: str, probs: torch.Tensor, heads: int) -> None:
        if self.blend_res is None or probs.shape[1] != self.blend_res * self.blend_res:
            return
        B = self.batch
        cond = probs.reshape(2, B, heads, *probs.shape[1:])[1]            # [B,h,q,77]
        m = cond.mean(dim=1)
        self.store_layers.add(name)
        self.step_store = m.clone() if self.step_store is None else self.step_store + m

    def end_eval(self) -> None:
        if self.step_store is not None:
            if self.running_store is None:
                self.running_store = self.step_store
            else:
                self.running_store = self.running_store + self.step_store
        self.step_store = None


class P2PAttnProcessor:
    """diffusers attention processor (the computation of diffusers' AttnProcessor with the probabilities made
    explicit in f32) that hands them to the controller."""

    def __init__(self, controller: P2PController, name: str):
        self.controller = controller
        self.name = name
        self.is_cross = ".attn2." in name or name.endswith("attn2.processor")

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape)
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        dtype = query.dtype
        query = attn.head_to_batch_dim(query).float()
        key = attn.head_to_batch_dim(key).float()
        value = attn.head_to_batch_dim(value)

        if attention_mask is None:
            scores = torch.baddbmm(torch.empty(query.shape[0], query.shape[1], key.shape[1], dtype=torch.float32),
                                   query, key.transpose(-1, -2), beta=0, alpha=attn.scale)
        else:
            scores = torch.baddbmm(attention_mask.float(), query, key.transpose(-1, -2), beta=1, alpha=attn.scale)
        probs = scores.softmax(dim=-1)

        ctl = self.controller
        ctl.layer_log[self.name] = (self.is_cross, probs.shape[1], attn.heads)
        if self.is_cross:
            probs = ctl.edit_cross(probs, attn.heads)
            ctl.store(self.name, probs, attn.heads)
        else:
            probs = ctl.edit_self(probs, attn.heads)

        hidden_states = torch.bmm(probs.to(dtype), value)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        hidden_states = hidden_states / attn.rescale_output_factor
        return hidden_states


def install(unet, controller: P2PController) -> list[str]:
    """Give every attention layer of the UNet its own P2PAttnProcessor. Returns the layer names."""
    names = list(unet.attn_processors.keys())
    unet.set_attn_processor({n: P2PAttnProcessor(controller, n) for n in names})
    return names


def cross_attention_sides(unet, latent_hw: tuple[int, int]) -> list[int]:
    """Sides (in latent cells, square latents) of the UNet's cross-attention layers, by a dry run."""
    ctl = P2PController(1, None)
    install(unet, ctl)
    h, w = latent_hw
    with torch.no_grad():
        unet(torch.zeros(1, unet.config.in_channels, h, w), 1,
             encoder_hidden_states=torch.zeros(1, MAX_LEN, unet.config.cross_attention_dim))
    return sorted({int(round(q ** 0.5)) for c, q, _ in ctl.layer_log.values() if c})


def default_blend_res(unet, latent_side: int) -> int:
    """latent side / 4 (16 for SD at 64x64 latents) when the UNet has cross attention there, else the smallest
    cross-attention side above it (the tiny test UNet: 4)."""
    sides = cross_attention_sides(unet, (latent_side, latent_side))
    want = latent_side // 4
    above = [s for s in sides if s >= want]
    return min(above) if above else max(sides)


# --------------------------------------------------------------------------------------------------------------
# local blend


def blend_masks(running: torch.Tensor, positions: Sequence[Sequence[int]], n_layers: int, res: int,
                latent_hw: tuple[int, int], threshold: float):
    """running [B, res^2, 77] -> (mask [B,1,H,W] float, own mask [B,1,H,W] bool (before the OR), normalised map
    [B,1,H,W], per-row max).

    Row 0 is the source's own mask; rows b >= 1 are (target b's mask) OR (source's mask)."""
    B = running.shape[0]
    sel = torch.zeros(B, running.shape[-1], dtype=running.dtype)
    for b, pos in enumerate(positions):
        sel[b, list(pos)] = 1.0
    maps = (running * sel[:, None, :]).sum(-1) / n_layers             # [B, res^2]
    maps = maps.reshape(B, 1, res, res)
    maps = F.max_pool2d(maps, (3, 3), (1, 1), padding=(1, 1))
    maps = F.interpolate(maps, size=latent_hw)                        # nearest
    mx = maps.amax(dim=(2, 3), keepdim=True)
    norm = maps / mx
    own = norm.gt(threshold)
    mask = own[:1] | own
    return mask.float(), own, norm, mx.reshape(B)


# --------------------------------------------------------------------------------------------------------------
# sampling


@torch.no_grad()
def encode(tok, te, prompts: Sequence[str]) -> torch.Tensor:
    ids = tok(list(prompts), padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids
    return ids, te(ids)[0]


@torch.no_grad()
def generate(pipe, prompts: Sequence[str], latents: torch.Tensor, scheduler, steps: int, guidance: float = 7.5,
             plan: Optional[Plan] = None, blend_res: Optional[int] = None, self_max_queries: int = SELF_MAX_QUERIES,
             negative: str = "", edit: bool = True, pin: Optional[torch.Tensor] = None) -> dict:
    """One batch of prompts (row 0 = source) from one shared initial latent [1, C, h, w].

    With plan=None or edit=False the attention processors are still ours but change nothing (plain generation).
    pin (direct inversion, Ju et al.): the inversion latents [S+1, 1, C, h, w]; after scheduler step i (before local
    blending) the offset pin[S-1-i] - x[0] is added to the source row only, as PnP Inversion does.
    """
    tok, te, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    B = len(prompts)
    ids, cond = encode(tok, te, prompts)
    _, uncond = encode(tok, te, [negative] * B)
    emb = torch.cat([uncond, cond])
    ctl = P2PController(B, plan, blend_res=blend_res if (plan is not None and plan.blend_positions) else None,
                        self_max_queries=self_max_queries, enabled=edit)
    install(unet, ctl)
    scheduler.set_timesteps(steps)
    x = latents.expand(B, *latents.shape[1:]).clone() * scheduler.init_noise_sigma
    h, w = x.shape[-2:]
    step_latents, mask_last, mask_info = [], None, []
    do_blend = edit and plan is not None and plan.blend_positions is not None and B > 1
    for i, t in enumerate(scheduler.timesteps):
        ctl.eval_index = i
        inp = scheduler.scale_model_input(torch.cat([x] * 2), t)
        noise = unet(inp, t, encoder_hidden_states=emb).sample
        nu, nc = noise.chunk(2)
        noise = nu + guidance * (nc - nu)
        x = scheduler.step(noise, t, x, return_dict=False)[0]
        if pin is not None:
            offset = pin[len(scheduler.timesteps) - 1 - i] - x[:1]
            x = torch.cat([x[:1] + offset, x[1:]])
        ctl.end_eval()
        if do_blend and i >= plan.blend_start_step:
            mask, own, norm, mx = blend_masks(ctl.running_store, plan.blend_positions, len(ctl.store_layers), blend_res,
                                         (h, w), plan.blend_threshold)
            x = x[:1] + mask * (x - x[:1])
            mask_last = mask
            fin = torch.isfinite(norm)
            margin = float((norm[fin] - plan.blend_threshold).abs().min()) if bool(fin.any()) else float("inf")
            mask_info.append({"eval": i, "margin": margin, "row_max": [float(v) for v in mx],
                              "mask_cells": [int(v) for v in mask.reshape(B, -1).sum(1)],
                              "own_mask_cells": [int(v) for v in own.reshape(B, -1).sum(1)]})
        step_latents.append(x.clone())
    image = (vae.decode(x / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    return {
        "input_ids": ids,
        "timesteps": [int(t) for t in scheduler.timesteps],
        "final_latents": x,
        "step_latents": torch.stack(step_latents),
        "image": image,
        "blend_mask_last": mask_last,
        "blend_info": mask_info,
        "store_layers": sorted(ctl.store_layers),
        "layer_log": dict(ctl.layer_log),
    }
