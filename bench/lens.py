"""Logit-lens benchmark: our full trace vs a floor vs TransformerLens, on a GPT-2-small-shaped random model.

    $(make -s venv-path)/bin/python -m bench.lens            # 32 prompts x 128 tokens, CPU fp32
    $(make -s venv-path)/bin/python -m bench.lens --prompts 4 --tokens 32   # a quick smoke run
    $(make -s venv-path)/bin/python -m bench.lens --case one-prompt   # SmolLM2 shape, 1 prompt x 8 tokens

The one-prompt case (the page's most common run: one short typed prompt) uses a random SmolLM2-135M-shaped
Llama model (30 layers, d 576, V 49,152: its unembedding is 113 MB of fp32, read once per readout matmul) and
times each method as the best of --inner runs in its worker (a run takes a fraction of a second); TL is n/a there
(its bridge is booted as GPT-2).

Model: transformers.GPT2Config() defaults (12 layers, d 768, vocab 50257, 124M parameters), random
weights (seed 0), fp32 on the CPU; inputs: random token ids, no padding. Each measurement runs in a
fresh subprocess (so one method's allocations never pollute another's numbers) which builds the
model, does a tiny warm-up run (1 prompt x 4 tokens: loads kernels without pre-growing the heap),
then times one full run.

  (a) ours:  analysis.lens.logit_lens.lens_trace - all layers 0..12, all positions, top-10, entropy, KL(p_L||p_l),
             rank and probability of a target token, cross-entropy to the next token.
  (b) floor: the work no logit lens can skip - the same forward pass (residuals captured, stopped at the
             final norm) plus the final norm and the unembedding matmul of every layer's rows, stacked across
             layers into blocks of default_chunk_rows rows (W_U read once per block, whatever the prompt count),
             results dropped. (a)/(b) is the price of the statistics.
  (c) TL:    TransformerLens (TransformerBridge over the same HF model): run_with_cache,
             cache.accumulated_resid(apply_ln=True), then per layer bridge.unembed + log_softmax, top-10,
             entropy, KL to the last layer and target rank over the whole batch (the usual way to write it).

Time: wall clock of the full run (perf_counter). Peak memory: the process's peak resident set size
(VmHWM from /proc/self/status) during the timed run, minus its resident size just before it; the
peak is reset right before the run by writing 5 to /proc/self/clear_refs (Linux). This counts
every allocation, torch's included (tracemalloc would not see them). Weights and inputs exist
before the run, so they are not in the delta. glibc keeps freed heap memory for reuse, so the peak
RSS is what the run needed from the OS (an upper bound of its live tensors), the same rule for all three.

The last line prints the ratios: ours/floor time, TL/ours time, ours/floor peak memory.
This is not a test; it never runs in the test suite.
"""
from __future__ import annotations

import argparse
import json
import os

from bench._harness import SMOLLM2_VOCAB, run_worker, smollm2_shaped_model, timed_peak

METHODS = ("floor", "ours", "tl")


# ------------------------------------------------------------------------------------------------ worker side
class IdTokenizer:
    """Just enough tokenizer for lens_trace on pre-tokenised ids: decode and pad id."""

    pad_token_id, eos_token_id, bos_token_id = 0, 0, 0
    pad_token = eos_token = "<|endoftext|>"

    def decode(self, ids, **_):
        return "".join(f"<{int(i)}>" for i in ids)


VOCAB = {"gpt2": 50257, "smollm2": SMOLLM2_VOCAB}
CASES = {"default": ("gpt2", 32, 128, 1), "one-prompt": ("smollm2", 1, 8, 10)}  # shape, prompts, tokens, inner


def build_model(shape: str = "gpt2", seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    if shape == "smollm2":
        return smollm2_shaped_model(seed, attn="eager")
    torch.manual_seed(seed)
    cfg = GPT2Config()
    cfg._attn_implementation = "eager"  # TransformerLens forces eager; all three use the same attention
    return GPT2LMHeadModel(cfg).eval()


def random_inputs(n_prompts: int, n_tokens: int, vocab: int = 50257, seed: int = 1):
    import torch
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n_prompts, n_tokens), generator=g)
    targets = torch.randint(0, vocab, (n_prompts,), generator=g)
    return ids, targets


