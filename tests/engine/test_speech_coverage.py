"""No speech silently lost (issue 20, item 2): a real VAD on real clips, and the recovery pass."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from engine.audio import AudioReader, load_audio
from engine.features import SAMPLE_RATE
from engine.results import Segment
from engine.speech_coverage import SpeechRegion, coverage, describe_gaps, uncovered
from engine.transcribe import TranscribeOptions, Transcriber
from engine.vad import speech_regions

CLIPS = ("1089-134686-0000", "1089-134691-0000", "2033-164914-0001", "3080-5032-0003")
PAUSE_S = 1.5


@pytest.fixture(scope="module")
def concatenation(data_dir, tmp_path_factory):
    """Four LibriSpeech utterances of three speakers with 1.5 s of silence between them; their true spans."""
    parts, spans, t = [], [], 0.0
    for clip in CLIPS:
        a = load_audio(data_dir / f"{clip}.flac")
        parts += [a, np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)]
        spans.append((t, t + len(a) / SAMPLE_RATE))
        t += len(a) / SAMPLE_RATE + PAUSE_S
    path = tmp_path_factory.mktemp("concat") / "concat.flac"
    sf.write(path, np.concatenate(parts), SAMPLE_RATE)
    return path, spans


def seg(i, start, end, text=" words"):
    return Segment(i, start, end, text)


def test_vad_finds_the_pauses_between_utterances(concatenation):
    path, spans = concatenation
    regions = speech_regions(path)
    for start, end in spans:  # every utterance is speech, and no region runs across a pause
        inside = [r for r in regions if r.end > start and r.start < end]
        assert inside, (start, end)
        assert inside[0].start == pytest.approx(start, abs=0.6) and inside[-1].end == pytest.approx(end, abs=0.6)
        assert all(r.start > start - PAUSE_S / 2 and r.end < end + PAUSE_S / 2 for r in inside)


def test_uncovered_finds_stretches_of_speech_without_text():
    regions = [SpeechRegion(0.0, 10.0), SpeechRegion(12.0, 20.0)]
    segments = [seg(0, 0.0, 3.0), seg(1, 3.2, 4.0), seg(2, 9.0, 13.0), seg(3, 13.0, 20.0, "  ")]
    # 4.0-9.0 has no text; 13-20 has only a blank segment; 3.0-3.2 is too short to matter
    assert uncovered(regions, segments) == [SpeechRegion(4.0, 9.0), SpeechRegion(13.0, 20.0)]
    assert coverage(regions, segments) == pytest.approx(1 - (0.2 + 5.0 + 7.0) / 18.0)
    assert uncovered(regions, [seg(0, 0.0, 20.0)]) == []
    assert describe_gaps([(156.0, 182.0), (605.0, 609.5)]) == "2:36-3:02 (26 s), 10:05-10:09 (4 s)"


def test_a_dropped_stretch_is_decoded_again_and_found(tiny, concatenation):
    """Whisper's seek loop can jump over speech: take one utterance's segments away and let the check find it."""
    path, spans = concatenation
    transcriber = Transcriber(tiny, TranscribeOptions(check_speech=False))
    full = transcriber.transcribe(path)
    start, end = spans[2]  # "... 2033-164914-0001"
    kept = [s for s in full.segments if s.end <= start or s.start >= end]
    assert len(kept) < len(full.segments)
    transcriber.point.segments = kept
    with AudioReader(path) as reader:
        recovered = list(transcriber._recover_speech(path, reader, None))
    assert recovered and all(start - 0.5 <= s.start and s.end <= end + 0.5 for s in recovered)
    lost = " ".join(s.text for s in full.segments if s not in kept).lower()
    found = " ".join(s.text for s in recovered).lower()
    assert set(found.split()) & set(lost.split())
    assert transcriber._state.uncovered == []


def test_every_transcript_says_whether_speech_was_left_uncovered(tiny, concatenation):
    path, _ = concatenation
    t = Transcriber(tiny).transcribe(path)
    assert t.uncovered_speech == []  # checked by default, and nothing missed on clear speech
    assert json.loads(json.dumps(t.to_dict()))["uncovered_speech"] == []
    assert Transcriber(tiny, TranscribeOptions(check_speech=False)).transcribe(path).uncovered_speech is None


def test_the_vad_leaves_the_thread_count_alone(data_dir):
    """silero_vad's import sets torch to one thread for the whole process; decoding must keep its own."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        speech_regions(data_dir / f"{CLIPS[0]}.flac")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
