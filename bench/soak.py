"""Soak of the app on the real model (issue #27): concurrent browser sessions on one server, with a reload and a
closed tab mid-run and an eviction forced by a small budget, measuring what a user would meet.

One `streamlit run app.py` server; headless Chromium (Debian's, driven by Playwright's async API). Every analysis
session opens its pages by link with A = SmolLM2-135M-Instruct and B = its grumpy LoRA.

1. Alone: one session runs each step once (lens on a typed prompt, flow, steering's Build vectors, OOD), giving
   each step's latency alone (click to idle).
2. Together: three sessions run their step lists at the same time:
   - s1: lens, flow, steering, lens;
   - s2: steering, lens, OOD;
   - s3: lens, flow reloaded 2 s into its run, lens, OOD with its tab closed 3 s into the run, lens in a new tab;
   - s4 (demo model only): lowers the Memory budget so that its next load must evict what no run uses, loads two
     demo models, then restores the budget.
   Each lens run types a prompt with the session's own word and checks that the heatmap it draws holds that word
   and no other session's (no result crosses sessions); flow, steering and OOD run with settings of the session's
   own (a target, a seed, a batch size: the same work under another cache key), so no session meets a result that
   another computed.
3. Report: runs attempted / succeeded (an error message in the app counts as failed, with its text), tracebacks
   (exception blocks in any page plus "Traceback" in the server log), the server's resident memory (the process and
   its children) sampled every 0.5 s: min / max / end, and each step's latency together / alone.

    $(make -s venv-path)/bin/python -m bench.soak            # about 6-10 minutes on 2 cores
    $(make -s venv-path)/bin/python -m bench.soak --quick    # lens and steering only, about 3 minutes

Exit status 1 when a traceback was seen or a result crossed sessions.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LONG_MS = 600_000
VERBOSE = "--verbose" in sys.argv
WORDS = {"s1": "Albatross", "s2": "Buffalo", "s3": "Cheetah", "alone": "Dolphin"}
# Each session's own compute settings (same work, another cache key): a session never meets another's cached result.
OWN = {"alone": {}, "s1": {"flow.target": " the", "steer.seed": "1"}, "s2": {"steer.seed": "2", "ood.batch_size": "31"},
       "s3": {"flow.target": " a", "steer.seed": "3", "ood.batch_size": "30"}}


@dataclass
class Tally:
    """What the soak saw."""

    attempted: int = 0
    succeeded: int = 0
    failures: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    crossed: list[str] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=dict)
    evictions: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------- browser helpers
async def idle(page, timeout_ms: float = LONG_MS) -> None:
    """Until the script has finished (connected, not running, no status widget) for 0.75 s."""
    app = page.locator("[data-testid='stApp']")
    deadline = time.monotonic() + timeout_ms / 1000
    stable = 0
    while stable < 3:
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not become idle")
        state = await app.get_attribute("data-test-script-state")
        conn = await app.get_attribute("data-test-connection-state")
        busy = await page.locator("[data-testid='stStatusWidget']").count()
        stable = stable + 1 if state == "notRunning" and conn == "CONNECTED" and not busy else 0
        await page.wait_for_timeout(250)


async def problems(page, where: str, tally: Tally) -> list[str]:
    """Exception blocks (tracebacks) and error messages on the page; tracebacks go into the tally."""
    main = page.get_by_test_id("stMain")
    exc = await main.get_by_test_id("stException").all_inner_texts()
    tally.tracebacks += [f"{where}: {t[:300]}" for t in exc]
    errs = await main.get_by_test_id("stAlertContentError").all_inner_texts()
    return exc + errs


def link(base: str, page: str, pair: dict[str, str]) -> str:
    return f"{base}/{page}?{urlencode(pair)}" if page else f"{base}/?{urlencode(pair)}"


async def open_page(page, base: str, path: str, pair: dict[str, str]) -> None:
    await page.goto(link(base, path, pair), wait_until="domcontentloaded", timeout=LONG_MS)
    await idle(page)


async def click_and_wait(page, name: str) -> float:
    t0 = time.monotonic()
    await page.get_by_test_id("stMain").get_by_role("button", name=name, exact=True).first.click()
    await page.wait_for_timeout(300)
    await idle(page)
    return time.monotonic() - t0


async def heatmap_text(page) -> str:
    """The letters of every tick label and cell text of the page's heatmaps (the prompt's tokens, escaped)."""
    texts = await page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(gd => {
        const out = [];
        for (const t of (gd.data || [])) if (t.type === 'heatmap') { out.push(...[].concat(t.x || [], t.y || []).map(String)); }
        for (const ax of ['xaxis', 'yaxis', 'xaxis2', 'yaxis2']) if (gd.layout && gd.layout[ax] && gd.layout[ax].ticktext)
            out.push(...gd.layout[ax].ticktext.map(String));
        return out; })""")
    return re.sub(r"[^A-Za-z]", "", "".join(texts))


