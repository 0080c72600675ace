"""Lossless coding of integer planes for the "rans" embedding dtype: MED prediction, context-modelled rANS.

Everything here is integer arithmetic on numpy int64 arrays, so static/js/embedding.js can reproduce the
decoder exactly; embedding_codec.py documents the byte layout and does the quantisation around it.

    levels q (P, H, W) --MED--> residuals r --zig-zag--> z >= 0 --tokens--> token + raw bits --rANS--> words

MED (the median edge detector of LOCO-I / JPEG-LS) predicts each level from its left, upper and
upper-left neighbours: the rows of an embedding plane change smoothly except at object edges, where
MED picks the side of the edge. Residuals are zig-zagged (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...) and
split into a token (z itself below DIRECT_TOKENS, else the bit length and the bit below the leading
one) and the remaining low bits, stored raw: those are close to uniform, the token carries the shape
of the distribution. A token's context is the activity around it: the sum of |r| left-above,
2 x above, right-above and two rows above, bucketed at the thresholds the encoder lists (a third of
an octave apart). Each context has its own token frequencies (12-bit), stored in the blob.

rANS (Duda's range asymmetric numeral systems): 32-bit states, 16-bit words. The planes are cut into
lanes of `lane_width` columns (lane l: plane l // (W / lane_width), columns from
(l % (W / lane_width)) * lane_width); each lane has its own state, all lanes share one word stream.
Symbols are coded row by row; within a row, column j of every lane is one step. A step decodes, in this
order, every lane's token (lanes in order), then the high raw bits of the tokens with more than
RAW_CHUNK raw bits, then every lane's (remaining) low raw bits. After each of these a lane whose
state fell below 2^16 reads the next word of the stream (lanes in order). The stream opens with
every lane's initial state (low word, then high word), and each lane ends at state 2^16, which the
decoder checks. Contexts depend only on rows above, so a whole row of contexts is known before the
row is decoded: the numpy decoder works on all lanes at once, and so does the encoder.
"""

from dataclasses import dataclass

import numpy as np

PROB_BITS = 12
PROB_SCALE = 1 << PROB_BITS  # each context's token frequencies sum to this
STATE_LOW = 1 << 16  # rANS states live in [2^16, 2^32)
WORD_BITS = 16
DIRECT_TOKENS = 16  # zig-zagged residuals below this are their own token
RAW_CHUNK = 16  # raw bits per rANS operation, at most (a 16-bit renormalisation refills at most that)
LEVEL_LIMIT = 1 << 28  # |level| below this keeps every intermediate within JavaScript's int32 range
CONTEXTS_PER_OCTAVE = 3
CONTEXTS = 39  # activity sums up to ~33,000 (5 * 2^(38/3)) get their own context; above, they share one
# Levels below LEVEL_LIMIT have residuals below 2^29, so z < 2^30: leading one at bit 29 at most.
MAX_TOKENS = DIRECT_TOKENS + 2 * (29 - 4) + 2
MAX_CONTEXTS = 64  # what a decoder accepts: bounds the tables a hostile header can make it build


class CorruptStream(ValueError):
    pass


@dataclass(frozen=True)
class CodedLevels:
    thresholds: np.ndarray  # int64, increasing: context = number of thresholds <= activity sum
    frequencies: np.ndarray  # uint16 (contexts, tokens): each row sums to PROB_SCALE, or is 0 if unused
    words: np.ndarray  # uint16 stream
    lane_width: int


def lane_width_for(width: int) -> int:
    """16 columns per lane where the width allows: 4 KiB of states for a 256x64x64 embedding, and few
    enough sequential steps (16 per row) for numpy to decode quickly."""
    return next(n for n in (16, 8, 4, 2, 1) if width % n == 0)


def context_thresholds() -> np.ndarray:
    """Activity sums (of 5 neighbour weights) at which the context changes: 5 * (2^(k/3) - 1/2), rounded up."""
    k = np.arange(1, CONTEXTS)
    return np.unique(np.ceil(5 * (2.0 ** (k / CONTEXTS_PER_OCTAVE) - 0.5)).astype(np.int64))


