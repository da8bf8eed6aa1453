import sys, time, torch
sys.path.insert(0, "/work/main/bench"); sys.path.insert(0, "/work/main")
from common import LONGFORM_FILES, librispeech_utterances, reference_text, resolve_audio_dir, wer
from engine.model_sources import resolve_model
from engine.transcribe import TranscribeOptions, Transcriber
import engine.mla.attention as A
torch.set_num_threads(2)
audio = resolve_audio_dir(None)
sets = {"utt": librispeech_utterances(audio), "libri": [audio / LONGFORM_FILES["librispeech_long"]]}
orig_store = A.store_latent
g = torch.Generator().manual_seed(0)
ROT = {}
def rot(d):
    if d not in ROT:
        q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        ROT[d] = (q * torch.sign(torch.diagonal(r))).float()
    return ROT[d]
def fq(x, group):
    shp = x.shape
    xg = x.reshape(*shp[:-1], -1, group)
    s = xg.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
    return (torch.round(xg / s).clamp(-127, 127) * s).reshape(shp)
def make(variant):
    def store(cache, latent, idx):
        if variant == "none": return orig_store(cache, latent, idx)
        group = latent.shape[-1] if "tok" in variant else int(variant.split("g")[-1])
        if variant.startswith("rot"):
            R = rot(latent.shape[-1]); q = fq(latent @ R, group) @ R.T
        else:
            q = fq(latent, group)
        return orig_store(cache, q, idx)
    return store
loaded = resolve_model(None, "cpu", torch.float32, kv_cache="compressed")
base = {}
for variant in ["none"] + sys.argv[1].split(","):
    A.store_latent = make(variant)
    for name, files in sets.items():
        for beam in (1, 5):
            if name == "libri" and beam == 5 and "--long5" not in sys.argv: continue
            t = time.time()
            texts = [Transcriber(loaded, TranscribeOptions(beam_size=beam)).transcribe(f).text for f in files]
            ref = [reference_text(f) for f in files]
            if variant == "none": base[(name, beam)] = texts
            print(f"{variant:10s} {name:6s} b{beam} WER {100*wer(ref, texts).wer:6.2f} differs {100*wer(base[(name,beam)], texts).wer:5.2f}  {time.time()-t:.0f}s", flush=True)
