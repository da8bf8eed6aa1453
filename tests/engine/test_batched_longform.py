"""Batched long-form decoding: VAD chunks cut in real pauses, lanes that keep the previous text,
every segment in its place exactly once, resume and out-of-memory retries that change nothing."""
from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.audio import load_audio
from engine.features import FRAMES_PER_SECOND, N_FRAMES
from engine.speech_chunks import Chunk, deal_lanes, missed_speech, plan_chunks
from engine.speech_coverage import SpeechRegion
from engine.model_sources import resolve_model
from engine.transcribe import Transcriber, TranscribeOptions
from engine.vad import speech_regions
from engine.wer import word_error_rate
from tests.conftest import DATA
from tests.engine.test_resume import _cli

GAP_S = 0.5  # the silence between utterances, as in LibriSpeech long-form concatenations


@pytest.fixture(scope="module")
def concatenation(tmp_path_factory):
    """The shipped LibriSpeech clips, three times over, 0.5 s apart: (path, [(start_s, end_s)] per utterance)."""
    parts, spans, t = [], [], 0.0
    for _ in range(3):
        for f in sorted(DATA.glob("*.flac")):
            a = load_audio(f)
            spans.append((t, t + a.size / 16000))
            parts += [a, np.zeros(int(GAP_S * 16000), np.float32)]
            t += a.size / 16000 + GAP_S
    path = tmp_path_factory.mktemp("concat") / "librispeech concat.flac"
    sf.write(path, np.concatenate(parts), 16000)
    return path, spans


def test_real_vad_cuts_chunks_in_the_pauses_between_utterances(concatenation):
    path, spans = concatenation
    total = int(spans[-1][1] * FRAMES_PER_SECOND) + 50
    chunks = plan_chunks(speech_regions(path), total)
    assert len(chunks) >= 3  # ~80 s of speech cannot fit fewer 30 s windows
    assert all(0 < c.frames <= N_FRAMES for c in chunks)
    assert all(a.end <= b.start for a, b in zip(chunks, chunks[1:]))  # no audio decoded twice
    edge_s = 0.6  # the clips begin and end with up to ~0.55 s of their own room tone
    for c in chunks:  # every cut lies in silence: never inside an utterance
        for edge in (c.start / FRAMES_PER_SECOND, c.end / FRAMES_PER_SECOND):
            assert not any(a + edge_s < edge < b - edge_s for a, b in spans), (edge, c)
    for a, b in spans:  # every utterance lies inside one chunk, whole
        assert any(c.start / FRAMES_PER_SECOND <= a + edge_s and b - edge_s <= c.end / FRAMES_PER_SECOND
                   for c in chunks)


def test_plan_chunks_packs_pads_and_splits():
    regions = [SpeechRegion(1.0, 5.0), SpeechRegion(6.0, 20.0), SpeechRegion(21.0, 30.5), SpeechRegion(40.0, 75.0)]
    chunks = plan_chunks(regions, 8000)
    # 1-20 s packs into one chunk, 21-30.5 does not fit beside it; 35 s of speech without a pause is halved
    assert [(c.start, c.end) for c in chunks] == [(60, 2040), (2060, 3090), (3960, 5750), (5750, 7540)]
    assert all(c.frames <= N_FRAMES for c in chunks)
    covered = [(c.start / 100, c.end / 100) for c in chunks]
    for r in regions:  # all speech is inside some chunk
        assert all(any(a <= t <= b for a, b in covered) for t in np.arange(r.start, r.end, 0.01))
    assert plan_chunks([], 8000) == []


def test_deal_lanes_keeps_each_lane_contiguous():
    assert deal_lanes(10, 4) == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    assert deal_lanes(3, 8) == [[0], [1], [2]]
    assert deal_lanes(0, 8) == []
    lanes = deal_lanes(101, 8)
    assert sum(lanes, []) == list(range(101)) and max(map(len, lanes)) - min(map(len, lanes)) <= 1


def test_missed_speech_is_the_uncovered_part_of_a_chunk():
    from engine.results import Segment

    regions = [SpeechRegion(10.0, 14.0), SpeechRegion(14.5, 17.0)]
    seg = Segment(0, 10.0, 14.2, "words", (), -0.1, 1.0, 0.0, 0.0)
    assert missed_speech(regions, Chunk(950, 800), [seg]) == [Chunk(1410, 330)]  # 14.5-17.0 s, padded
    assert missed_speech(regions, Chunk(950, 800), [seg, Segment(1, 14.2, 17.0, "more", (), 0, 1, 0, 0)]) == []