def med_residuals(q: np.ndarray) -> np.ndarray:
    """(P, H, W) levels -> residuals against MED (first row: the left neighbour; first column: the one above)."""
    pred = np.zeros_like(q)
    pred[:, 0, 1:] = q[:, 0, :-1]
    pred[:, 1:, 0] = q[:, :-1, 0]
    pred[:, 1:, 1:] = _med(q[:, :-1, 1:], q[:, 1:, :-1], q[:, :-1, :-1])
    return q - pred


def med_reconstruct(r: np.ndarray) -> np.ndarray:
    """Inverse of med_residuals, one anti-diagonal at a time: each depends only on the ones before it."""
    _, h, w = r.shape
    q = np.empty_like(r)
    q[:, 0, :] = np.cumsum(r[:, 0, :], axis=1)
    q[:, :, 0] = q[:, 0, :1] + np.cumsum(r[:, :, 0], axis=1) - r[:, :1, 0]
    for d in range(2, h + w - 1):
        y = np.arange(max(1, d - w + 1), min(d, h))
        x = d - y
        q[:, y, x] = r[:, y, x] + _med(q[:, y - 1, x], q[:, y, x - 1], q[:, y - 1, x - 1])
    return q


def _med(up: np.ndarray, left: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    low, high = np.minimum(up, left), np.maximum(up, left)
    return np.where(up_left >= high, low, np.where(up_left <= low, high, up + left - up_left))


def activity(abs_r: np.ndarray) -> np.ndarray:
    """|r| left-above + 2 x above + right-above + two rows above, 0 outside the plane: (P, H, W)."""
    padded = np.pad(abs_r, ((0, 0), (2, 0), (1, 1)))
    above = padded[:, 1:-1]
    return above[:, :, :-2] + 2 * above[:, :, 1:-1] + above[:, :, 2:] + padded[:, :-2, 1:-1]


def zigzag(r: np.ndarray) -> np.ndarray:
    return np.where(r >= 0, 2 * r, -2 * r - 1)


def unzigzag(z: np.ndarray) -> np.ndarray:
    return (z >> 1) ^ -(z & 1)


def bit_length(z: np.ndarray) -> np.ndarray:
    """Exact bit length of non-negative int64 values below 2^52 (float64 log2 can be off by one)."""
    n = np.floor(np.log2(np.maximum(z, 1))).astype(np.int64)
    n += (z >> n) >= 2
    n -= (z >> n) == 0
    return n + 1


def tokenise(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z -> (token, raw bit count, raw bits). Below DIRECT_TOKENS the token is z; above, for z with its
    leading one at bit n: token 16 + 2 (n - 4) + (bit n-1 of z), then the n - 1 bits below as raw bits."""
    n = bit_length(z) - 1
    big = z >= DIRECT_TOKENS
    raw_bits = np.where(big, n - 1, 0)
    tokens = np.where(big, DIRECT_TOKENS + 2 * (n - 4) + ((z >> np.maximum(n - 1, 0)) & 1), z)
    return tokens, raw_bits, z & ((np.int64(1) << raw_bits) - 1)


def token_raw_bits(tokens: np.ndarray) -> np.ndarray:
    return np.where(tokens >= DIRECT_TOKENS, 3 + ((tokens - DIRECT_TOKENS) >> 1), 0)


def token_base(tokens: np.ndarray) -> np.ndarray:
    """The value of z a token stands for, with its raw bits zero."""
    big = tokens >= DIRECT_TOKENS
    return np.where(big, (2 | ((tokens - DIRECT_TOKENS) & 1)) << token_raw_bits(tokens), tokens)


def frequencies(counts: np.ndarray) -> np.ndarray:
    """Token counts per context -> frequencies summing to PROB_SCALE, every seen token at least 1."""
    totals = counts.sum(axis=1, keepdims=True)
    freq = np.where(counts > 0, np.maximum(1, counts * PROB_SCALE // np.maximum(totals, 1)), 0)
    for context in np.flatnonzero(totals[:, 0]):
        row, f = counts[context], freq[context]
        # Rounding leaves the row a little off PROB_SCALE: settle the difference on the most frequent
        # tokens, one count each in turn, where it costs the least.
        order = np.argsort(-row, kind="stable")[: np.count_nonzero(row)]
        turn = 0
        while (difference := PROB_SCALE - int(f.sum())) != 0:
            token = order[turn % len(order)]
            if difference > 0 or f[token] > 1:
                f[token] += 1 if difference > 0 else -1
            turn += 1
    return freq.astype(np.uint16)


def encode_levels(q: np.ndarray) -> CodedLevels:
    """(P, H, W) int64 levels, |q| < LEVEL_LIMIT -> coded stream."""
    if np.abs(q).max(initial=0) >= LEVEL_LIMIT:
        raise ValueError("levels too large to code")
    r = med_residuals(q)
    tokens, raw_bits, raw = tokenise(zigzag(r))
    thresholds = context_thresholds()
    contexts = np.searchsorted(thresholds, activity(np.abs(r)), side="right")
    symbols = int(tokens.max()) + 1
    counts = np.bincount((contexts * symbols + tokens).ravel(), minlength=CONTEXTS * symbols)
    freq = frequencies(counts.reshape(CONTEXTS, symbols))
    lane_width = lane_width_for(q.shape[-1])
    words = _rans_encode(tokens, raw_bits, raw, contexts, freq.astype(np.int64), lane_width)
    return CodedLevels(thresholds, freq, words, lane_width)


def _to_lanes(a: np.ndarray, lane_width: int) -> np.ndarray:
    """(P, H, W) -> (H * lane_width steps, lanes) in coding order."""
    p, h, w = a.shape
    return a.reshape(p, h, w // lane_width, lane_width).transpose(1, 3, 0, 2).reshape(h * lane_width, -1)


def _put(state: np.ndarray, start: np.ndarray, freq: np.ndarray, bits: np.ndarray, out: list[np.ndarray]) -> np.ndarray:
    """Encode one symbol per lane, [start, start + freq) of 2^bits; renormalise first (one word at most)."""
    emit = state >= ((STATE_LOW >> bits) << WORD_BITS) * freq
    out.append((state[emit] & 0xFFFF).astype("<u2"))
    state = np.where(emit, state >> WORD_BITS, state)
    return ((state // freq) << bits) + state % freq + start


def _rans_encode(
    tokens: np.ndarray, raw_bits: np.ndarray, raw: np.ndarray, contexts: np.ndarray, freq: np.ndarray, lane_width: int
) -> np.ndarray:
    starts = np.cumsum(freq, axis=1) - freq
    t, n, v, c = (_to_lanes(a, lane_width) for a in (tokens, raw_bits, raw, contexts))
    state = np.full(t.shape[1], STATE_LOW, np.int64)
    one = np.ones_like(state)
    emitted: list[np.ndarray] = []
    # rANS decodes last-in first-out: encode the steps backwards, and within a step low raw bits, high
    # raw bits, token; the words each operation emits are read back by its inverse, so the stream is
    # the emitted chunks in reverse order (lanes in order within each).
    for step in reversed(range(t.shape[0])):
        low = np.minimum(n[step], RAW_CHUNK)
        state = _put(state, v[step] & ((1 << low) - 1), one, low, emitted)
        high = n[step] - low
        if high.any():
            state = _put(state, v[step] >> low, one, high, emitted)
        token = t[step]
        state = _put(state, starts[c[step], token], freq[c[step], token], np.full_like(state, PROB_BITS), emitted)
    initial = np.stack([state & 0xFFFF, state >> WORD_BITS], axis=1).astype("<u2").reshape(-1)
    return np.concatenate([initial, *emitted[::-1]])


def decode_levels(coded: CodedLevels, shape: tuple[int, int, int]) -> np.ndarray:
    """Coded stream -> (P, H, W) int64 levels; CorruptStream if it does not decode exactly."""
    return med_reconstruct(_rans_decode(coded, shape))


class _Reader:
    """The shared word stream: lanes whose state fell below STATE_LOW take the next words, in lane order."""

    def __init__(self, words: np.ndarray, lanes: int) -> None:
        if len(words) < 2 * lanes:
            raise CorruptStream("the stream is shorter than its lanes' states")
        self.words = words.astype(np.int64)
        self.position = 2 * lanes

    def initial_states(self) -> np.ndarray:
        lanes = self.position // 2
        return self.words[0 : 2 * lanes : 2] | (self.words[1 : 2 * lanes : 2] << WORD_BITS)

    def refill(self, state: np.ndarray) -> np.ndarray:
        need = state < STATE_LOW
        index = np.cumsum(need)
        count = int(index[-1])
        if count == 0:
            return state
        if self.position + count > len(self.words):
            raise CorruptStream("the stream ends early")
        words = self.words[self.position + np.maximum(index - 1, 0)]
        self.position += count
        return np.where(need, (state << WORD_BITS) | words, state)


def _decode_table(freq: np.ndarray) -> np.ndarray:
    """Per context and slot: token | frequency << 8 | (slot - token start) << 21; -1 for unused contexts."""
    table = np.full((len(freq), PROB_SCALE), -1, np.int64)
    starts = np.cumsum(freq, axis=1) - freq
    for context in np.flatnonzero(freq.sum(axis=1)):
        tokens = np.repeat(np.arange(freq.shape[1]), freq[context])
        slots = np.arange(PROB_SCALE)
        table[context] = tokens | (freq[context, tokens] << 8) | ((slots - starts[context, tokens]) << 21)
    return table.reshape(-1)


def _rans_decode(coded: CodedLevels, shape: tuple[int, int, int]) -> np.ndarray:
    p, h, w = shape
    freq = coded.frequencies.astype(np.int64)
    thresholds = coded.thresholds
    if len(thresholds) >= MAX_CONTEXTS or (np.diff(thresholds) <= 0).any():
        raise CorruptStream("context thresholds must increase, and be fewer than MAX_CONTEXTS")
    if freq.ndim != 2 or len(freq) != len(thresholds) + 1 or not 0 < freq.shape[1] <= MAX_TOKENS:
        raise CorruptStream("frequency tables do not match the contexts")
    if not np.isin(freq.sum(axis=1), (0, PROB_SCALE)).all():
        raise CorruptStream(f"a context's frequencies do not sum to {PROB_SCALE}")
    if w % coded.lane_width:
        raise CorruptStream("the lane width does not divide the planes")
    lanes, lane_width = p * (w // coded.lane_width), coded.lane_width
    table = _decode_table(freq)
    symbols = np.arange(freq.shape[1])
    base, raw_bits = token_base(symbols), token_raw_bits(symbols)
    reader = _Reader(coded.words, lanes)
    state = reader.initial_states()
    abs_r = np.zeros((p, h + 2, w + 2), np.int64)  # two rows of zeros above, a column each side
    r = np.empty((p, h, w), np.int64)
    for y in range(h):
        rows = abs_r[:, y : y + 2]
        sums = rows[:, 1, :-2] + 2 * rows[:, 1, 1:-1] + rows[:, 1, 2:] + rows[:, 0, 1:-1]
        contexts = np.searchsorted(thresholds, sums, side="right").reshape(lanes, lane_width) << PROB_BITS
        z = np.empty((lanes, lane_width), np.int64)
        for j in range(lane_width):
            entry = table[contexts[:, j] + (state & (PROB_SCALE - 1))]
            if (entry < 0).any():
                raise CorruptStream("a token in a context without frequencies")
            tokens = entry & 0xFF
            state = reader.refill(((entry >> 8) & 0x1FFF) * (state >> PROB_BITS) + (entry >> 21))
            n = raw_bits[tokens]
            high_bits = n - np.minimum(n, RAW_CHUNK)
            high = state & ((1 << high_bits) - 1)
            if high_bits.any():
                state = reader.refill(state >> high_bits)
            low_bits = n - high_bits
            low = state & ((1 << low_bits) - 1)
            state = reader.refill(state >> low_bits)
            z[:, j] = base[tokens] | (high << low_bits) | low
        r[:, y] = unzigzag(z.reshape(p, w))
        abs_r[:, y + 2, 1:-1] = np.abs(r[:, y])
    if reader.position != len(reader.words) or (state != STATE_LOW).any():
        raise CorruptStream("the stream does not end where its lanes do")
    return r
