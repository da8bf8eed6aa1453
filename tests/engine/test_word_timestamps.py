"""Word timestamps: real clips through the real tiny.en in every cache mode, DTW against its definition,
and SRT/VTT word cues read back by the `srt` and `webvtt-py` parsers and by libav (PyAV)."""
from __future__ import annotations

import json
import re

import av
import numpy as np
import pytest
import soundfile as sf
import srt
import webvtt

from engine.audio import load_audio
from engine.cancel import CancelToken
from engine.export import CueOptions, cues, export, render
from engine.model_sources import resolve_model
from engine.results import Segment, Word
from engine.transcribe import ResumePoint, Transcriber, TranscribeOptions
from engine.word_timing import WordAligner, dtw, words_after_trim
from tests.conftest import DATA, SAMPLE


def _words(transcript):
    return [w for s in transcript.segments for w in s.words]


@pytest.fixture(scope="module")
def timed_sample(tiny):
    return Transcriber(tiny, TranscribeOptions(word_timestamps=True)).transcribe(SAMPLE)


def test_words_lie_inside_their_segment_in_order_and_spell_it(timed_sample):
    assert timed_sample.segments
    prev_end = 0.0
    for seg in timed_sample.segments:
        assert seg.words, seg
        assert "".join(w.word for w in seg.words).strip() == seg.text.strip()
        for w in seg.words:
            assert seg.start <= w.start <= w.end <= seg.end
            assert w.start >= prev_end - 1e-6
            assert 0.0 <= w.probability <= 1.0
            prev_end = w.end
    assert timed_sample.segments[-1].end <= timed_sample.duration + 1e-6


def test_word_times_match_the_speech(timed_sample):
    """JFK's 'ask not' comes after a long pause: the word is placed after it, not spread evenly."""
    words = {w.word.strip(" ,.").lower(): w for w in _words(timed_sample)}
    assert words["and"].start < 0.5
    assert 2.0 < words["not"].start < 4.5
    assert 9.5 < words["country"].end <= 11.0


def test_turning_word_timestamps_on_changes_no_token(tiny, timed_sample):
    plain = Transcriber(tiny, TranscribeOptions()).transcribe(SAMPLE)
    assert [s.tokens for s in plain.segments] == [s.tokens for s in timed_sample.segments]
    assert all(not s.words for s in plain.segments)
    assert "words" not in plain.segments[0].to_dict()


@pytest.mark.parametrize("mode", ["exact", "compressed"])
def test_every_cache_mode_gives_the_same_words(timed_sample, mode):
    loaded = resolve_model(None, "cpu", kv_cache=mode)
    other = Transcriber(loaded, TranscribeOptions(word_timestamps=True)).transcribe(SAMPLE)
    ours, theirs = _words(timed_sample), _words(other)
    assert [w.word for w in theirs] == [w.word for w in ours]
    tolerance = 0.021 if mode == "exact" else 0.1  # exact: float rounding moves a DTW step at most
    assert max(abs(a.start - b.start) + abs(a.end - b.end) for a, b in zip(ours, theirs)) <= 2 * tolerance


def test_beam_search_and_batched_decoding_time_their_words(tiny, tmp_path):
    parts = [np.concatenate([load_audio(f), np.zeros(8000, np.float32)]) for f in sorted(DATA.glob("*.flac"))]
    audio = tmp_path / "four.flac"
    sf.write(audio, np.concatenate(parts), 16000)
    for options in (TranscribeOptions(word_timestamps=True, beam_size=5),
                    TranscribeOptions(word_timestamps=True, batch_size=2)):
        t = Transcriber(tiny, options).transcribe(audio)
        assert t.segments and all(s.words for s in t.segments), options
        starts = [w.start for w in _words(t)]
        assert starts == sorted(starts)
        assert all(s.start <= w.start <= w.end <= s.end for s in t.segments for w in s.words)