# ---------------------------------------------------------------------------------------------------------- steps
STEPS = {  # step -> (page path, button)
    "lens": ("logit_lens", "Run"),
    "flow": ("logit_flow", "Run"),
    "steering": ("steering", "Build vectors"),
    "ood": ("ood", "Run"),
}


async def step(page, base: str, pair: dict[str, str], who: str, name: str, tally: Tally, *,
               interrupt: str | None = None) -> None:
    """Open the step's page, run it, record latency and problems; interrupt = 'reload' or 'close' 2-3 s in."""
    path, button = STEPS[name]
    await open_page(page, base, path, {**pair, **OWN[who]})
    if name == "lens":
        box = page.get_by_test_id("stMain").get_by_label("Prompts, one per line", exact=True)
        await box.fill(f"The {WORDS[who]} lives in the city of")
        await box.press("Control+Enter")
        await idle(page)
        target = page.get_by_test_id("stMain").get_by_label("Target token text", exact=True)
        if await target.count():
            await target.fill(" Paris")
            await target.press("Enter")
            await idle(page)
    tally.attempted += 1
    label = f"{who}/{name}" + (f" ({interrupt})" if interrupt else "")
    if interrupt:
        await page.get_by_test_id("stMain").get_by_role("button", name=button, exact=True).first.click()
        await page.wait_for_timeout(2000 if interrupt == "reload" else 3000)
        if interrupt == "reload":
            await page.reload(wait_until="domcontentloaded")
            await idle(page)
            found = await problems(page, label, tally)
            ok = not found
        else:
            await page.close()
            ok = True
        tally.succeeded += ok
        if not ok:
            tally.failures.append(f"{label}: {found[0][:200]}")
        return
    seconds = await click_and_wait(page, button)
    found = await problems(page, label, tally)
    if found:
        tally.failures.append(f"{label}: {found[0][:200]}")
        return
    if name == "lens":
        letters = ""
        for _ in range(40):  # plotly draws after the script has finished: up to 10 s
            letters = await heatmap_text(page)
            if WORDS[who] in letters:
                break
            await page.wait_for_timeout(250)
        if not letters:
            tally.failures.append(f"{label}: no heatmap drawn within 10 s of the run")
            return
        mine = WORDS[who] in letters
        others = [w for k, w in WORDS.items() if k != who and w in letters]
        if not mine or others:
            tally.crossed.append(f"{label}: own word {'found' if mine else 'missing'}, others {others}")
            if VERBOSE:
                print(label, letters[:300], flush=True)
                await page.screenshot(path=str(REPO / "test-artifacts" / f"soak-{who}-crossed.png"), full_page=True)
            return
    tally.succeeded += 1
    tally.latency.setdefault(name, []).append(seconds)


