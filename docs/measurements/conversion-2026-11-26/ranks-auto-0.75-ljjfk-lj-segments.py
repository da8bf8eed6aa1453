# Session 8: convert tiny.en at 75% on LJ + JFK (uniform vs measured split, timed), then the LJ Speech reading by the split model and by stock, segment by segment.
# WHISPER_MLA_CACHE=... python docs/measurements/conversion-2026-11-26/ranks-auto-0.75-ljjfk-lj-segments.py
import sys, time, copy
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import torch; torch.set_num_threads(2)
from common import resolve_audio_dir, LONGFORM_FILES
from engine.model_sources import resolve_model
from engine.mla import convert_model
from engine.transcribe import Transcriber, TranscribeOptions
audio = resolve_audio_dir(None)
lj = audio / LONGFORM_FILES["ljspeech_long"]; jfk = audio / "jfk_inaugural_excerpt.flac"
stock = resolve_model(None, device="cpu", dtype=torch.float32)
times = {}
for alloc in ("uniform", "sensitivity"):
    m = copy.deepcopy(stock.model)
    t0 = time.perf_counter()
    cfg = convert_model(m, kv_reduction=0.75, calibration_audio=[lj, jfk], rank_allocation=alloc)
    times[alloc] = time.perf_counter() - t0
    print(alloc, cfg.ranks, f"{times[alloc]:.1f} s", flush=True)
from dataclasses import replace
res = Transcriber(replace(stock, model=m), TranscribeOptions()).transcribe(str(lj))
ref = Transcriber(stock, TranscribeOptions()).transcribe(str(lj))
print("MLA segments", len(res.segments), "stock", len(ref.segments))
for s in res.segments: print(f"{s.start:7.2f}-{s.end:7.2f} {s.text}")
print("----- stock")
for s in ref.segments: print(f"{s.start:7.2f}-{s.end:7.2f} {s.text}")
