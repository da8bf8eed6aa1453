"""Word timestamps from Whisper's own cross-attention: no second model.

After a window is decoded, its text is run once more through the decoder, teacher-forced and
without a cache. A few cross-attention heads of every Whisper model (its "alignment heads")
attend where the token being read is spoken; their attention over the window's audio frames
is normalised per head, median-filtered along time and aligned to the tokens by dynamic time
warping. Tokens are grouped into words (punctuation attached) as openai-whisper does.

The pass reads each attention module's own queries and keys (stock `k_proj`, the exact
cross-attention, or an MLA latent's up-projection), never the cache: every cache mode gets
word timings, and turning them on changes no decoded token.
"""
from __future__ import annotations

import bisect
import logging
import re
import string
from dataclasses import dataclass, replace

import numpy as np
import torch

from engine.features import FRAMES_PER_SECOND, INPUT_STRIDE
from engine.results import Word

log = logging.getLogger(__name__)

FRAMES_PER_TOKEN_S = INPUT_STRIDE / FRAMES_PER_SECOND  # one encoder frame: 20 ms
MEDIAN_FILTER = 7
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END = ".。!！?？"
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})  # words are characters, not space-separated


@dataclass
class WordTiming:
    """One word of a window, times in seconds from the window's start."""

    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def alignment_heads(settings, layers: int, heads: int) -> list[tuple[int, int]]:
    """The model's alignment heads; without any (a model converted from a checkpoint that lacks
    them), every head of the decoder's second half, as openai-whisper does."""
    found = [(a, b) for a, b in settings.alignment_heads if a < layers and b < heads]
    return found or [(layer, h) for layer in range(layers // 2, layers) for h in range(heads)]


def attention_keys(module, enc: torch.Tensor) -> torch.Tensor:
    """The keys (b, frames, d) a cross-attention module attends over: stock/exact K, or an MLA latent's."""
    if hasattr(module, "kv_down"):  # engine.mla.attention.MLAAttention
        return module.k_up(module.kv_down(enc))
    return module.k_proj(enc)


class WordAligner:
    """Aligns the text tokens of one window to its audio frames with one model's alignment heads."""

    def __init__(self, loaded):
        self.loaded = loaded
        self.model = loaded.model
        self.s = loaded.settings
        self.tokenizer = loaded.tokenizer
        layers = self.model.model.decoder.layers
        self.heads = alignment_heads(self.s, len(layers), layers[0].encoder_attn.num_heads)
        self._by_layer: dict[int, list[int]] = {}
        for layer, head in self.heads:
            self._by_layer.setdefault(layer, []).append(head)

    @torch.inference_mode()
    def align(self, enc: torch.Tensor, text_tokens: list[int], num_frames: int,
              language: str | None, task: str = "transcribe") -> list[WordTiming]:
        """Words of `text_tokens` (no timestamps, no <|endoftext|>) decoded from `enc` (1, 1500, d);
        `num_frames` the window's mel frames (100 per second)."""
        if not text_tokens:
            return []
        sot = self.s.sot_sequence(language if self.s.multilingual else None, task)
        tokens = sot + [self.s.no_timestamps] + list(text_tokens) + [self.s.eot]
        scores, logits = self._attention(enc, tokens, len(sot), len(text_tokens))
        frames = max(1, min(num_frames // INPUT_STRIDE, scores.shape[-1]))
        weights = scores[:, :, :frames].float().softmax(dim=-1)
        std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
        weights = median_filter((weights - mean) / std.clamp_min(1e-10), MEDIAN_FILTER)
        matrix = weights.mean(dim=0).cpu().numpy()
        text_idx, time_idx = dtw(-matrix.astype(np.float64))
        probs = logits[:, : self.s.eot].softmax(dim=-1)
        token_probs = probs[torch.arange(len(text_tokens)), torch.tensor(text_tokens)].tolist()

        words, word_tokens = self.split_words(text_tokens, language)
        boundaries = np.concatenate([[0], np.cumsum([len(t) for t in word_tokens])])
        jumps = np.diff(text_idx, prepend=-1).astype(bool)
        jump_times = time_idx[jumps] * FRAMES_PER_TOKEN_S
        out = []
        for k, (word, toks) in enumerate(zip(words, word_tokens)):
            i, j = int(boundaries[k]), int(boundaries[k + 1])
            out.append(WordTiming(word, list(toks), float(jump_times[i]), float(jump_times[j]),
                                  float(np.mean(token_probs[i:j]))))
        return out

    def _attention(self, enc: torch.Tensor, tokens: list[int], sot_len: int, n_text: int):
        """(heads, rows, frames) alignment-head scores for the rows <|notimestamps|>..last text token,
        and the (n_text, vocab) logits predicting the text tokens."""
        layers = self.model.model.decoder.layers
        captured: dict[int, torch.Tensor] = {}

        def hook_for(index: int):
            def hook(module, args, kwargs):
                x = args[0] if args else kwargs["hidden_states"]
                kv = kwargs.get("key_value_states")
                if kv is None and len(args) > 1:
                    kv = args[1]
                captured[index] = self._head_scores(module, x, kv, self._by_layer[index])
            return hook

        handles = [layers[i].encoder_attn.register_forward_pre_hook(hook_for(i), with_kwargs=True)
                   for i in self._by_layer]
        try:
            ids = torch.tensor([tokens], device=enc.device)
            out = self.model.model.decoder(input_ids=ids, encoder_hidden_states=enc, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        hidden = out.last_hidden_state[0, sot_len : sot_len + n_text]
        logits = self.model.proj_out(hidden).float()
        rows = slice(sot_len, sot_len + n_text + 1)
        scores = torch.cat([captured[layer][:, rows] for layer, _ in self._grouped()], dim=0)
        return scores, logits

    def _grouped(self):
        return sorted(self._by_layer.items())

    @staticmethod
    def _head_scores(module, x: torch.Tensor, enc: torch.Tensor, heads: list[int]) -> torch.Tensor:
        """(len(heads), tokens, frames) scaled q.k of the chosen heads (batch row 0)."""
        h, dh = module.num_heads, module.head_dim
        q = module.q_proj(x[:1]).view(x.shape[1], h, dh)[:, heads].transpose(0, 1)
        k = attention_keys(module, enc[:1]).view(enc.shape[1], h, dh)[:, heads].transpose(0, 1)
        return torch.bmm(q * module.scaling, k.transpose(1, 2)).float()

    # -- words ---------------------------------------------------------------------------------
    def split_words(self, tokens: list[int], language: str | None) -> tuple[list[str], list[list[int]]]:
        """Tokens grouped into words: at spaces and punctuation, or per character where a language
        writes no spaces; a character split over several byte tokens stays one piece."""
        pieces, piece_tokens = self._split_on_unicode(tokens)
        if (language or "en") in NO_SPACE_LANGUAGES:
            return pieces, piece_tokens
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for piece, toks in zip(pieces, piece_tokens):
            starts_word = piece.startswith(" ") or piece.strip() in string.punctuation or not words
            if starts_word:
                words.append(piece)
                word_tokens.append(list(toks))
            else:
                words[-1] += piece
                word_tokens[-1].extend(toks)
        return words, word_tokens

    def _split_on_unicode(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        decode = lambda ts: self.tokenizer.decode(ts, skip_special_tokens=False)  # noqa: E731
        full = decode(tokens)
        pieces, piece_tokens, current, offset = [], [], [], 0
        for t in tokens:
            current.append(t)
            text = decode(current)
            bad = text.find("\ufffd")
            if bad < 0 or (offset + bad < len(full) and full[offset + bad] == "\ufffd"):
                pieces.append(text)
                piece_tokens.append(current)
                current, offset = [], offset + len(text)
        if current:
            pieces.append(decode(current))
            piece_tokens.append(current)
        return pieces, piece_tokens


def median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over a sliding window of odd `width` along the last axis, reflect-padded."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-1])
    padded = torch.nn.functional.pad(flat, (pad, pad), mode="reflect")
    return padded.unfold(-1, width, 1).median(dim=-1).values.reshape(shape)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment of rows (tokens) to columns (frames) minimising the summed `cost`.

    Computed by anti-diagonals, each one a vector step (rows + columns steps, not their
    product), with openai-whisper's tie-breaking (diagonal, then up, then left).
    """
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        t = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2)).astype(np.int8)
        acc[i, j] = cost[i - 1, j - 1] + np.choose(t, [c0, c1, c2])
        trace[i, j] = t
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = n, m
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    arr = np.array(path)
    return arr[:, 0], arr[:, 1]


# -- from window words to segment words -----------------------------------------------------------
def merge_punctuation(words: list[WordTiming]) -> None:
    """In place: opening marks join the next word, closing marks the previous (the emptied entry stays,
    with no text and no tokens, so token counts still line up)."""
    for i in range(len(words) - 2, -1, -1):
        prev, nxt = words[i], _next_nonempty(words, i)
        if nxt is not None and prev.word.startswith(" ") and prev.word.strip() in PREPEND_PUNCTUATION and prev.word.strip():
            nxt.word, nxt.tokens = prev.word + nxt.word, prev.tokens + nxt.tokens
            prev.word, prev.tokens = "", []
    last = None
    for w in words:
        if last is not None and not last.word.endswith(" ") and w.word in APPEND_PUNCTUATION and w.word:
            last.word, last.tokens = last.word + w.word, last.tokens + w.tokens
            w.word, w.tokens = "", []
        elif w.word:
            last = w


def _next_nonempty(words: list[WordTiming], i: int) -> WordTiming | None:
    return next((w for w in words[i + 1 :] if w.word), None)


@dataclass(frozen=True)
class TimedPiece:
    """A segment of one window before it becomes a Segment: file times, its text tokens, its words."""

    start: float
    end: float
    tokens: list[int]
    words: tuple[Word, ...] = ()


def assign_words(timings: list[WordTiming], pieces: list[tuple[float, float, list[int]]], offset_s: float,
                 last_speech_s: float, eot: int) -> list[TimedPiece]:
    """Give each piece (window-relative start, end, tokens) its words in file time, and tighten the
    piece to them, as openai-whisper does: long words at sentence ends and after pauses are cut to
    twice the median word length, and a first or last word that runs far past the decoded
    timestamp yields to it."""
    timings = [replace(w, tokens=list(w.tokens)) for w in timings]  # the result's own list stays as aligned
    lengths = np.array([w.end - w.start for w in timings if w.end > w.start])
    median = min(0.7, float(np.median(lengths))) if len(lengths) else 0.0
    longest = median * 2
    if len(lengths):
        for i in range(1, len(timings)):
            w = timings[i]
            if w.end - w.start > longest:
                if w.word in SENTENCE_END:
                    w.end = w.start + longest
                elif timings[i - 1].word in SENTENCE_END:
                    w.start = w.end - longest
    merge_punctuation(timings)
    out: list[TimedPiece] = []
    k = 0
    for start, end, toks in pieces:
        start, end = offset_s + start, offset_s + end
        text_count = sum(1 for t in toks if t < eot)
        words: list[list] = []  # [word, start, end, probability], adjusted below
        used = 0
        while k < len(timings) and used < text_count:
            w = timings[k]
            if w.word:
                words.append([w.word, offset_s + w.start, offset_s + w.end, w.probability])
            used += len(w.tokens)
            k += 1
        if words:
            first = words[0]
            pause_before = first[2] - last_speech_s > median * 4
            if pause_before and (first[2] - first[1] > longest or (len(words) > 1 and words[1][2] - first[1] > longest * 2)):
                if len(words) > 1 and words[1][2] - words[1][1] > longest:
                    cut = max(words[1][2] / 2, words[1][2] - longest)
                    first[2] = words[1][1] = cut
                first[1] = max(0.0, first[2] - longest)
            if start < first[2] and start - 0.5 > first[1]:
                first[1] = max(0.0, min(first[2] - median, start))
            else:
                start = first[1]
            last = words[-1]
            if end > last[1] and end + 0.5 < last[2]:
                last[2] = max(last[1] + median, end)
            else:
                end = last[2]
            last_speech_s = end
        out.append(TimedPiece(start, end, toks, tuple(_word(*w, lo=start, hi=end) for w in words)))
    return out


def _word(text: str, start: float, end: float, probability: float, *, lo: float, hi: float) -> Word:
    """A Word inside [lo, hi], start <= end, times to the millisecond."""
    start = min(max(start, lo), hi)
    end = min(max(end, start), hi)
    return Word(text, round(start, 3), round(end, 3), round(probability, 4))



_NOT_WORD = re.compile(r"[^\w']+")


def _key(text: str) -> str:
    return _NOT_WORD.sub("", text.casefold())


def words_after_trim(words: tuple[Word, ...], text: str) -> tuple[Word, ...]:
    """The run of `words` that spells `text`, a segment's text after repeated words were cut from its
    ends (engine.seam_words); () when none does (the segment then keeps no word timings)."""
    target = _key(text)
    n = len(words)
    for i in range(n):
        for j in range(n, i, -1):
            if _key("".join(w.word for w in words[i:j])) == target:
                return tuple(words[i:j])
    return ()


def snap_to_speech(words: tuple[Word, ...], regions) -> tuple[Word, ...]:
    """Words with an edge in a pause the VAD found moved to the edge of the speech beside it.

    Attention-based timings stretch a word over the silence that follows it (its end is where the
    next word's attention jumps, after the pause) or, at a window's start, over the silence before
    it; the VAD knows where the pause is. A word with no speech under it at all stays as it is.
    """
    if not regions or not words:
        return words
    starts = [r.start for r in regions]
    out = []
    for w in words:
        start, end = w.start, w.end
        k = bisect.bisect_right(starts, start) - 1
        if (k < 0 or start > regions[k].end) and k + 1 < len(regions) and regions[k + 1].start < end:
            start = regions[k + 1].start  # began in the pause before the speech
        k = bisect.bisect_right(starts, end) - 1
        if k >= 0 and end > regions[k].end and regions[k].end > start:
            end = regions[k].end  # ran on into the pause after it
        out.append(Word(w.word, round(start, 3), round(max(start, end), 3), w.probability) if (start, end) != (w.start, w.end) else w)
    return tuple(out)
