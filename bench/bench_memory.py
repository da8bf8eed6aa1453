"""Memory benchmark: stock Whisper vs Whisper-MLA, and the cost of the memory sampler.

    .venv/bin/python bench/bench_memory.py [--quick] [--out results.json]

Part 1, peaks: for each long-form file of ../shared/audio, each model (stock tiny.en; MLA
at 75% and 87.5% KV reduction, calibrated with the package's default audio; the same plus
exact cache-free cross-attention), each beam size (1, 5) and batch size (1, 8), one
transcription in a *fresh process* (so peak RSS is not inherited from an earlier run),
with the memory sampler attached. Reported: peak KV-cache bytes (self / cross, exact, from
the cache tensors), peak RSS and its rise over the RSS after loading, wall time, RTF, WER
against the stock run with the same settings. MLA models are converted once and saved
(--mla-dir) so every run loads them like a user would.

Part 2, sampler overhead: the same file transcribed with and without a 20 Hz sampler,
interleaved, median of 3 each; plus the CPU time the sampler thread itself used.

--quick: one file, beam 1 only. Results go to stdout as tables and, with --out, as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_AUDIO = REPO.parent / "shared" / "audio"
LONG_FILES = ("longform_ljspeech_LJ001-0001_to_0032.flac", "longform_librispeech_concat.flac")
SAMPLE = REPO / "assets" / "samples" / "jfk_inaugural_excerpt.flac"
# name -> convert_model arguments (None: stock)
CONFIGS: dict[str, dict | None] = {
    "stock": None,
    "mla75": {"kv_reduction": 0.75},
    "mla87.5": {"kv_reduction": 0.875},
    "mla75+xc": {"kv_reduction": 0.75, "exact_cross": True},
    "mla87.5+xc": {"kv_reduction": 0.875, "exact_cross": True},
}
MiB = 1 << 20


def prepare_models(names: list[str], mla_dir: Path) -> dict[str, str | None]:
    """Model spec per config; MLA folders are converted once and reused."""
    from engine.mla import convert_model, is_mla_dir, save_mla_model
    from engine.model_sources import resolve_model

    specs: dict[str, str | None] = {}
    for name in names:
        kw = CONFIGS[name]
        if kw is None:
            specs[name] = None
            continue
        folder = mla_dir / name
        if not is_mla_dir(folder):
            print(f"converting tiny.en -> {name} ...", file=sys.stderr, flush=True)
            loaded = resolve_model(None, device="cpu")
            cfg = convert_model(loaded.model, source=loaded.info.source, **kw)
            save_mla_model(loaded.model, cfg, folder, tokenizer=loaded.tokenizer, extra_files_from=loaded.folder)
        specs[name] = str(folder)
    return specs


def child(spec: str | None, file: str, beam: int, batch: int) -> dict:
    """One measured transcription (runs in its own process)."""
    from engine.memory.probes import rss_bytes
    from engine.memory.sampler import MemorySampler
    from engine.model_sources import resolve_model
    from engine.transcribe import Transcriber, TranscribeOptions

    loaded = resolve_model(spec, device="cpu")
    tr = Transcriber(loaded, TranscribeOptions(beam_size=beam, batch_size=batch))
    base = rss_bytes()
    with MemorySampler(kv_source=lambda: tr.decoder.live_kv_bytes(), device="cpu") as sampler:
        transcript = tr.transcribe(file)
    st = transcript.stats
    peak_rss = max(st.peak_rss_bytes, sampler.peak().rss_bytes or 0)
    return {"kv_mode": loaded.info.kv_mode, "wall_s": st.wall_s, "rtf": st.rtf, "audio_s": st.audio_s,
            "kv_self": st.kv_cache_peak.self_attn, "kv_cross": st.kv_cache_peak.cross_attn,
            "live_kv_peak": sampler.peak().kv_total_bytes, "peak_rss": peak_rss, "rss_after_load": base,
            "rss_rise": peak_rss - (base or 0), "samples": sampler.sample_count, "text": transcript.text}


def run_child(spec: str | None, file: Path, beam: int, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--child", spec or "-", str(file), str(beam), str(batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"child failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_peaks(files: list[Path], names: list[str], beams: list[int], batches: list[int], mla_dir: Path,
                jsonl: Path | None) -> list[dict]:
    from engine.wer import word_error_rate

    specs = prepare_models(names, mla_dir)
    rows: list[dict] = []
    for file in files:
        for beam in beams:
            for batch in batches:
                stock_text = None
                for name in names:
                    t0 = time.perf_counter()
                    r = run_child(specs[name], file, beam, batch)
                    r.update(file=file.name, model=name, beam=beam, batch=batch)
                    if name == "stock":
                        stock_text = r["text"]
                    r["wer_vs_stock"] = (word_error_rate([stock_text], [r["text"]]).wer
                                         if stock_text is not None else None)
                    rows.append(r)
                    print(f"  {file.name[:28]:<28} {name:<11} beam {beam} batch {batch}: "
                          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
                    if jsonl:
                        with jsonl.open("a") as fh:
                            fh.write(json.dumps({k: v for k, v in r.items() if k != "text"}) + "\n")
    return rows


def print_peaks(rows: list[dict]) -> None:
    head = (f"{'file':<22} {'model':<11} {'beam':>4} {'batch':>5} {'KV self':>10} {'KV cross':>10} {'KV total':>10} "
            f"{'saved':>7} {'peak RSS':>9} {'RSS rise':>9} {'wall s':>7} {'RTF':>6} {'WER/stock':>9}")
    print(head)
    print("-" * len(head))
    stock_total: dict[tuple, int] = {}
    for r in rows:
        key = (r["file"], r["beam"], r["batch"])
        total = r["kv_self"] + r["kv_cross"]
        if r["model"] == "stock":
            stock_total[key] = total
        saved = (f"{100 * (1 - total / stock_total[key]):.1f}%" if stock_total.get(key) else "")
        wer = "" if r["wer_vs_stock"] is None else f"{100 * r['wer_vs_stock']:.1f}%"
        print(f"{r['file'][:22]:<22} {r['model']:<11} {r['beam']:>4} {r['batch']:>5} {r['kv_self'] / MiB:>8.2f}Mi "
              f"{r['kv_cross'] / MiB:>8.2f}Mi {total / MiB:>8.2f}Mi {saved:>7} {r['peak_rss'] / MiB:>7.0f}Mi "
              f"{r['rss_rise'] / MiB:>7.0f}Mi {r['wall_s']:>7.1f} {r['rtf']:>6.3f} {wer:>9}")


def bench_overhead(file: Path, repeats: int = 3) -> dict:
    """Transcribe `file` with and without the sampler, interleaved; medians and the sampler's own CPU time."""
    from engine.memory.sampler import MemorySampler
    from engine.model_sources import resolve_model
    from engine.transcribe import Transcriber

    loaded = resolve_model(None, device="cpu")
    tr = Transcriber(loaded)
    tr.transcribe(file)  # warm-up
    plain, sampled, cpu, counts = [], [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tr.transcribe(file)
        plain.append(time.perf_counter() - t0)
        sampler = MemorySampler(kv_source=lambda: tr.decoder.live_kv_bytes(), device="cpu")
        t0 = time.perf_counter()
        with sampler:
            tr.transcribe(file)
        sampled.append(time.perf_counter() - t0)
        cpu.append(sampler.cpu_time_s)
        counts.append(sampler.sample_count)
    m_plain, m_sampled = statistics.median(plain), statistics.median(sampled)
    return {"file": file.name, "plain_s": plain, "sampled_s": sampled, "median_plain_s": m_plain,
            "median_sampled_s": m_sampled, "slowdown_pct": 100 * (m_sampled / m_plain - 1),
            "sampler_cpu_s": cpu, "samples": counts,
            "sampler_cpu_pct_of_wall": 100 * statistics.median(c / w for c, w in zip(cpu, sampled)),
            "load_avg": os.getloadavg()[0], "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one file, beam 1 only")
    p.add_argument("--beams", default=None, help="comma-separated beam sizes (default 1,5; --quick: 1)")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated of {', '.join(CONFIGS)}")
    p.add_argument("--files", nargs="*", default=None, help=f"audio files (default: {', '.join(LONG_FILES)})")
    p.add_argument("--mla-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "whisper-mla-bench"))
    p.add_argument("--overhead-file", default=str(SAMPLE))
    p.add_argument("--skip-peaks", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--out", default=None, help="write all results as JSON here")
    p.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        spec, file, beam, batch = args.child
        print(json.dumps(child(None if spec == "-" else spec, file, int(beam), int(batch))))
        return 0
    import logging

    logging.basicConfig(level=logging.WARNING)
    results: dict = {}
    if not args.skip_peaks:
        files = [Path(f) for f in args.files] if args.files else [SHARED_AUDIO / f for f in LONG_FILES]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            print(f"error: missing audio: {', '.join(missing)}", file=sys.stderr)
            return 2
        beams = [int(b) for b in (args.beams or ("1" if args.quick else "1,5")).split(",")]
        batches = [int(b) for b in args.batches.split(",")]
        if args.quick:
            files = files[:1]
        names = [n.strip() for n in args.configs.split(",") if n.strip()]
        jsonl = Path(args.out).with_suffix(".partial.jsonl") if args.out else None
        rows = bench_peaks(files, names, beams, batches, Path(args.mla_dir), jsonl)
        print_peaks(rows)
        results["peaks"] = [{k: v for k, v in r.items() if k != "text"} for r in rows]
    if not args.skip_overhead:
        o = bench_overhead(Path(args.overhead_file))
        results["sampler_overhead"] = o
        print(f"\nsampler overhead on {o['file']}: median {o['median_plain_s']:.2f} s without, "
              f"{o['median_sampled_s']:.2f} s with a 20 Hz sampler ({o['slowdown_pct']:+.1f}%); the sampler thread "
              f"used {statistics.median(o['sampler_cpu_s']) * 1000:.0f} ms CPU per run "
              f"({o['sampler_cpu_pct_of_wall']:.2f}% of wall); load average {o['load_avg']:.1f} on {o['cpus']} CPUs")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