async def analysis_session(ctx, base: str, pair: dict[str, str], who: str, plan: list, tally: Tally) -> None:
    page = await ctx.new_page()
    for item in plan:
        name, interrupt = (item, None) if isinstance(item, str) else item
        try:
            await step(page, base, pair, who, name, tally, interrupt=interrupt)
        except Exception as err:  # noqa: BLE001 - a stuck page is a failed run, not the end of the soak
            tally.failures.append(f"{who}/{name}: {type(err).__name__}: {str(err)[:200]}")
        if page.is_closed():
            page = await ctx.new_page()


async def eviction_session(ctx, base: str, budget_gb: float, tally: Tally) -> None:
    """Demo models only: a budget that forces an eviction, two loads, then the budget restored."""
    try:
        await _evict(ctx, base, budget_gb, tally)
    except Exception as err:  # noqa: BLE001 - reported, the other sessions go on
        tally.failures.append(f"s4: {type(err).__name__}: {str(err)[:300]}")


async def _evict(ctx, base: str, budget_gb: float, tally: Tally) -> None:
    page = await ctx.new_page()
    await open_page(page, base, "", {"a": "gpt2-world-base"})
    sidebar = page.get_by_test_id("stSidebar")
    freed = page.get_by_text(re.compile("^Freed "))  # a sidebar caption (budget) or a toast (a load)

    async def notes(where: str) -> None:
        tally.evictions += [f"{where}: {n[:160]}" for n in await freed.all_inner_texts()]
        if VERBOSE:
            print(where, await sidebar.get_by_text(re.compile("^In use: ")).all_inner_texts(), flush=True)
        found = await problems(page, where, tally)
        tally.attempted += 1
        if found:
            tally.failures.append(f"{where}: {found[0][:200]}")
        else:
            tally.succeeded += 1

    await sidebar.get_by_text("Memory", exact=True).click()
    box = sidebar.get_by_label("Model budget on cpu (GB)", exact=True)
    before = await box.input_value()
    await box.fill(f"{budget_gb:.3f}")
    await box.press("Enter")
    await idle(page)
    await notes("s4/budget")
    for model in ("llama-world-base", "gpt2-world-tuned"):
        combo = sidebar.get_by_role("combobox", name="Checkpoint A", exact=True)
        await combo.click()
        await page.get_by_role("option", name=model, exact=True).click()
        await sidebar.get_by_role("button", name="Load A").click()
        await page.wait_for_timeout(300)
        await idle(page)
        await notes(f"s4/{model}")
        await page.wait_for_timeout(5000)
    await box.fill(before)
    await box.press("Enter")
    await idle(page)


def eviction_budget_gb() -> float:
    """A budget that holds the real pair (A and B, fp32) and one demo model but not two: s4's second demo load must
    evict its first one (or an idle real model), never one a running analysis uses."""
    from analysis.core.loading import ModelSpec
    from analysis.models.memory import estimate_bytes
    from analysis.models.real import REAL_MODEL

    real = estimate_bytes(ModelSpec(REAL_MODEL, device="cpu", dtype="float32")).nbytes or 540e6
    demo = estimate_bytes(ModelSpec("llama-world-base", device="cpu", dtype="float32")).nbytes or 5e6
    return (2 * real + 1.5 * demo) / 1e9


# ------------------------------------------------------------------------------------------------------------ memory
async def sample_rss(pid: int, out: list[float], stop: asyncio.Event) -> None:
    import psutil

    root = psutil.Process(pid)
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
            out.append(sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20)
        except psutil.Error:
            pass
        await asyncio.sleep(0.5)


def server_pid(base: str) -> int:
    import psutil

    port = int(base.rsplit(":", 1)[1])
    for c in psutil.net_connections("tcp"):
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
            return c.pid
    raise RuntimeError("no server process listens on the app's port")


