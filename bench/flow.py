"""Logit-flow benchmark: our full flow vs its floor, on a SmolLM2-135M-shaped random Llama model.

    /root/.cache/ls-venv/bin/python -m bench.flow            # 8 prompts x 30 tokens, CPU fp32, 2 threads
    /root/.cache/ls-venv/bin/python -m bench.flow --prompts 2 --tokens 8   # a quick smoke run

Model: transformers.LlamaConfig shaped like SmolLM2-135M (30 layers, hidden 576, intermediate 1536, 9 query
heads / 3 key-value heads, vocabulary 49,152, tied embeddings), random weights (seed 0), fp32 on the CPU,
eager attention; nothing is downloaded. Inputs: random token ids (analysis.models.tiny.ToyTokenizer reads "5 17 3" as
BOS + ids), a random target and, unless --no-competitor, a random competitor per prompt ("#id"). Each
measurement runs in a fresh subprocess which builds the model, does a tiny warm-up run (1 prompt x 4 tokens),
then times one full run.

  (a) ours:  analysis.flow.attribution.logit_flow_set with the page's defaults (batch size, automatic head x source
             importances, which are on while layers x heads x tokens <= flow.SOURCE_IMP_LIMIT: up to 30 tokens
             here): sublayer DLA, heads, head x source, "at position" grids, log-prob importances of
             sublayers, heads and head x source cells, identity checks; target, competitor and difference views.
  (b) floor: the work no implementation can skip - the same forward pass with the same captures
             (flow.capture_hooks under eager attention, the same prompt batches), the component vectors at T
             (embedding, attention and MLP writes, head writes, head x source writes when (a) computes their
             importances), then ONE matrix product of every component vector with W_U, in the same row chunks
             as (a) (flow.imp_chunk_rows), and one logsumexp per component row (taken from torch.log_softmax in
             the same cache-sized blocks as (a): on CPU it is 2-3x faster than torch.logsumexp), into two
             buffers reused chunk after chunk, as (a) does. Results dropped.

Time: wall clock of the full run (perf_counter). Peak memory: the process's peak resident set size (VmHWM)
during the timed run minus its resident size just before it; the peak is reset right before the run through
/proc/self/clear_refs (Linux), as in bench/lens.py.

The last line prints the ratios: ours/floor time, ours/floor peak memory.
This is not a test; it never runs in the test suite.
"""
from __future__ import annotations

import argparse
import json
import os

from bench._harness import SMOLLM2_VOCAB, run_worker, smollm2_shaped_model, timed_peak

METHODS = ("floor", "ours")
VOCAB = SMOLLM2_VOCAB


# ------------------------------------------------------------------------------------------------ worker side
def _build(seed: int = 0):
    return smollm2_shaped_model(seed, attn="eager")  # the flow needs the attention probabilities; both run eager


def _inputs(n_prompts: int, n_tokens: int, competitor: bool, seed: int = 1):
    import torch
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n_prompts, max(1, n_tokens - 1)), generator=g)  # + BOS = n_tokens
    tc = torch.randint(3, VOCAB, (n_prompts, 2), generator=g)
    prompts = [" ".join(str(int(i)) for i in row) for row in ids]
    targets = [f"#{int(t)}" for t in tc[:, 0]]
    comps = [f"#{int(c)}" if competitor and int(c) != int(t) else None for t, c in tc.tolist()]
    return prompts, targets, comps


def _run_ours(lm, prompts, targets, comps):
    from analysis.flow import logit_flow_set
    return logit_flow_set(lm, prompts, targets, comps)


