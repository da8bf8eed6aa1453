"""Try codec variants on the sensitive sets: libri b1 (and utt b5 with --utt)."""
import sys, time, torch
sys.path.insert(0, "/work/main/bench"); sys.path.insert(0, "/work/main")
from common import LONGFORM_FILES, librispeech_utterances, reference_text, resolve_audio_dir, wer
from engine.model_sources import resolve_model
from engine.transcribe import TranscribeOptions, Transcriber
import engine.mla.latent_int8 as L
torch.set_num_threads(2)
audio = resolve_audio_dir(None)
sets = {"libri": ([audio / LONGFORM_FILES["librispeech_long"]], 1)}
if "--utt" in sys.argv: sets["utt"] = (librispeech_utterances(audio), 5)
if "--lj5" in sys.argv: sets["lj5"] = ([audio / LONGFORM_FILES["ljspeech_long"]], 5)
if "--libri5" in sys.argv: sets["libri5"] = ([audio / LONGFORM_FILES["librispeech_long"]], 5)
orig_rot = L.rotation
def signed(n):
    g = torch.Generator().manual_seed(7)
    s = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
    return s[:, None] * orig_rot(n)
def randorth(n):
    g = torch.Generator().manual_seed(0)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))
stock = resolve_model(None, "cpu", kv_cache="stock")
base = {k: [Transcriber(stock, TranscribeOptions(beam_size=b)).transcribe(f).text for f in fs] for k, (fs, b) in sets.items()}
for v in sys.argv[1].split(","):
    name, group = v.split(":")
    L.rotation = {"had": orig_rot, "signed": signed, "randorth": randorth}[name]
    L.GROUP = int(group)
    orig_group_for = L.group_for
    m = resolve_model(None, "cpu", kv_cache="compressed")
    for attn in (l.self_attn for l in m.model.model.decoder.layers):
        attn.latent_codec.group = int(group)
    for k, (fs, b) in sets.items():
        t = time.time()
        texts = [Transcriber(m, TranscribeOptions(beam_size=b)).transcribe(f).text for f in fs]
        ref = [reference_text(f) for f in fs]
        print(f"{v:12s} {k:6s} b{b} WER {100*wer(ref, texts).wer:6.2f} (stock {100*wer(ref, base[k]).wer:6.2f}) differs {100*wer(base[k], texts).wer:5.2f}  {time.time()-t:.0f}s", flush=True)