def test_a_resumed_file_has_the_words_of_an_uninterrupted_one(tiny, tmp_path):
    parts = []
    for _ in range(2):
        for f in sorted(DATA.glob("*.flac")):
            parts += [load_audio(f), np.zeros(8000, np.float32)]
    audio = tmp_path / "twice.flac"
    sf.write(audio, np.concatenate(parts), 16000)  # ~48 s: two windows
    options = TranscribeOptions(word_timestamps=True)
    straight = Transcriber(tiny, options).transcribe(audio)

    cancel, saved = CancelToken(), []

    def stop_after_first(point: ResumePoint) -> None:
        saved.append(json.loads(json.dumps(point.to_dict())))  # what a resume file holds
        cancel.cancel()

    first = Transcriber(tiny, options).transcribe(audio, cancel=cancel, on_window=stop_after_first)
    assert not first.complete and saved[0]["segments"]
    assert any("words" in s for s in saved[0]["segments"])
    resumed = Transcriber(tiny, options).transcribe(audio, resume=ResumePoint.from_dict(saved[0]))
    assert [(s.text, s.start, s.end, s.words) for s in resumed.segments] == \
           [(s.text, s.start, s.end, s.words) for s in straight.segments]


def test_dtw_matches_its_definition():
    def reference(cost):
        n, m = cost.shape
        acc = np.full((n + 1, m + 1), np.inf)
        acc[0, 0] = 0
        trace = np.zeros((n + 1, m + 1), int)
        for j in range(1, m + 1):
            for i in range(1, n + 1):
                c = [acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]
                t = 0 if c[0] < c[1] and c[0] < c[2] else 1 if c[1] < c[0] and c[1] < c[2] else 2
                acc[i, j], trace[i, j] = cost[i - 1, j - 1] + c[t], t
        trace[0, :], trace[:, 0] = 2, 1
        i, j, path = n, m, []
        while i > 0 or j > 0:
            path.append((i - 1, j - 1))
            i, j = {0: (i - 1, j - 1), 1: (i - 1, j), 2: (i, j - 1)}[trace[i, j]]
        return np.array(path[::-1]).T

    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (1, 9), (7, 1), (5, 40), (23, 61)]:
        cost = rng.normal(size=(n, m))
        rows, cols = dtw(cost)
        want = reference(cost)
        assert rows.tolist() == want[0].tolist() and cols.tolist() == want[1].tolist()


def test_words_are_split_at_spaces_with_punctuation_attached(tiny):
    aligner = WordAligner(tiny)
    tokens = tiny.tokenizer.encode(" Hello, world. It's fine!", add_special_tokens=False)
    words, groups = aligner.split_words(tokens, "en")
    assert "".join(words) == " Hello, world. It's fine!"
    assert sum(len(g) for g in groups) == len(tokens)
    assert words[0] == " Hello" and words[1] == ","  # punctuation is its own piece until merged per segment


def test_words_after_trim_keeps_the_words_that_spell_the_trimmed_text():
    ws = tuple(Word(f" {t}", i, i + 0.5, 0.9) for i, t in enumerate(["as", "the", "art", "of", "printing."]))
    assert [w.word for w in words_after_trim(ws, " art of printing.")] == [" art", " of", " printing."]
    assert words_after_trim(ws, " something else") == ()


# -- exports ----------------------------------------------------------------------------------------
def _check_srt(text: str, duration: float) -> list:
    subs = list(srt.parse(text))
    assert subs
    starts = [s.start.total_seconds() for s in subs]
    assert starts == sorted(starts)
    assert all(s.end > s.start and s.end.total_seconds() <= duration + 1e-3 for s in subs)
    return subs


def _check_vtt(path, duration: float) -> list:
    captions = webvtt.read(str(path))
    assert len(captions)
    starts = [c.start_time.in_milliseconds() for c in captions]
    assert starts == sorted(starts)
    assert all(c.start_time.in_milliseconds() < c.end_time.in_milliseconds() <= duration * 1000 for c in captions)
    return list(captions)


