"""WER of model folders on the LibriSpeech concat (and LJ), product Transcriber, CLI defaults."""
import sys, json, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "bench"))
from common import resolve_audio_dir, reference_text, wer, LONGFORM_FILES
import torch
torch.set_num_threads(2)
from engine.model_sources import resolve_model
from engine.transcribe import Transcriber, TranscribeOptions

audio = resolve_audio_dir(None)
sets = [audio / LONGFORM_FILES[k] for k in sys.argv[1].split(",")]
out = {}
stock = {}
for spec in [None] + sys.argv[2:]:
    loaded = resolve_model(spec, device="cpu", dtype=torch.float32)
    tr = Transcriber(loaded, TranscribeOptions())
    for f in sets:
        t0 = time.perf_counter()
        text = tr.transcribe(f).text
        ref = reference_text(f)
        w = wer([ref], [text]).wer
        vs = wer([stock[f.name]], [text]).wer if spec else 0.0
        if spec is None:
            stock[f.name] = text
        print(f"{spec or 'stock'} {f.name}: WER {100*w:.2f}% vs stock {100*vs:.2f}% ({time.perf_counter()-t0:.0f} s)", flush=True)
        out.setdefault(spec or "stock", {})[f.name] = {"wer": w, "vs_stock": vs, "text": text}
json.dump(out, open("longform_eval.json", "w"), indent=1)  # transcripts and WERs, in the current folder
