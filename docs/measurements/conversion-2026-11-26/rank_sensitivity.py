"""Per-layer rank sensitivity of tiny.en's decoder self-attention at 75% (2026-11-26, session 7).

For each rank of a grid, convert (calibrated, layers fitted independently) and put one converted
layer at a time into stock; KL(stock || that model) over the teacher-forced calibration sequences.
Then the allocation of the same total rank (4 x the uniform rank) with the least summed KL. Its WER is measured
with `bench/bench_conversion.py 0.75,ranks=A/B/C/D` (rank-sensitivity-eval.*).

    python docs/measurements/conversion-2026-11-26/rank_sensitivity.py sample|ljjfk [REDUCTION [GRID]]
    (defaults 0.75 and 96,128,...,320; e.g. ljjfk 0.875 48,64,80,96,128,160,192)
"""
import copy, itertools, sys, json
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "bench"))
import torch
torch.set_num_threads(2)
from engine.model_sources import resolve_model
from engine.mla import convert_model
from engine.mla.calibrate import collect_moments, features_for_files, DEFAULT_CALIBRATION
from common import resolve_audio_dir, LONGFORM_FILES

stock = resolve_model(None, device="cpu", dtype=torch.float32)
audio = resolve_audio_dir(None)
cal_sets = {"sample": [DEFAULT_CALIBRATION], "ljjfk": [audio / LONGFORM_FILES["ljspeech_long"], audio / "jfk_inaugural_excerpt.flac"]}
which = sys.argv[1] if len(sys.argv) > 1 else "sample"
feats = features_for_files(cal_sets[which], n_mels=stock.model.config.num_mel_bins)
seqs = []
collect_moments(stock.model, feats, ("decoder-self",), keep_sequences=seqs)
print("sequences", len(seqs), sum(len(s.tokens) for s in seqs), flush=True)

@torch.inference_mode()
def logp(model):
    out = []
    for s in seqs:
        h = model.model.decoder(input_ids=torch.tensor([s.tokens]), encoder_hidden_states=s.encoder_output, use_cache=False).last_hidden_state
        out.append((torch.log_softmax(model.proj_out(h).float(), -1)[0], s.weight))
    return out
ref = logp(stock.model)
def kl(model):
    num = den = 0.0
    for (lp, w), (lq, _) in zip(ref, logp(model)):
        k = (lp.exp() * (lp - lq)).sum(-1)
        num += w * float(k.sum()); den += w * k.numel()
    return num / den

reduction = float(sys.argv[2]) if len(sys.argv) > 2 else 0.75
grid = [int(x) for x in sys.argv[3].split(",")] if len(sys.argv) > 3 else [96, 128, 160, 192, 224, 256, 288, 320]
d = stock.model.config.d_model
uniform = round((1 - reduction) * 2 * d)
L = len(stock.model.model.decoder.layers)
table = {}
for r in grid:
    m = copy.deepcopy(stock.model)
    convert_model(m, rank=r, calibration_audio=cal_sets[which], compensate=False)
    for i in range(L):
        v = copy.deepcopy(stock.model)
        v.model.decoder.layers[i].self_attn = m.model.decoder.layers[i].self_attn
        table[(i, r)] = kl(v)
    print(r, [round(table[(i, r)], 5) for i in range(L)], "all layers", round(kl(m), 5), flush=True)
best = min((c for c in itertools.product(grid, repeat=L) if sum(c) == uniform * L), key=lambda c: sum(table[(i, r)] for i, r in enumerate(c)))
print("uniform sum", sum(table[(i, uniform)] for i in range(L)), "best", best, sum(table[(i, r)] for i, r in enumerate(best)))
json.dump({"grid": grid, "table": {f"{i},{r}": v for (i, r), v in table.items()}, "best": best}, open(Path(__file__).with_name(f"rank-sensitivity-kl-{which}{'' if reduction == 0.75 else f'-{reduction}'}.json"), "w"))
