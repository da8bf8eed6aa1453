"""Average the weights of several bench_finetune runs (a "soup") and score it on the 36 LibriSpeech utterances.

Session 8: the runs are `bench_finetune.py --reductions 0.875 --minutes 2 --threads 2 --layer-ranks
160/48/48/128 --seed S --work WORK_S` for four seeds; their `mla87.5-distilled` folders are what
`whisper-mla finetune --minutes 8 --runs 4` would train as its members (2 minutes each, seeds 0-3)
and averaged the same way (`engine.finetune.soup.average_weights`).

    python docs/measurements/finetune-folds-2026-11-26/soup_eval.py OUT_DIR WORK_0 WORK_1 ...
"""
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from common import librispeech_utterances, reference_text, resolve_audio_dir, wer  # noqa: E402
from engine.finetune.soup import average_weights  # noqa: E402
from engine.model_sources import resolve_model  # noqa: E402
from engine.transcribe import Transcriber, TranscribeOptions  # noqa: E402

torch.set_num_threads(2)
out, works = Path(sys.argv[1]), [Path(w) for w in sys.argv[2:]]
members = [w / "mla87.5-distilled" for w in works]
shutil.copytree(members[0], out, dirs_exist_ok=True)
save_file(average_weights(members), str(out / "model.safetensors"), metadata={"format": "pt"})
utts = librispeech_utterances(resolve_audio_dir(None))
refs = [reference_text(p) for p in utts]
tr = Transcriber(resolve_model(str(out), device="cpu", dtype=torch.float32), TranscribeOptions())
print(f"soup of {len(members)} ({', '.join(w.name for w in works)}): WER "
      f"{100 * wer(refs, [tr.transcribe(p).text for p in utts]).wer:.2f}% on {len(utts)} utterances")
