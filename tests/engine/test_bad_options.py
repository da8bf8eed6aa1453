"""Bad options are refused when parsed, naming the option and the allowed range; special inputs never hang.

Issue 18, items 3, 4 and 7: a typo in an option costs nothing (no model loads, exit status 2);
a FIFO, a device or a folder without recordings among the inputs is one bad input, reported on
one line, and the good inputs of the same run are still transcribed.
"""
from __future__ import annotations

import os
import shutil

import pytest

from engine.cli import build_parser, main
from tests.engine.test_cli import run_cli

BAD = [
    # (arguments, words the message must contain)
    (["transcribe", "a.wav", "--beam-size", "0"], ["--beam-size", "from 1 to 16", "'0'"]),
    (["transcribe", "a.wav", "--beam-size", "-1"], ["--beam-size", "from 1 to 16"]),
    (["transcribe", "a.wav", "--beam-size", "10000"], ["--beam-size", "from 1 to 16"]),
    (["transcribe", "a.wav", "--beam-size", "five"], ["--beam-size", "integer"]),
    (["transcribe", "a.wav", "--batch-size", "0"], ["--batch-size", "from 1 to 256", "'auto'"]),
    (["transcribe", "a.wav", "--batch-size", "100000"], ["--batch-size", "from 1 to 256"]),
    (["transcribe", "a.wav", "--batch-size", "lots"], ["--batch-size", "'auto'"]),
    (["transcribe", "a.wav", "--memory-budget", "plenty"], ["--memory-budget", "not a memory size", "6GB"]),
    (["transcribe", "a.wav", "--memory-budget", "0"], ["--memory-budget", "positive"]),
    (["transcribe", "a.wav", "--language", "xx"], ["--language", "'xx'", "not a language"]),
    (["transcribe", "a.wav", "--language", "klingon"], ["--language", "not a language"]),
    (["compare", "a.wav", "--report", "r.json", "--beam-size", "0"], ["--beam-size", "from 1 to 16"]),
    (["compare", "a.wav", "--report", "r.json", "--batch-size", "-3"], ["--batch-size", "from 1 to 256"]),
    (["compare", "a.wav", "--report", "r.json", "--kv-reduction", "2"], ["--kv-reduction", "between 0 and 1"]),
    (["convert", "--rank", "0", "--out", "m"], ["--rank", "at least 1"]),
    (["convert", "--rank", "-5", "--out", "m"], ["--rank", "at least 1"]),
    (["convert", "--kv-reduction", "1.0", "--out", "m"], ["--kv-reduction", "(0, 1)"]),
    (["convert", "--kv-reduction", "nan", "--out", "m"], ["--kv-reduction", "(0, 1)"]),
    (["convert", "--kv-reduction", "0.75", "--keep-key-dims", "-1", "--out", "m"], ["--keep-key-dims", "at least 0"]),
    (["convert", "--layer-ranks", "64,0", "--out", "m"], ["--layer-ranks", "positive"]),
    (["finetune", "--model", "m", "--audio", "a.wav", "--out", "t", "--batch", "0"], ["--batch", "from 1 to 4096"]),
    (["finetune", "--model", "m", "--audio", "a.wav", "--out", "t", "--micro-batch", "0"], ["--micro-batch", "from 1"]),
    (["finetune", "--model", "m", "--audio", "a.wav", "--out", "t", "--runs", "0"], ["--runs", "from 1 to 64"]),
    (["finetune", "--model", "m", "--audio", "a.wav", "--out", "t", "--steps", "0"], ["--steps", "at least 1"]),
    (["finetune", "--model", "m", "--audio", "a.wav", "--out", "t", "--minutes", "-2"], ["--minutes", "above 0"]),
    (["finetune", "--model", "m", "--audio", "a.wav", "--out", "t", "--lr", "-1"], ["--lr", "(0, 1]"]),
    (["finetune", "--model", "m", "--audio", "a.wav", "--out", "t", "--ema", "1.5"], ["--ema", "[0, 1)"]),
    (["finetune", "--model", "m", "--audio", "a.wav", "--out", "t", "--augment", "2"], ["--augment", "[0, 1]"]),
    (["finetune", "--model", "m", "--audio", "a.wav", "--out", "t", "--threads", "0"], ["--threads", "from 1"]),
    (["finetune", "--model", "m", "--audio", "a.wav", "--out", "t", "--crops", "0"], ["--crops", "at least 1"]),
]


