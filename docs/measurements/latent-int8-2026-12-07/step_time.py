"""Decoder step time of stock, exact and compressed at 1 and 5 rows (python step_time.py; 2 threads)."""
import time, torch, sys
sys.path.insert(0, "/work/main")
from engine.model_sources import resolve_model
from engine.kv_cache import new_cache
torch.set_num_threads(2)
res = {}
for mode in ("stock", "exact", "compressed"):
    m = resolve_model(None, "cpu", kv_cache=mode).model
    enc = torch.randn(1, 1500, 384)
    for b in (1, 5):
        e = enc if mode != "stock" else enc.expand(b, -1, -1)
        times = []
        with torch.inference_mode():
            for rep in range(3):
                cache = new_cache()
                m.model.decoder(input_ids=torch.randint(0, 50000, (b, 60)), encoder_hidden_states=e, cache=cache, use_cache=True)
                t = time.perf_counter()
                for i in range(100):
                    out = m.model.decoder(input_ids=torch.randint(0, 50000, (b, 1)), encoder_hidden_states=e, cache=cache, use_cache=True)
                    m.proj_out(out.last_hidden_state)
                times.append((time.perf_counter() - t) / 100 * 1e3)
        res[(mode, b)] = min(times)
        print(mode, b, f"{min(times):.2f} ms/step", flush=True)
