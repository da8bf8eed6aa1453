"""Corrections to a transcript: words the user left alone keep their times, the others get the time they took."""
from __future__ import annotations

import json

import pytest

from engine.editing import EDITED_PROBABILITY, edit_segment, replace_all
from engine.export import export, transcript_from_dict
from engine.results import Segment, Word


def words_of(seg: Segment) -> list[tuple[str, float, float]]:
    return [(w.word, w.start, w.end) for w in seg.words]


@pytest.fixture(scope="module")
def jfk(sample_path):
    """The sample transcribed with word timings by the bundled model (the real thing a user corrects)."""
    from engine.model_sources import resolve_model
    from engine.transcribe import TranscribeOptions, Transcriber

    return Transcriber(resolve_model("tiny.en"), TranscribeOptions(word_timestamps=True)).transcribe(sample_path)


def test_untouched_words_keep_their_times_and_changed_ones_take_the_old_words_time(jfk):
    seg = jfk.segments[0]
    assert len(seg.words) >= 8
    old = list(seg.words)
    text = seg.text.strip().replace("Americans", "citizens")
    edited = edit_segment(seg, text)
    assert edited.edited and edited.text == " " + text and edited.tokens == ()
    assert "".join(w.word for w in edited.words) == edited.text  # the words still spell the text
    changed = [k for k, w in enumerate(old) if "Americans" in w.word]
    for k, (o, e) in enumerate(zip(old, edited.words)):
        if k in changed:
            assert (e.start, e.end) == (o.start, o.end) and e.word.strip().startswith("citizens")
            assert e.probability == EDITED_PROBABILITY
        else:
            assert e == o  # same word, same time, same confidence


def test_inserted_deleted_and_respelled_words(jfk):
    seg = jfk.segments[0]
    old = list(seg.words)
    words = seg.text.split()
    # drop the second word, insert two words after the fourth, change only the case of the first
    new = [words[0].upper(), *words[2:4], "very", "dear", *words[4:]]
    edited = edit_segment(seg, " ".join(new))
    assert [w.word.strip() for w in edited.words] == new
    assert edited.words[0].start == old[0].start and edited.words[0].probability == old[0].probability  # case only
    inserted = edited.words[3:5]
    # in the gap between their neighbours, or sharing the time of the word before when the gap is too short
    assert old[3].start <= inserted[0].start < inserted[1].end <= max(old[4].start, old[3].end) + 1e-6
    starts = [w.start for w in edited.words]
    assert starts == sorted(starts) and all(w.end >= w.start for w in edited.words)
    assert seg.start <= edited.words[0].start and edited.words[-1].end <= seg.end


def test_an_edit_back_to_the_original_text_is_no_edit(jfk):
    seg = jfk.segments[0]
    assert edit_segment(seg, "  " + seg.text.strip() + " ") is seg


def test_languages_without_spaces_edit_per_character():
    seg = Segment(0, 1.0, 2.0, "广州市", words=(Word("广", 1.0, 1.3, 0.9), Word("州", 1.3, 1.6, 0.9),
                                            Word("市", 1.6, 2.0, 0.4)))
    edited = edit_segment(seg, "广州是")
    assert edited.text == "广州是"
    assert words_of(edited) == [("广", 1.0, 1.3), ("州", 1.3, 1.6), ("是", 1.6, 2.0)]


def test_a_segment_without_word_timings_is_just_retexted():
    seg = Segment(3, 1.0, 2.0, " helo world")
    edited = edit_segment(seg, "hello world")
    assert (edited.text, edited.words, edited.start, edited.end) == (" hello world", (), 1.0, 2.0)


def test_replace_all_counts_and_keeps_other_segments(jfk):
    after, n = replace_all(jfk, "country", "nation")
    assert n == 2 and "country" not in after.text and after.text.count("nation") == 2
    untouched = [s for s in jfk.segments if "country" not in s.text.lower()]
    assert all(s in after.segments for s in untouched)
    assert replace_all(jfk, "COUNTRY", "land")[1] == 2  # case-insensitive, as the search is
    assert replace_all(jfk, "count", "x", whole_words=True)[1] == 0
    assert replace_all(jfk, "", "x") == (jfk, 0)


def test_corrections_reach_every_export_and_survive_the_json(jfk, tmp_path):
    import srt
    import webvtt

    corrected, n = replace_all(jfk, "Americans", "citizens")
    assert n == 1
    paths = export(corrected, tmp_path, "txt,srt,vtt,json")
    for p in paths:
        text = p.read_text(encoding="utf-8")
        assert "citizens" in text and "Americans" not in text, p.name
    back = transcript_from_dict(json.loads((tmp_path / f"{paths[0].stem}.json").read_text(encoding="utf-8")))
    assert back.segments == corrected.segments  # edited flag, words and text round-trip
    assert any(s.edited for s in back.segments) and not all(s.edited for s in back.segments)
    assert any("citizens" in c.content for c in srt.parse((tmp_path / f"{paths[0].stem}.srt").read_text()))
    assert any("citizens" in c.text for c in webvtt.read(str(tmp_path / f"{paths[0].stem}.vtt")))
