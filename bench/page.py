"""Page benchmark: the real app in headless Chromium against the engine, on the demo model and on the real model.

    $(make -s venv-path)/bin/python -m bench.page                  # lens page, demo and real world, 3 rounds
    $(make -s venv-path)/bin/python -m bench.page --world demo --rounds 1

What is timed, per world (demo: gpt2-world-base; real: SmolLM2-135M-Instruct, when `make setup` converted it), on the
page opened from its link with the model loaded (the first load is not timed), at 1280x800:

  run     click on Run with a prompt never computed before (the typed prompt gets a new suffix each round) until
          the first figure is drawn (first) and until the script is idle (idle);
  display a display-only setting changed (the heatmap colour) until idle;
  cached  Run clicked again with nothing to compute until idle.

Times are taken in the browser (performance.now()): a MutationObserver notes when a figure is added and each change
of the app's script state, "idle" = the last switch to notRunning before the page stays idle for 0.8 s.

Engine: in this process, on the same model, the page's computation for the same prompt and settings
(components.reports.lens.compute with no cache), best of the rounds; ratio = page run idle / engine. Profile (in
this process, same result): building the figures (report), their plotly JSON (size and time: what the page sends
and what the bundle's digest hashes), and the digest itself.

Threads: torch's in the server and here are left at their defaults (the machine's cores). This is not a test; the
suite never runs it.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OBSERVER = """() => {
  const app = document.querySelector('[data-testid=stApp]');
  const t = {click: performance.now(), plot: null, states: []};
  const plots0 = document.querySelectorAll('.js-plotly-plot').length;
  const obs = new MutationObserver(() => {
    const now = performance.now();
    const st = app.getAttribute('data-test-script-state');
    if (!t.states.length || t.states[t.states.length - 1][0] !== st) t.states.push([st, now]);
    if (t.plot === null && document.querySelectorAll('.js-plotly-plot .main-svg').length > 0
        && (plots0 === 0 || document.querySelectorAll('.js-plotly-plot').length >= plots0)) t.plot = now;
  });
  obs.observe(document.body, {subtree: true, childList: true, attributes: true});
  window.__bench = t;
}"""
SETTLE_MS = 800


def _measure(page, action) -> dict:
    """Install the observer, do ``action`` (clicks), wait until idle has held SETTLE_MS; times in seconds."""
    page.evaluate(OBSERVER)
    page.evaluate("() => { window.__bench.click = performance.now(); }")
    action()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        t = page.evaluate("() => window.__bench")
        states = t["states"]
        ran = any(s == "running" for s, _ in states)
        if ran and states[-1][0] == "notRunning" and page.evaluate("() => performance.now()") - states[-1][1] > SETTLE_MS:
            break
        page.wait_for_timeout(50)
    else:
        raise TimeoutError("the page did not get idle within 600 s")
    idle = states[-1][1]
    return {"idle": (idle - t["click"]) / 1000, "first": None if t["plot"] is None else (t["plot"] - t["click"]) / 1000}


def _lens_actions(page, prompt: str):
    """(type a new prompt, click Run), (change the heatmap colour), (click Run again) on the lens page."""
    main = page.get_by_test_id("stMain")

    def fill_prompt() -> None:
        box = main.get_by_label("Prompts, one per line", exact=True)
        box.fill(prompt)
        box.press("Control+Enter")  # st.text_area applies on Ctrl+Enter (else on blur)

    def run() -> None:
        main.get_by_role("button", name="Run", exact=True).click()

    def colour() -> None:
        box = main.get_by_role("combobox", name="Heatmap colour", exact=True)
        current = box.input_value()
        box.click()
        options = [o for o in page.get_by_role("option").all_inner_texts() if o.strip() != current]
        page.evaluate("() => { window.__bench.click = performance.now(); }")
        page.get_by_role("option", name=options[0], exact=True).click()
    return fill_prompt, run, colour


def engine_lens(model_name: str, prompt: str, target: str, rounds: int) -> dict:
    """The page's lens computation on ``prompt`` (no cache), best of ``rounds``, and the page-side profile."""
    import components.reports.lens as R
    from analysis.core.loading import load_model
    from analysis.models.catalog import named_spec
    from logitscope.api.models import pair_of
    from logitscope.api.prompts import prompt_set

    lm = load_model(named_spec(model_name))
    pair, inputs = pair_of(lm), {"--prompts": prompt_set(prompt)}
    s = R.LensSettings(target_text=target)
    R.compute(pair, inputs, s)  # warm-up
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        results = R.compute(pair, inputs, s)
        best = min(best, time.perf_counter() - t0)
    t0 = time.perf_counter()
    rep = R.report(results, s)
    t_report = time.perf_counter() - t0
    t0 = time.perf_counter()
    js = {n: f.to_json() for n, f in rep.figures.items()}
    t_json = time.perf_counter() - t0
    t0 = time.perf_counter()
    hashlib.sha256("".join(js.values()).encode()).hexdigest()
    t_hash = time.perf_counter() - t0
    return {"engine": best, "report": t_report, "json": t_json, "json_kb": sum(map(len, js.values())) / 1024,
            "figures": len(js), "hash": t_hash}