# -------------------------------------------------------------------------------------------------------------- main
async def soak(base: str, quick: bool) -> Tally:
    from playwright.async_api import async_playwright

    from analysis.core.paths import zoo_dir
    from analysis.models.real import REAL_LORA, REAL_MODEL
    from tests.e2e.conftest import CHROMIUM_ARGS, chromium_path

    pair = {"a": REAL_MODEL, "b": REAL_MODEL, "b.adapter": str(zoo_dir() / REAL_LORA)}
    steps = ["lens", "steering"] if quick else ["lens", "flow", "steering", "ood"]
    plans = {"s1": ["lens", "steering", "lens"] if quick else ["lens", "flow", "steering", "lens"],
             "s2": ["steering", "lens"] if quick else ["steering", "lens", "ood"],
             "s3": (["lens", ("lens", "reload"), "lens", ("steering", "close"), "lens"] if quick else
                    ["lens", ("flow", "reload"), "lens", ("ood", "close"), "lens"])}
    alone, together = Tally(), Tally()
    rss: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server_pid(base), rss, stop))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
        print("alone: " + ", ".join(steps), flush=True)
        await analysis_session(ctx, base, pair, "alone", steps, alone)
        await ctx.close()
        print("together: s1, s2, s3 and the eviction session s4", flush=True)
        contexts = [await browser.new_context(viewport={"width": 1280, "height": 800}) for _ in range(4)]
        t0 = time.monotonic()
        await asyncio.gather(*(analysis_session(c, base, pair, who, plans[who], together)
                               for c, who in zip(contexts, plans, strict=True)),
                             eviction_session(contexts[3], base, eviction_budget_gb(), together))
        together.latency["wall"] = [time.monotonic() - t0]
        await browser.close()
    stop.set()
    await sampler
    together.latency["rss"] = rss
    return alone, together


def report(alone: Tally, together: Tally, log: Path) -> int:
    server_tracebacks = log.read_text(errors="replace").count("Traceback") if log.is_file() else 0
    rss = together.latency.pop("rss")
    wall = together.latency.pop("wall")[0]
    for name, t in (("alone", alone), ("together", together)):
        print(f"{name}: runs attempted {t.attempted}, succeeded {t.succeeded}")
        for f in t.failures:
            print(f"  failed: {f}")
    print(f"together: wall {wall:.0f} s; evictions seen: {len(together.evictions)} "
          + "; ".join(sorted(set(together.evictions)))[:400])
    tracebacks = alone.tracebacks + together.tracebacks
    print(f"tracebacks: {len(tracebacks)} in pages, {server_tracebacks} in the server log")
    for t in tracebacks:
        print(f"  {t}")
    crossed = alone.crossed + together.crossed
    print(f"results crossing sessions: {len(crossed)}" + "".join(f"\n  {c}" for c in crossed))
    if rss:
        print(f"server RSS (MiB): min {min(rss):.0f}, max {max(rss):.0f}, end {rss[-1]:.0f} ({len(rss)} samples)")
    parts = []
    for name, times in together.latency.items():
        base = alone.latency.get(name)
        if base:
            parts.append(f"{name} {sum(times) / len(times) / base[0]:.2f}x ({sum(times) / len(times):.1f} s vs "
                         f"{base[0]:.1f} s alone, n={len(times)})")
    print("latency inflation together / alone: " + "; ".join(parts))
    return 1 if tracebacks or server_tracebacks or crossed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="lens and steering only (about 3 minutes)")
    ap.add_argument("--verbose", action="store_true", help="print the cache's use and what a failed check saw")
    args = ap.parse_args()
    from analysis.core.paths import real_models
    from analysis.models.real import REAL_MODEL
    from tests.e2e.conftest import ARTIFACTS, run_streamlit

    if REAL_MODEL not in real_models():
        print("the real model is not converted (make setup)", file=sys.stderr)
        return 2
    with run_streamlit(REPO / "app.py", log_name="soak-server") as base:
        alone, together = asyncio.run(soak(base, args.quick))
    return report(alone, together, ARTIFACTS / "soak-server.log")


if __name__ == "__main__":
    raise SystemExit(main())