def _run_floor(lm, prompts, targets, comps):
    import torch

    import analysis.flow as flow
    from analysis.core.batching import chunks, encode
    from analysis.core.forward import run
    ad = lm.adapter
    L, H, hd = ad.n_layers, ad.n_heads, ad.head_dim
    W_U = ad.W_U
    rows_per_gemm = flow.imp_chunk_rows(ad.vocab_size)
    block = max(1, min(rows_per_gemm, flow.IMP_BLOCK_BYTES // (4 * ad.vocab_size)))
    W_O = [flow.o_proj_weight(ad, i)[0].reshape(ad.d_model, H, hd).permute(1, 2, 0) for i in range(L)]  # [H, hd, d]
    _, vfn = flow.value_site(ad)
    z_buf, lsm_buf = torch.empty(rows_per_gemm, ad.vocab_size), torch.empty(block, ad.vocab_size)  # reused, as in ours
    sink = 0.0
    with torch.inference_mode():
        for sl in flow.memory_chunks(lm, prompts, flow.BATCH_SIZE):
            batch = encode(lm.tokenizer, list(prompts[sl]), padding_side="right", max_length=lm.context_length)
            B, Tmax = batch.input_ids.shape
            last = batch.last_index()
            store: dict = {}
            with flow.eager_attention(lm):
                run(lm, batch, flow.capture_hooks(ad, store, (B, Tmax), last))
            for b in range(B):
                T = int(last[b]) + 1
                parts = [store[("h", 0)][b][None]]
                for i in range(L):
                    z = store[("z", i)][b].reshape(H, hd)
                    parts += [store[("attn", i)][b, T - 1][None], store[("mlp", i)][b, T - 1][None],
                              torch.einsum("hkd,hk->hd", W_O[i], z)]
                    if L * H * T <= flow.SOURCE_IMP_LIMIT:
                        v = vfn(store[("v", i)][b:b + 1, :T], H, hd)[0]  # [T, n_kv, hd]
                        v = v.repeat_interleave(H // v.shape[1], dim=1).transpose(0, 1)  # [H, T, hd]
                        parts.append((torch.bmm(v, W_O[i]) * store[("a", i)][b, :, :T, None]).reshape(H * T, -1))
                comps_T = torch.cat(parts)  # [n_components, d]
                for c in chunks(comps_T.shape[0], rows_per_gemm):
                    z = torch.mm(comps_T[c], W_U.T, out=z_buf[: c.stop - c.start])  # ONE product per component
                    for s in chunks(z.shape[0], block):  # one logsumexp per component row
                        lse = z[s, 0] - torch.log_softmax(z[s], dim=-1, out=lsm_buf[: s.stop - s.start])[:, 0]
                        sink += float(lse[0])
    return sink


def worker(method: str, n_prompts: int, n_tokens: int, competitor: bool, threads: int) -> dict:
    """Build, warm up, then time one full run of ``method``; returns the measurement."""
    import torch
    torch.set_num_threads(threads)
    from analysis.core.loading import model_from_pretrained_object
    from analysis.models.tiny import ToyTokenizer
    model = _build()
    tok = ToyTokenizer(VOCAB)
    tok.model_max_length = model.config.max_position_embeddings
    lm = model_from_pretrained_object(model, tok, name="smollm2-135m-shape-random")
    prompts, targets, comps = _inputs(n_prompts, n_tokens, competitor)
    fn = _run_ours if method == "ours" else _run_floor
    small = [" ".join(prompts[0].split()[:3])]
    fn(lm, small, targets[:1], comps[:1])  # warm-up: kernels, thread pool, lazy imports
    result, info = timed_peak(lambda: fn(lm, prompts, targets, comps))
    info.update(method=method, threads=threads)
    if method == "ours":
        from analysis.flow import failed_checks
        info["source_importance"] = result.results[0].view("target").imp_sources is not None
        info["views"] = len(result.results[0].views)
        info["failed_checks"] = sum(len(failed_checks(r, 1e-4)) for r in result.results)
    del result
    return info


# ------------------------------------------------------------------------------------------------ driver side
def measure(method: str, args: argparse.Namespace) -> dict:
    """Run one measurement in a fresh subprocess and parse its JSON line."""
    extra = ["--prompts", str(args.prompts), "--tokens", str(args.tokens)]
    return run_worker("bench.flow", method, extra + (["--no-competitor"] if args.no_competitor else []), args.threads)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; as the driver, measure floor and ours in fresh subprocesses and print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=30,
                    help="tokens per prompt including BOS (30: the longest prompt whose head x source importances "
                         "the page computes)")
    ap.add_argument("--no-competitor", action="store_true", help="target view only (no competitor, no difference)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeats", type=int, default=1, help="measurements per method, floor and ours alternating "
                                                           "(the best time is kept)")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.prompts, args.tokens, not args.no_competitor, args.threads)),
              flush=True)
        return
    views = "target only" if args.no_competitor else "target + competitor"
    print(f"logit flow benchmark: SmolLM2-135M shape (30 layers, d 576, 9/3 heads, V {VOCAB}, random), "
          f"{args.prompts} prompts x {args.tokens} tokens, {views}, CPU fp32, {args.threads} threads, "
          "peak = VmHWM delta")
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for _ in range(max(1, args.repeats)):  # alternate, so a change in the machine's load hits both methods
        for method in METHODS:
            runs[method].append(measure(method, args))
    results: dict[str, dict] = {}
    for method in METHODS:
        best = min(runs[method], key=lambda r: r["seconds"])
        best["peak_delta_mb"] = max(r["peak_delta_mb"] for r in runs[method])
        results[method] = best
        extra = ""
        if method == "ours":
            src = "on" if best["source_importance"] else "off"
            extra = (f"  ({best['views']} views, head x source importances {src}, failed identity checks: "
                     f"{best['failed_checks']})")
        print(f"{method:6s} {best['seconds']:8.2f} s ({best['cpu_seconds']:7.1f} s CPU)   "
              f"peak +{best['peak_delta_mb']:8.1f} MB{extra}", flush=True)
    f, o = results["floor"], results["ours"]
    print(f"ratios: ours/floor time {o['seconds'] / f['seconds']:.2f}, "
          f"ours/floor peak memory {o['peak_delta_mb'] / f['peak_delta_mb']:.2f}")


if __name__ == "__main__":
    main()