def _libav_cues(path) -> int:
    """Subtitle events libav (ffmpeg's libraries, through PyAV) reads from the file."""
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def test_word_level_srt_and_vtt_parse_in_real_readers(timed_sample, tmp_path):
    words = _words(timed_sample)
    paths = export(timed_sample, tmp_path, "srt,vtt", cue_options=CueOptions("word"))
    subs = _check_srt(paths[0].read_text(encoding="utf-8"), timed_sample.duration)
    assert [s.content for s in subs] == [w.word.strip() for w in words]
    captions = _check_vtt(paths[1], timed_sample.duration)
    assert len(captions) == len(words)
    assert _libav_cues(paths[0]) == len(words) and _libav_cues(paths[1]) == len(words)


def test_karaoke_vtt_tags_every_word_inside_its_cue(timed_sample, tmp_path):
    paths = export(timed_sample, tmp_path, "vtt,srt", cue_options=CueOptions("karaoke"))
    captions = _check_vtt(paths[0], timed_sample.duration)
    raw = paths[0].read_text(encoding="utf-8")
    assert raw.count("<00:") == sum(len(s.words) - 1 for s in timed_sample.segments)
    for c, seg in zip(captions, timed_sample.segments):
        assert " ".join(re.sub(r"<[^>]+>", "", c.raw_text).split()) == seg.text.strip()
        tags = [sum(float(x) * 60 ** k for k, x in enumerate(reversed(t.split(":"))))
                for t in re.findall(r"<(\d\d:\d\d:\d\d\.\d\d\d)>", c.raw_text)]
        assert tags == sorted(tags) and all(c.start_time.in_milliseconds() < t * 1000 < c.end_time.in_milliseconds() for t in tags)
    _check_srt(paths[1].read_text(encoding="utf-8"), timed_sample.duration)  # SRT: segment cues
    assert _libav_cues(paths[0]) == len(captions)


def test_long_segments_are_cut_between_words_within_the_limits(timed_sample):
    options = CueOptions("segment", max_chars=24, max_seconds=4.0)
    out = cues(timed_sample, options)
    assert len(out) > len(timed_sample.segments)
    spoken = " ".join(w.word.strip() for w in _words(timed_sample))
    assert " ".join(c.text for c in out) == spoken
    for c in out:
        assert len(c.text) <= 24 or " " not in c.text
        assert c.end_ms > c.start_ms
    _check_srt(render(timed_sample, "srt", options), timed_sample.duration)


def test_cues_are_cut_without_word_timestamps_too():
    seg = Segment(0, 1.0, 9.0, " one two three four five six seven eight nine ten eleven twelve")
    from engine.results import ModelInfo, Transcript

    t = Transcript("x.wav", 10.0, "en", ModelInfo("s", "n", False), [seg])
    out = cues(t, CueOptions(max_chars=20))
    assert " ".join(c.text for c in out) == seg.text.strip()
    assert out[0].start_ms == 1000 and out[-1].end_ms == 9000
    assert all(a.end_ms == b.start_ms for a, b in zip(out, out[1:]))


def test_an_mla_cross_attention_is_aligned_through_its_latent(tiny, timed_sample):
    """A converted folder may give cross-attention a latent (no k_proj): its keys are the latent's
    up-projection. At full rank the conversion is exact, so the words and times are stock's."""
    import copy
    import dataclasses

    from engine.mla.convert import convert_model

    model = copy.deepcopy(tiny.model)
    convert_model(model, rank=model.config.d_model, modules=("decoder-self", "cross"), init="svd")
    assert hasattr(model.model.decoder.layers[0].encoder_attn, "kv_down")
    mla = dataclasses.replace(tiny, model=model)
    other = Transcriber(mla, TranscribeOptions(word_timestamps=True)).transcribe(SAMPLE)
    ours, theirs = _words(timed_sample), _words(other)
    assert [w.word for w in theirs] == [w.word for w in ours]
    assert max(abs(a.start - b.start) + abs(a.end - b.end) for a, b in zip(ours, theirs)) <= 0.042