@pytest.mark.parametrize("args,words", BAD, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD])
def test_a_bad_option_is_refused_when_parsed_with_its_range(args, words, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # argparse: usage, then one line
    assert err.startswith("whisper-mla ") and "error: argument" in err
    for word in words:
        assert word in err, (word, err)


def test_good_values_parse_to_what_the_engine_uses():
    args = build_parser().parse_args(["transcribe", "a.wav", "--language", "German", "--batch-size", "auto",
                                      "--memory-budget", "1.5g", "--beam-size", "16"])
    assert (args.language, args.batch_size, args.memory_budget, args.beam_size) == ("de", "auto", 3 << 29, 16)
    assert build_parser().parse_args(["transcribe", "a.wav"]).beam_size == 5  # the product's default


def test_micro_batch_above_batch_is_refused_before_any_work(tmp_path, capsys):
    code = main(["finetune", "--model", str(tmp_path / "m"), "--audio", "a.wav", "--out", str(tmp_path / "t"),
                 "--batch", "4", "--micro-batch", "8"])
    assert code == 2 and "--micro-batch 8 is larger than --batch 4" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_options_the_model_decides_are_refused_after_loading_before_any_audio(tiny, sample_path, tmp_path):
    out = run_cli("transcribe", str(sample_path), "--language", "de", "--out", "o", cwd=tmp_path)
    assert out.returncode == 2 and "tiny.en is English-only" in out.stderr
    assert "--model base" in out.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # nothing transcribed
    out = run_cli("convert", "--rank", "100000", "--out", "m", cwd=tmp_path)
    assert out.returncode == 2 and "tiny.en's width d_model=384" in out.stderr
    assert not (tmp_path / "m").exists() and "Traceback" not in out.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_special_inputs_and_odd_names_never_hang_and_stay_on_one_line(tiny, sample_path, tmp_path):
    os.mkfifo(tmp_path / "live.wav")  # opened for reading, it would wait for a writer forever
    (tmp_path / "no recordings here").mkdir()
    (tmp_path / "no recordings here" / "notes.txt").write_text("x")
    newline = tmp_path / "two\nlines.flac"
    shutil.copy(sample_path, newline)
    raw = os.fsencode(tmp_path) + b"/caf\xe9.flac"  # a name that is not UTF-8
    shutil.copy(sample_path, raw)
    out = run_cli("transcribe", "live.wav", "/dev/zero", "no recordings here", str(newline), os.fsdecode(raw),
                  "--format", "txt,json", "--out", "out", "-q", "--beam-size", "1", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: no recordings here: no audio or video files in this folder (looked for .aac, .ac3, .aif, .aiff, "
        ".amr, .caf, .flac, .m4a, .mka, .mp3, .oga, .ogg, .opus, .w64, .wav, .wma and video containers)",
        "error: live.wav: is a named pipe (FIFO), not a file: save the recording to a file first",
        "error: /dev/zero: is a character device, not a file: save the recording to a file first",
    ]
    assert "Traceback" not in out.stderr
    done = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert done == ["caf_.json", "caf_.txt", "two_lines.json", "two_lines.txt"]
    for name in ("caf_.txt", "two_lines.txt"):
        assert "ask not what your country" in (tmp_path / "out" / name).read_text().lower()
    assert '"file": "' in (tmp_path / "out" / "caf_.json").read_text(encoding="utf-8")  # valid UTF-8 JSON