def bench_world(url: str, browser, world: str, model: str, rounds: int) -> dict:
    """Every measurement on the lens page of one world; medians over the rounds."""
    from analysis.core.loading import load_model
    from analysis.models.catalog import named_spec
    from analysis.models.defaults import default_fact
    from tests.e2e.conftest import _goto_app

    prompt0, target = default_fact(load_model(named_spec(model)))
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    _goto_app(page, f"{url}/logit_lens?{urlencode({'a': model})}", 600_000)
    runs: dict[str, list] = {"first": [], "idle": [], "display": [], "cached": []}
    for r in range(rounds + 1):  # round 0 warms the server (imports, kernels) and is dropped
        fill, run, colour = _lens_actions(page, prompt0 + _suffix(r))
        fill()
        _goto_idle(page)
        cold = _measure(page, run)
        display = _measure(page, colour)
        cached = _measure(page, run)
        if r:
            runs["first"].append(cold["first"])
            runs["idle"].append(cold["idle"])
            runs["display"].append(display["idle"])
            runs["cached"].append(cached["idle"])
    ctx.close()
    out = {k: statistics.median(v) for k, v in runs.items()}
    out.update(engine_lens(model, prompt0 + _suffix(1), target, rounds))
    return out


def _suffix(r: int) -> str:
    """A different prompt each round (a cache miss), the same length in tokens on both models."""
    return "" if r == 0 else " " + ("so", "then", "now", "here", "too", "yet")[(r - 1) % 6]


def _goto_idle(page) -> None:
    from tests.e2e.conftest import _wait_for_app_idle
    _wait_for_app_idle(page, 600_000)


def worlds() -> dict[str, str]:
    from analysis.models.real import REAL_MODEL, real_model_dir
    out = {"demo": "gpt2-world-base"}
    if (real_model_dir() / "config.json").is_file():
        out["real"] = REAL_MODEL
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", choices=("demo", "real", "all"), default="all")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from tests.e2e.conftest import CHROMIUM_ARGS, chromium_path, run_streamlit
    chosen = {k: v for k, v in worlds().items() if args.world in ("all", k)}
    print(f"page benchmark: logit lens page, one typed prompt, 1280x800, median of {args.rounds} rounds")
    print(f"{'world':6s} {'first':>6s} {'idle':>6s} {'engine':>7s} {'page/engine':>11s} {'display':>8s} {'cached':>7s}"
          f"   profile: report, figure JSON (KB, s), digest")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(run_streamlit(REPO / "app.py", "bench-page-server"))
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        for world, model in chosen.items():
            m = bench_world(url, browser, world, model, args.rounds)
            print(f"{world:6s} {m['first']:6.2f} {m['idle']:6.2f} {m['engine']:7.3f} {m['idle'] / m['engine']:11.2f} "
                  f"{m['display']:8.2f} {m['cached']:7.2f}   {m['report']:.3f} s, {m['figures']} figures "
                  f"{m['json_kb']:.0f} KB {m['json']:.3f} s, {m['hash']:.3f} s", flush=True)


if __name__ == "__main__":
    main()
