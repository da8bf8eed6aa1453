"""engine.audio on real speech: shipped clips, plus other formats encoded from them with PyAV."""
from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.audio import SAMPLE_RATE, AudioError, AudioInfo, AudioReader, iter_chunks, load_audio, probe

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "audio"
SHIPPED = sorted(p for p in DATA.iterdir() if p.suffix in (".flac", ".wav"))
JFK = REPO / "assets" / "samples" / "jfk_inaugural_excerpt.flac"
SHORT = DATA / "1089-134691-0000.flac"  # 2.1 s
LONG = DATA / "1089-134686-0000.flac"  # 10.4 s


def read_ref(path: Path) -> tuple[np.ndarray, int]:
    """Independent reference decode: libsndfile, channels averaged."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1).astype(np.float32), sr


def fft_resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Ideal band-limited resampling, independent of libswresample."""
    n_out = round(len(x) * sr_out / sr_in)
    spec = np.fft.rfft(x.astype(np.float64))
    out = np.zeros(n_out // 2 + 1, complex)
    k = min(len(spec), len(out))
    out[:k] = spec[:k]
    return (np.fft.irfft(out, n_out) * n_out / len(x)).astype(np.float32)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def encode(path: Path, x: np.ndarray, sr: int, codec: str | None, rate: int = 16000, layout: str = "mono",
           video: str | None = None, fmt: str | None = None, opts: dict | None = None, out=None) -> Path:
    """Encode mono float32 `x` with PyAV, optionally muxed after a tiny video track."""
    with av.open(out if out is not None else str(path), "w", format=fmt) as c:
        vs = s = None
        if video:  # all streams must exist before the first packet is muxed
            vs = c.add_stream(video, rate=10)
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        if codec:
            s = c.add_stream(codec, rate=rate)
            s.layout = layout
            if opts:
                s.codec_context.options = opts
        if vs is not None:
            for i in range(int(len(x) / sr * 10)):
                vf = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 9 % 256, np.uint8), format="rgb24")
                vf.pts = i
                c.mux(vs.encode(vf))
            c.mux(vs.encode(None))
        if s is not None:
            fr = av.AudioFrame.from_ndarray(x[None, :].astype(np.float32), format="flt", layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = sr, 0, Fraction(1, sr)
            cc = s.codec_context
            rs = av.AudioResampler(cc.codec.audio_formats[0].name, layout, rate, frame_size=cc.frame_size or None)
            for f in rs.resample(fr) + rs.resample(None):
                c.mux(s.encode(f))
            c.mux(s.encode(None))
    return path


class _Pipe(io.RawIOBase):
    """Non-seekable sink: the muxer cannot go back to write a duration (like a browser recording)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.data += bytes(b)
        return len(b)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, np.ndarray]:
    """(2.1 s clip, 10.4 s clip) at 16 kHz."""
    return read_ref(SHORT)[0], read_ref(LONG)[0]


@pytest.fixture(scope="module")
def media(tmp_path_factory, speech) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    x, long = speech
    m = {
        "mp3": encode(d / "a.mp3", long, 16000, "libmp3lame", 16000),
        "opus": encode(d / "a.ogg", long, 16000, "libopus", 48000),
        "aac": encode(d / "a.m4a", long, 16000, "aac", 44100, "stereo"),
        "mp4": encode(d / "v.mp4", long, 16000, "aac", 48000, "stereo", video="libx264"),
        "mkv": encode(d / "v.mkv", long, 16000, "libopus", 48000, "stereo", video="mpeg4"),
        "video_only": encode(d / "silent.mp4", long, 16000, None, video="libx264"),
    }
    pipe = _Pipe()
    encode(d / "x", x, 16000, "libopus", 48000, fmt="webm", out=pipe)
    m["webm_nodur"] = d / "nodur.webm"
    m["webm_nodur"].write_bytes(pipe.data)
    return m


# ---------------------------------------------------------------- shipped clips


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_clips_match_libsndfile(path: Path) -> None:
    ref, sr = read_ref(path)
    assert sr == SAMPLE_RATE
    info = probe(path)
    assert isinstance(info, AudioInfo) and info.path == str(path)
    assert (info.sample_rate, info.channels) == (16000, 1)
    assert info.duration_s == pytest.approx(len(ref) / sr, abs=1e-3)
    a = load_audio(path)
    assert a.dtype == np.float32 and a.ndim == 1
    assert len(a) == round(info.duration_s * SAMPLE_RATE) == len(ref)
    np.testing.assert_allclose(a, ref, atol=1e-6)


def test_jfk_44k_stereo_24bit_resampled() -> None:
    info = probe(JFK)
    assert (info.sample_rate, info.channels, info.codec, info.container) == (44100, 2, "flac", "flac")
    assert info.duration_s == pytest.approx(11.0, abs=1e-3)
    a = load_audio(JFK)
    assert a.dtype == np.float32 and len(a) == 176000
    ref44, _ = read_ref(JFK)
    assert corr(a, fft_resample(ref44, 44100, 16000)) > 0.99


# ---------------------------------------------------------------- other formats


@pytest.mark.parametrize("kind", ["mp3", "opus", "aac", "mp4", "mkv"])
def test_lossy_and_video_containers(media, speech, kind: str) -> None:
    long = speech[1]
    info = probe(media[kind])
    a = load_audio(media[kind])
    assert a.dtype == np.float32 and a.ndim == 1
    assert abs(len(a) - info.duration_s * SAMPLE_RATE) <= 0.02 * SAMPLE_RATE  # declared vs decoded
    assert abs(len(a) - len(long)) <= 0.02 * SAMPLE_RATE  # encoder delay/padding removed
    assert corr(a, long) > 0.95  # at lag 0: priming samples were skipped, not kept


def test_duration_computed_when_container_has_none(media, speech) -> None:
    p = media["webm_nodur"]
    assert av.open(str(p)).duration is None
    info = probe(p)
    assert info.duration_s == pytest.approx(len(speech[0]) / SAMPLE_RATE, abs=0.02)
    assert len(load_audio(p)) == round(info.duration_s * SAMPLE_RATE)


@pytest.mark.parametrize("rate", [8000, 22050, 192000])
def test_resampled_wav_rates(tmp_path, speech, rate: int) -> None:
    x = speech[1]
    p = tmp_path / f"r{rate}.wav"
    sf.write(p, fft_resample(x, 16000, rate), rate, subtype="PCM_24")
    a = load_audio(p)
    assert len(a) == len(x)
    band = fft_resample(fft_resample(x, 16000, rate), rate, 16000) if rate < 16000 else x
    assert corr(a, band) > 0.99
    assert corr(a, x) > 0.95


@pytest.mark.parametrize("subtype,tol", [("PCM_U8", 2 / 128), ("PCM_16", 1e-4), ("PCM_24", 1e-6),
                                         ("PCM_32", 1e-6), ("FLOAT", 1e-7), ("DOUBLE", 1e-7)])
def test_wav_sample_formats(tmp_path, speech, subtype: str, tol: float) -> None:
    x = speech[0]
    p = tmp_path / f"{subtype}.wav"
    sf.write(p, x, 16000, subtype=subtype)
    a = load_audio(p)
    assert a.dtype == np.float32 and len(a) == len(x)
    np.testing.assert_allclose(a, x, atol=tol)


@pytest.mark.parametrize("gain", [1e3, 1e30, 3e38])
def test_float_wav_far_past_full_scale_is_scaled_down_whole_file(tmp_path, speech, gain: float) -> None:
    # finite float samples of any size: Whisper needs full-scale audio (at 1000x it heard "What are
    # you doing?", at 1e30 its features overflowed), so the file's peak is brought to 1.0
    x = speech[1]
    p = tmp_path / "loud.wav"
    sf.write(p, (x * gain).astype(np.float32), 16000, subtype="FLOAT")
    a = load_audio(p)
    np.testing.assert_allclose(a, x / np.abs(x).max(), atol=1e-6)
    with AudioReader(p) as r:  # a window read later in the file gets the same whole-file gain
        np.testing.assert_allclose(r.read(5 * SAMPLE_RATE, SAMPLE_RATE), a[5 * SAMPLE_RATE: 6 * SAMPLE_RATE])
    quiet = tmp_path / "overs.wav"  # ordinary overs of a float master are left alone
    sf.write(quiet, (x * 1.2 / np.abs(x).max()).astype(np.float32), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(quiet), x * 1.2 / np.abs(x).max(), atol=1e-6)


def test_downmix_is_channel_average(tmp_path, speech) -> None:
    x = speech[0]
    gains = np.array([1.0, 0.5, 0.8, 0.0, 0.3, 0.6], np.float32)
    p6 = tmp_path / "six.wav"
    sf.write(p6, x[:, None] * gains[None, :], 16000, subtype="FLOAT")
    assert probe(p6).channels == 6
    np.testing.assert_allclose(load_audio(p6), x * gains.mean(), atol=1e-5)
    p2 = tmp_path / "dual_mono.flac"
    sf.write(p2, np.stack([x, x], axis=1), 16000, subtype="PCM_16")
    np.testing.assert_allclose(load_audio(p2), load_audio(SHORT), atol=1e-6)  # not 3 dB louder


def test_unicode_and_spaces_in_filename(tmp_path) -> None:
    p = tmp_path / "Zoë's  interview – 会议 01 .flac"
    shutil.copy(SHORT, p)
    assert probe(str(p)).path == str(p)
    np.testing.assert_array_equal(load_audio(p), load_audio(SHORT))


def test_header_underreporting_duration_loses_nothing(tmp_path) -> None:
    b = bytearray(LONG.read_bytes())
    v = int.from_bytes(b[18:26], "big")  # FLAC STREAMINFO: ...| 36-bit total samples
    total = v & (2**36 - 1)
    b[18:26] = ((v - total) | total // 2).to_bytes(8, "big")
    p = tmp_path / "half_declared.flac"
    p.write_bytes(bytes(b))
    assert probe(p).duration_s == pytest.approx(total / 2 / SAMPLE_RATE, abs=1e-3)
    np.testing.assert_array_equal(load_audio(p), load_audio(LONG))  # padding trim backs off
    with AudioReader(p) as r:
        assert r.total_samples == total // 2  # declared, until the end is reached
        r.read(0, 2 * total)
        assert r.exhausted and r.total_samples == total


# ---------------------------------------------------------------- bad inputs


def _bad(kind: str, d: Path, media: dict[str, Path], x: np.ndarray) -> tuple[Path, str, bool]:
    """(path, expected reason substring, does probe() already fail?)"""
    wav, flac, mp3 = d / "ok.wav", d / "ok.flac", d / "ok.mp3"
    sf.write(wav, x, 16000)
    sf.write(flac, x, 16000)
    shutil.copy(media["mp3"], mp3)
    rng = np.random.default_rng(7)
    if kind == "missing":
        return d / "nope.wav", "file not found", True
    if kind == "directory":
        (d / "dir.wav").mkdir()
        return d / "dir.wav", "is a directory", True
    if kind.startswith("empty"):
        (p := d / f"empty.{kind[6:] or 'mp3'}").write_bytes(b"")
        return p, "file is empty", True
    if kind == "zero_wav":
        sf.write(d / "zero.wav", np.zeros(0, np.float32), 16000)
        return d / "zero.wav", "contains no audio samples", True
    if kind == "zero_flac":
        with av.open(str(d / "zero.flac"), "w") as c:
            s = c.add_stream("flac", rate=16000)
            c.mux(s.encode(None))
        return d / "zero.flac", "contains no audio samples", True
    if kind.startswith("trunc_"):
        src = {"wav": wav, "flac": flac, "mp3": mp3}[kind[6:]]
        b = src.read_bytes()
        (p := d / f"t{src.suffix}").write_bytes(b[: len(b) // 2])
        return p, "corrupt or truncated audio", kind == "trunc_wav"
    if kind.startswith("corrupt_"):
        b = bytearray((flac if kind == "corrupt_flac" else mp3).read_bytes())
        n = len(b)
        b[n // 3: 2 * n // 3] = rng.bytes(2 * n // 3 - n // 3)
        (p := d / f"c.{kind[8:]}").write_bytes(bytes(b))
        return p, "corrupt or truncated audio", False
    if kind.startswith("random_"):
        (p := d / f"r.{kind[7:]}").write_bytes(rng.bytes(40000))
        return p, "not an audio file or unsupported format", True
    if kind in ("text", "text_as_wav"):
        (p := d / ("notes.txt" if kind == "text" else "notes.wav")).write_text("meeting notes\n" * 200)
        return p, "not an audio file or unsupported format", True
    if kind == "video_no_audio":
        return media["video_only"], "no audio stream", True
    raise AssertionError(kind)


def _read_through(path: Path) -> None:
    """Like the transcriber: 30 s windows until the reader has seen the end of the stream."""
    with AudioReader(path) as r:
        start = 0
        while not r.exhausted or start < r.total_samples:
            r.read(start, 30 * SAMPLE_RATE)
            start += 30 * SAMPLE_RATE


BAD = ["missing", "directory", "empty", "empty_wav", "empty_flac", "zero_wav", "zero_flac", "trunc_wav",
       "trunc_flac", "trunc_mp3", "corrupt_flac", "corrupt_mp3", "random_mp3", "random_wav", "random_flac",
       "random_m4a", "random_ogg", "random_opus", "random_aac", "random_mp4", "random_mkv", "random_webm", "text",
       "text_as_wav", "video_no_audio"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_inputs_raise_audio_error(tmp_path, media, speech, kind: str) -> None:
    path, reason, probe_fails = _bad(kind, tmp_path, media, speech[1])
    calls = [load_audio, _read_through, lambda p: list(iter_chunks(p, 1.0))]
    if probe_fails:
        calls.append(probe)
    else:
        probe(path)  # header is fine; the damage only shows while decoding
    for call in calls:
        with pytest.raises(AudioError) as ei:
            call(path)
        err = ei.value
        assert reason in err.reason, (call, err.reason)
        assert err.path == str(path) and str(err) == f"{path}: {err.reason}"
        assert pickle.loads(pickle.dumps(err)).reason == err.reason  # crosses process boundaries


def test_permission_denied(tmp_path) -> None:
    p = tmp_path / "locked.flac"
    shutil.copy(SHORT, p)
    p.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(AudioError, match="permission denied"):
            load_audio(p)
        return
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("running as root and setpriv is unavailable to drop CAP_DAC_OVERRIDE")
    code = ("from engine.audio import load_audio, probe, AudioError\n"
            "for f in (load_audio, probe):\n"
            "    try: f(%r)\n    except AudioError as e: print(e.reason)\n" % str(p))
    r = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", code],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.stdout.splitlines() == ["permission denied"] * 2, r.stderr


# ---------------------------------------------------------------- streaming


@pytest.fixture(scope="module")
def long_flac(tmp_path_factory) -> Path:
    """~23 s of the shipped LibriSpeech clips back to back."""
    x = np.concatenate([read_ref(p)[0] for p in SHIPPED if p.suffix == ".flac"])
    p = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(p, x, 16000)
    return p


@pytest.mark.parametrize("which", ["flac", "jfk", "mp3", "aac"])
def test_reader_windows_equal_load_audio(long_flac, media, which: str) -> None:
    path = {"flac": long_flac, "jfk": JFK, "mp3": media["mp3"], "aac": media["aac"]}[which]
    ref = load_audio(path)
    win, step = 3 * SAMPLE_RATE, 2 * SAMPLE_RATE  # overlapping, like 30 s windows / <=30 s steps
    with AudioReader(path) as r:
        assert r.total_samples == len(ref)
        for start in range(0, len(ref) + step, step):
            w = r.read(start, win)
            exp = np.zeros(win, np.float32)
            seg = ref[start:start + win]
            exp[:len(seg)] = seg
            np.testing.assert_array_equal(w, exp)
            assert len(r._buf) <= win + SAMPLE_RATE  # bounded: nothing kept before `start`
        assert r.exhausted and r.total_samples == len(ref)
        assert not r.read(len(ref) + 5, 100).any()  # past the end: zero padding
        # backwards (re-open + seek), then forward again
        tol = 0 if which in ("flac", "jfk", "mp3") else 1e-2  # AAC noise substitution is random
        for start, n in [(len(ref) // 2, 20000), (5 * SAMPLE_RATE + 123, 40000), (7, 500), (len(ref) - 100, 400)]:
            w = r.read(start, n)
            exp = np.zeros(n, np.float32)
            seg = ref[start:start + n]
            exp[:len(seg)] = seg
            np.testing.assert_allclose(w, exp, atol=tol, rtol=0)
    with pytest.raises(ValueError):
        r.read(0, 10)


def test_reader_non_seekable_container_restarts(media) -> None:
    p = media["mkv"]  # matroska pts are in ms, so a re-open decodes from the start
    ref = load_audio(p)
    with AudioReader(p) as r:
        r.read(8 * SAMPLE_RATE, SAMPLE_RATE)
        np.testing.assert_array_equal(r.read(3 * SAMPLE_RATE, 5000), ref[3 * SAMPLE_RATE:3 * SAMPLE_RATE + 5000])


def test_reader_far_jumps_and_reads_past_the_end(tmp_path, media) -> None:
    p = tmp_path / "83s.flac"
    sf.write(p, np.tile(read_ref(LONG)[0], 8), 16000)
    ref = load_audio(p)
    with AudioReader(p) as r:
        r.read(0, SAMPLE_RATE)
        s = 70 * SAMPLE_RATE + 17  # > 60 s ahead: re-open and seek instead of decoding through
        np.testing.assert_array_equal(r.read(s, 48000), ref[s:s + 48000])
        np.testing.assert_array_equal(r.read(2 * SAMPLE_RATE, 1000), ref[32000:33000])
    mkv_len = len(load_audio(media["mkv"]))
    with AudioReader(media["mkv"]) as r:  # jump beyond the end of a stream that cannot seek
        assert not r.read(mkv_len + 5 * SAMPLE_RATE, 100).any()
        assert r.exhausted and r.total_samples == mkv_len


@pytest.mark.parametrize("chunk_s", [1.0, 2.5, 30.0])
def test_iter_chunks_concatenate_to_load_audio(long_flac, chunk_s: float) -> None:
    ref = load_audio(long_flac)
    chunks = list(iter_chunks(long_flac, chunk_s))
    n = round(chunk_s * SAMPLE_RATE)
    assert all(len(c) == n for c in chunks[:-1]) and 0 < len(chunks[-1]) <= n
    assert all(c.dtype == np.float32 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), ref)
    with pytest.raises(ValueError):
        iter_chunks(long_flac, 0)


# ---------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, bytes]:
    x = read_ref(SHORT)[0][4000:12000]
    d = tmp_path_factory.mktemp("tiny")
    out = {}
    for ext, subtype in (("wav", "PCM_16"), ("flac", "PCM_16")):
        sf.write(d / f"t.{ext}", x, 16000, subtype=subtype)
        out[ext] = (d / f"t.{ext}").read_bytes()
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ext=st.sampled_from(["wav", "flac"]),
       flips=st.lists(st.tuples(st.integers(0, 127), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(1, 16100)))
def test_corrupted_header_is_audio_error_or_audio(tmp_path, tiny, ext, flips, cut) -> None:
    b = bytearray(tiny[ext])
    for i, v in flips:
        b[i] = v
    p = tmp_path / f"fuzz.{ext}"
    p.write_bytes(bytes(b[:cut]))
    try:
        a = load_audio(p)
    except AudioError as e:
        assert e.reason and e.path == str(p)
    else:
        assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 1 and len(a) > 0
        assert np.isfinite(a).all()
