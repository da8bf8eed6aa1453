import sys, copy, dataclasses, json, time
sys.path.insert(0, "bench")
import bench_conversion as bc
from common import LONGFORM_FILES, librispeech_utterances, reference_text, resolve_audio_dir, wer
import torch
import engine.mla.convert as conv
from engine.mla.factorize import value_spread
from engine.model_sources import resolve_model
torch.set_num_threads(2)
audio = resolve_audio_dir(None)
lj = audio / LONGFORM_FILES["ljspeech_long"]
sets = {"utts": librispeech_utterances(audio), "concat": [audio / LONGFORM_FILES["librispeech_long"]], "lj": [lj]}
refs = {n: [reference_text(p) for p in f] for n, f in sets.items()}
stock = resolve_model(None, device="cpu", dtype=torch.float32)
st = bc.transcribe_sets(stock, sets)
for red, cal, fac in [(0.875, "ljjfk", 0.5), (0.75, "sample", 0.5), (0.875, "ljjfk", 0.25), (0.875, "ljjfk", 2.0)]:
    conv.value_spread = lambda *a, f=fac: f * value_spread(*a)
    m = copy.deepcopy(stock.model)
    conv.convert_model(m, kv_reduction=red, calibration_audio=None if cal == "sample" else [lj, audio / bc.JFK],
                       key_scale="auto", source="tiny.en")
    t = bc.transcribe_sets(dataclasses.replace(stock, model=m), sets)
    print(red, cal, fac, {k: round(100 * wer(refs[k], v).wer, 2) for k, v in t.items()},
          "vs stock", {k: round(100 * wer(st[k], v).wer, 2) for k, v in t.items()}, flush=True)