def run_ours(lm, ids, targets, k):
    from analysis.lens import TARGET_TEXT, lens_trace
    rows = ids.tolist()
    return lens_trace(lm, [""] * len(rows), token_ids=rows, k=k, target_mode=TARGET_TEXT,
                      targets=[int(t) for t in targets], batch_size=len(rows))


def run_floor(lm, ids, targets, k):
    import torch

    from analysis.core.batching import batch_from_ids, chunks
    from analysis.core.readout import readout
    from analysis.lens import capture_residuals, default_chunk_rows
    from analysis.lens.logit_lens import layer_groups
    batch = batch_from_ids(ids.tolist(), 0)
    store = capture_residuals(lm, batch.input_ids, batch.attention_mask, batch.position_ids)
    ad = lm.adapter
    flat = {l: store[l].reshape(-1, ad.d_model) for l in store}
    rows = default_chunk_rows(ad.vocab_size)
    sink = 0.0
    with torch.inference_mode():
        for c in chunks(flat[0].shape[0], rows):
            for group in layer_groups(ad.n_layers, c.stop - c.start, rows):  # each block reads W_U once
                z = readout(ad, torch.cat([flat[l][c] for l in group]))
                sink += float(z[0, 0])  # keep the work observable; drop the logits
                del z
    return sink


def _tl_bridge(model):
    import tempfile

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    # A local word-level tokenizer (TransformerLens re-loads it by path; nothing is downloaded).
    vocab = {f"t{i}": i for i in range(50257)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tempfile.mkdtemp(prefix="bench-lens-tok-")
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="t0", eos_token="t0", pad_token="t0",
                            unk_token="t0").save_pretrained(folder)
    return TransformerBridge.boot_transformers("gpt2", hf_model=model, tokenizer=AutoTokenizer.from_pretrained(folder),
                                               device="cpu")


def _run_tl(bridge, ids, targets, k):
    import torch
    out = {}
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(ids)
        acc = cache.accumulated_resid(apply_ln=True)  # [L+1, B, T, d]
        L = acc.shape[0] - 1
        lp_last = torch.log_softmax(bridge.unembed(acc[L]).float(), dim=-1)
        p_last = lp_last.exp()
        tgt = targets.view(-1, 1, 1).expand(ids.shape[0], ids.shape[1], 1)
        for l in range(L + 1):
            lp = torch.log_softmax(bridge.unembed(acc[l]).float(), dim=-1)
            top_v, top_i = lp.topk(k, dim=-1)
            ent = -(lp.exp() * lp).sum(-1)
            kl = (p_last * (lp_last - lp)).sum(-1)
            t_lp = lp.gather(-1, tgt)
            rank = (lp > t_lp).sum(-1) + 1
            out[l] = (top_i, top_v.exp(), ent, kl, t_lp.squeeze(-1).exp(), rank)
            del lp
    return out


def worker(method: str, n_prompts: int, n_tokens: int, k: int, threads: int, shape: str = "gpt2",
           inner: int = 1) -> dict:
    """Build, warm up, then time ``inner`` full runs of ``method`` (the best kept); returns the measurement."""
    import torch
    torch.set_num_threads(threads)
    from analysis.core.loading import model_from_pretrained_object
    model = build_model(shape)
    ids, targets = random_inputs(n_prompts, n_tokens, VOCAB[shape])
    small_ids, small_t = ids[:1, :4].clone(), targets[:1].clone()  # tiny: the heap is not pre-grown
    if method == "tl":
        bridge = _tl_bridge(model)
        run = lambda i, t: _run_tl(bridge, i, t, k)  # noqa: E731
    else:
        lm = model_from_pretrained_object(model, IdTokenizer(), name="gpt2-small-random")
        fn = run_ours if method == "ours" else run_floor
        run = lambda i, t: fn(lm, i, t, k)  # noqa: E731
    run(small_ids, small_t)  # warm-up: kernels, thread pool, lazy imports
    result, info = timed_peak(lambda: run(ids, targets))
    for _ in range(inner - 1):
        _, again = timed_peak(lambda: run(ids, targets))
        info["seconds"] = min(info["seconds"], again["seconds"])
        info["peak_delta_mb"] = max(info["peak_delta_mb"], again["peak_delta_mb"])
    info.update(method=method, threads=threads, inner=inner)
    if method == "tl":  # cross-check: TL's entropy and KL vs ours on a small slice
        lm = model_from_pretrained_object(model, IdTokenizer(), name="gpt2-small-random")
        ours = run_ours(lm, small_ids, small_t, k)
        tl = _run_tl(bridge, small_ids, small_t, k)
        import numpy as np
        ent_tl = np.stack([tl[l][2].numpy() for l in sorted(tl)], axis=1)  # [B, L+1, T]
        kl_tl = np.stack([tl[l][3].numpy() for l in sorted(tl)], axis=1)
        info["max_abs_diff_entropy_vs_ours"] = float(np.abs(ent_tl - ours.entropy).max())
        info["max_abs_diff_kl_vs_ours"] = float(np.abs(kl_tl - ours.kl).max())
    del result
    return info