def test_rows_with_their_own_prompts_decode_as_each_alone(tiny, sample_path):
    """One batch, each window prompted with different text of the same length = each decoded alone."""
    from engine.decoding import DecodeOptions, WindowDecoder
    from engine.features import log_mel

    dec = WindowDecoder(tiny)
    audio = load_audio(sample_path)
    enc = dec.encode(log_mel(torch.stack([torch.as_tensor(audio[:160000]), torch.as_tensor(audio[16000:176000])]),
                             tiny.n_mels))
    tok = tiny.tokenizer
    prompts = [tok.encode(" My fellow citizens of the world.", add_special_tokens=False),
               tok.encode(" The quick brown fox jumps over.", add_special_tokens=False)]
    n = min(map(len, prompts))
    prompts = [p[-n:] for p in prompts]
    for beam in (1, 5):
        opts = DecodeOptions(beam_size=beam)
        together = dec.decode(enc, opts, prompts)
        alone = [dec.decode(enc[i : i + 1], opts, prompts[i])[0] for i in range(2)]
        assert [r.tokens for r in together] == [r.tokens for r in alone]
    with pytest.raises(ValueError, match="equal length"):
        dec.decode(enc, DecodeOptions(), [prompts[0], prompts[1][1:]])


def test_batched_equals_sequential_text_with_every_segment_once(tiny, concatenation):
    path, spans = concatenation
    seq = Transcriber(tiny).transcribe(path)
    bat = Transcriber(tiny, TranscribeOptions(batch_size=4)).transcribe(path)
    assert bat.complete and bat.uncovered_speech == []
    ref = " ".join(f.with_suffix(".txt").read_text() for f in sorted(DATA.glob("*.flac")))
    ref = " ".join([ref] * 3)
    # as accurate as sequential decoding (on this file, more: sequential repeats a sentence once)
    assert word_error_rate([ref], [bat.text]).wer <= word_error_rate([ref], [seq.text]).wer + 0.01
    assert [s.id for s in bat.segments] == list(range(len(bat.segments)))
    assert [s.start for s in bat.segments] == sorted(s.start for s in bat.segments)
    assert all(s.end <= spans[-1][1] + 0.5 for s in bat.segments)
    # each utterance's words come once: as many words as the reference, give or take a few
    assert abs(len(bat.text.split()) - len(ref.split())) <= 0.05 * len(ref.split())


def test_out_of_memory_mid_batch_loses_and_duplicates_nothing(tiny, concatenation, monkeypatch, caplog):
    path, _ = concatenation
    options = TranscribeOptions(batch_size=4)
    clean = Transcriber(tiny, options).transcribe(path)
    tr = Transcriber(tiny, options)
    real = tr.decoder.decode
    ooms = []

    def decode(enc, opts, prompt=None):
        if enc.shape[0] > 1 and len(ooms) < 2:  # the GPU runs out twice, at the first batches
            ooms.append(enc.shape[0])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(enc, opts, prompt)

    monkeypatch.setattr(tr.decoder, "decode", decode)
    with caplog.at_level("WARNING", logger="engine.memory.oom"):
        retried = tr.transcribe(path)
    assert ooms and "retrying with batch size" in caplog.text
    assert [(s.start, s.end, s.text) for s in retried.segments] == [(s.start, s.end, s.text) for s in clean.segments]


def test_kill_9_mid_batched_run_then_resume_gives_identical_transcript(tiny, tmp_path, concatenation):
    src, _ = concatenation
    audio = tmp_path / "talk.flac"
    audio.write_bytes(src.read_bytes())
    args = [str(audio), "--format", "json", "--out", "out", "-q", "--batch-size", "2", "--beam-size", "1"]
    resume_file = tmp_path / "out" / ".talk.whisper-mla-resume.json"
    proc = _cli(args, tmp_path)
    deadline, step = time.time() + 300, 0
    while time.time() < deadline and proc.poll() is None and step == 0:
        if resume_file.exists():
            step = json.loads(resume_file.read_text())["point"]["step"]
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = json.loads(resume_file.read_text())["point"]
    assert saved["step"] >= 1 and saved["segments"] and any(saved["lane_context"])

    second = _cli(args, tmp_path)
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    resumed = json.loads((tmp_path / "out" / "talk.json").read_text())
    default_mode = resolve_model(None, "cpu", kv_cache="compressed")  # what the CLI ran
    straight = Transcriber(default_mode, TranscribeOptions(batch_size=2, word_timestamps=True)).transcribe(audio)
    assert [(s["start"], s["end"], s["text"]) for s in resumed["segments"]] == \
           [(s.start, s.end, s.text) for s in straight.segments]
    assert [[w["start"] for w in s["words"]] for s in resumed["segments"]] == \
           [[w.start for w in s.words] for s in straight.segments]  # the CLI's default word timings, the same
