"""Long-form transcription on real audio with the real bundled model."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from engine.audio import AudioError, load_audio
from engine.features import TIME_PRECISION
from engine.transcribe import CancelToken, Transcriber, TranscribeOptions, split_segments
from engine.wer import normalize, word_error_rate
from tests.conftest import DATA, reference

JFK_WORDS = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """~70 s of real speech (the shipped clips, repeated, 0.5 s silence between): three windows."""
    parts = []
    for _ in range(3):
        for f in sorted(DATA.glob("*.flac")):
            parts += [load_audio(f), np.zeros(8000, np.float32)]
    audio = np.concatenate(parts)
    path = tmp_path_factory.mktemp("long") / "long clip.flac"
    sf.write(path, audio, 16000)
    return path, audio.size / 16000


def test_jfk_word_for_word(tiny, sample_path):
    t = Transcriber(tiny).transcribe(sample_path)
    assert normalize(t.text) == JFK_WORDS
    assert t.complete and t.language == "en"
    assert 10.5 < t.duration < 11.5
    assert t.segments[0].start == 0.0 and t.segments[-1].end <= t.duration + 0.02


def test_librispeech_clips_wer(tiny):
    tr = Transcriber(tiny)
    files = sorted(DATA.glob("*.flac"))
    hyps = [tr.transcribe(f).text for f in files]
    result = word_error_rate([reference(f) for f in files], hyps)
    assert result.reference_words > 50
    assert result.wer < 0.15, (result, hyps)


def test_beam_search_matches_reference(tiny, sample_path):
    t = Transcriber(tiny, TranscribeOptions(beam_size=5)).transcribe(sample_path)
    assert normalize(t.text) == JFK_WORDS


def test_long_form_progress_timestamps_and_stats(tiny, long_clip):
    path, duration = long_clip
    seen = []
    t = Transcriber(tiny).transcribe(path, progress=seen.append)
    assert t.stats.windows >= 3
    assert len(seen) == t.stats.windows
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert seen[-1].eta_s == pytest.approx(0.0, abs=1e-6)
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts)
    assert all(s.end > s.start for s in t.segments)
    assert t.segments[-1].end <= duration + TIME_PRECISION
    # every shipped utterance appears three times: nothing dropped, nothing looped
    refs = " ".join(reference(f) for f in sorted(DATA.glob("*.flac")))
    assert word_error_rate([" ".join([refs] * 3)], [t.text]).wer < 0.15
    kv = t.stats.kv_cache_peak
    assert kv.self_attn > 0 and kv.cross_attn > 0
    # stock cross cache: 4 layers x (K and V) x 1500 frames x 384 x fp32, measured from the tensors
    assert kv.cross_attn == 4 * 2 * 1500 * 384 * 4
    assert t.stats.peak_rss_bytes > 0 and t.stats.peak_device_bytes is None


def test_segments_stream_before_the_end(tiny, long_clip):
    path, _ = long_clip
    progress_at_first_segment = []
    progress = []
    tr = Transcriber(tiny)
    for seg in tr.segments(path, progress=progress.append):
        if not progress_at_first_segment:
            progress_at_first_segment.append(len(progress))
    assert progress_at_first_segment == [0]  # the first segment came before the first window finished


def test_cancel_stops_within_one_window(tiny, long_clip):
    path, duration = long_clip
    cancel = CancelToken()
    windows = []

    def on_progress(p):
        windows.append(p)
        cancel.cancel()

    t = Transcriber(tiny).transcribe(path, progress=on_progress, cancel=cancel)
    assert not t.complete
    assert len(windows) == 1
    assert t.segments and t.segments[-1].end <= 30.0 + TIME_PRECISION


def test_batched_windows_agree_with_sequential(tiny, long_clip):
    path, _ = long_clip
    seq = Transcriber(tiny).transcribe(path)
    bat = Transcriber(tiny, TranscribeOptions(batch_size=3)).transcribe(path)
    assert bat.stats.windows == 1  # three windows decoded in one batch
    # windows are cut at fixed 30 s boundaries in batch mode, so allow words split at the cut
    assert word_error_rate([seq.text], [bat.text]).wer < 0.1


def test_silence_gives_no_text(tiny, tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000 * 20, np.float32), 16000)
    t = Transcriber(tiny).transcribe(path)
    assert t.text.strip() == ""


def test_bad_input_raises_audio_error(tiny, tmp_path):
    bad = tmp_path / "noise.mp3"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError) as err:
        Transcriber(tiny).transcribe(bad)
    assert str(bad) in str(err.value)


def test_split_segments_follows_timestamp_pairs():
    tb = 1000
    # <|0.00|> a b <|1.00|><|1.00|> c <|2.00|>   (ends on a single timestamp: window is complete)
    toks = [tb, 1, 2, tb + 50, tb + 50, 3, tb + 100]
    pieces, advance = split_segments(toks, tb, 3000)
    assert [(p[0], p[1]) for p in pieces] == [(0.0, 1.0), (1.0, 2.0)]
    assert advance == 3000
    # unfinished last segment: seek only to the last complete timestamp (1.00 s = 100 frames)
    toks = [tb, 1, 2, tb + 50, tb + 50, 3, 4]
    pieces, advance = split_segments(toks, tb, 3000)
    assert [(p[0], p[1]) for p in pieces] == [(0.0, 1.0)]
    assert advance == 100
    # no timestamp pair at all: one segment for the whole window
    pieces, advance = split_segments([1, 2, 3], tb, 1500)
    assert pieces == [(0.0, 15.0, [1, 2, 3])] and advance == 1500


def test_beam_cross_kv_projected_once_per_window_is_exact(tiny, sample_path, monkeypatch):
    """Beam 5 with the cross K/V projected once and copied per beam = stock's per-beam projection."""
    import engine.decoding as decoding
    from engine.decoding import DecodeOptions, WindowDecoder
    from engine.features import log_mel

    dec = WindowDecoder(tiny)
    enc = dec.encode(log_mel(load_audio(sample_path), tiny.n_mels))
    opts = DecodeOptions(language=None, beam_size=5)
    fast = dec.decode(enc, opts)[0]
    fast_kv = dec.kv_peak
    monkeypatch.setattr(decoding, "prefill_cross_cache", lambda *args: False)  # stock: every beam projects
    dec_stock = WindowDecoder(tiny)
    stock = dec_stock.decode(enc, opts)[0]
    assert fast.tokens == stock.tokens and fast.text == stock.text
    assert abs(fast.avg_logprob - stock.avg_logprob) < 1e-4
    assert fast_kv == dec_stock.kv_peak and fast_kv.cross_attn == 5 * 4 * 1500 * 384 * 2 * 4  # a copy per beam


def test_unscaled_float_wav_transcribes_like_the_original(tmp_path, tiny, sample_path) -> None:
    # a float WAV of finite samples far past full scale (1e30) once failed inside the sampler
    import numpy as np
    import soundfile as sf

    x = load_audio(sample_path)
    p = tmp_path / "unscaled.wav"
    sf.write(p, (x * 1e30).astype(np.float32), 16000, subtype="FLOAT")
    assert Transcriber(tiny).transcribe(p).text == Transcriber(tiny).transcribe(sample_path).text