# ------------------------------------------------------------------------------------------------ driver side
def _tl_available() -> str | None:
    try:
        import importlib.util
        if importlib.util.find_spec("transformer_lens") is None:
            return "transformer-lens is not installed (pip install -r bench/requirements.txt)"
        from transformer_lens.model_bridge import TransformerBridge  # noqa: F401
    except Exception as err:  # noqa: BLE001
        return f"transformer-lens does not import: {type(err).__name__}: {err}"
    return None


def measure(method: str, args: argparse.Namespace) -> dict:
    """Run one measurement in a fresh subprocess and parse its JSON line."""
    return run_worker("bench.lens", method, ["--prompts", str(args.prompts), "--tokens", str(args.tokens),
                                             "--k", str(args.k), "--shape", args.shape, "--inner", str(args.inner)],
                      args.threads)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; as the driver, measure floor, ours and TL in fresh subprocesses and print ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=CASES, default="default",
                    help="default: GPT-2 shape, 32 x 128; one-prompt: SmolLM2 shape, 1 x 8 (best of 10 runs)")
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--tokens", type=int)
    ap.add_argument("--shape", choices=VOCAB)
    ap.add_argument("--inner", type=int, help="timed runs per worker, the best kept")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeats", type=int, default=1, help="measurements per method (the best time is kept)")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shape, prompts, tokens, inner = CASES[args.case]
    args.shape, args.prompts = args.shape or shape, args.prompts or prompts
    args.tokens, args.inner = args.tokens or tokens, args.inner or inner
    if args.worker:
        print(json.dumps(worker(args.worker, args.prompts, args.tokens, args.k, args.threads, args.shape,
                                args.inner)), flush=True)
        return
    what = ("GPT-2 small shape (12 layers, d 768, V 50257, random)" if args.shape == "gpt2"
            else "SmolLM2-135M shape (30 layers, d 576, V 49152, random)")
    print(f"logit lens benchmark: {what}, {args.prompts} prompts x {args.tokens} tokens, top-{args.k}, CPU fp32, "
          f"{args.threads} threads, best of {args.inner} run(s) per worker, peak = VmHWM delta")
    tl_missing = _tl_available() or (None if args.shape == "gpt2" else "the TL bridge is booted as GPT-2 only")
    results: dict[str, dict | None] = {}
    for method in METHODS:
        if method == "tl" and tl_missing:
            print(f"tl     n/a ({tl_missing})")
            results[method] = None
            continue
        runs = [measure(method, args) for _ in range(max(1, args.repeats))]
        best = min(runs, key=lambda r: r["seconds"])
        best["peak_delta_mb"] = max(r["peak_delta_mb"] for r in runs)
        results[method] = best
        extra = ""
        if "max_abs_diff_entropy_vs_ours" in best:
            extra = (f"  (check vs ours: max |dH| {best['max_abs_diff_entropy_vs_ours']:.1e}, "
                     f"max |dKL| {best['max_abs_diff_kl_vs_ours']:.1e} nats)")
        print(f"{method:6s} {best['seconds']:8.2f} s   peak +{best['peak_delta_mb']:8.1f} MB{extra}", flush=True)
    f, o, t = results["floor"], results["ours"], results["tl"]
    tl_ratio = f"{t['seconds'] / o['seconds']:.2f}" if t else "n/a"
    print(f"ratios: ours/floor time {o['seconds'] / f['seconds']:.2f}, TL/ours time {tl_ratio}, "
          f"ours/floor peak memory {o['peak_delta_mb'] / f['peak_delta_mb']:.2f}")


if __name__ == "__main__":
    main()
