"""`make gallery`: screenshots of every page, alone and in compare mode, plus every exported figure, in gallery/.

Each page is opened straight from its link (`/<page>?a=...&b=...&<key>.run=1`), so it computes at once with the
page's defaults, in the real app under `streamlit run`, in Debian's headless Chromium; it is captured in full at
1280x800 and 1440x900. The exported figures are the CLI's PNGs (`python -m logitscope <command> --out`), which go
through the same report and export code as the page's bundle. Worlds: the demo models (always) and the real model
with its LoRA fine-tune (when installed). gallery/index.html shows everything with its caption.

    python -m tests.e2e.gallery [--out gallery] [--world demo|real|all] [--pages lens,flow] [--sizes 1280x800]
"""
from __future__ import annotations

import argparse
import html
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from tests.e2e.conftest import CHROMIUM_ARGS, REPO_ROOT, _goto_app, chromium_path, run_streamlit

PAGES = {  # url path -> (method key, CLI command, title)
    "logit_lens": ("lens", "lens", "Logit lens"),
    "logit_flow": ("flow", "flow", "Logit flow"),
    "steering": ("steer", "steer", "Steering and personas"),
    "confidence_neurons": ("neurons", "neurons", "Confidence neurons"),
    "checkpoint_shift": ("shift", "shift", "Checkpoint shift"),
    "ood": ("ood", "ood", "OOD separability"),
}
VARIANTS = {"logit_lens": ("tuned", {"lens.lens": "tuned"})}  # a second shot of the page with these settings
SIZES = ((1280, 800), (1440, 900))
LONG_MS = 900_000


@dataclass(frozen=True)
class World:
    """A pair of checkpoints the gallery is drawn on: query parameters of A and of B, CLI flags of each."""

    name: str
    a: dict[str, str]
    b: dict[str, str]
    cli_a: tuple[str, ...]
    cli_b: tuple[str, ...]
    tuned: bool = False  # train (or reuse) tuned-lens translators and shoot the lens with them


def worlds() -> dict[str, World]:
    """The demo world, and the real model with its LoRA when both are installed."""
    from analysis.core.paths import zoo_dir
    from analysis.models.real import REAL_LORA, REAL_MODEL, real_model_dir

    out = {"demo": World("demo", {"a": "gpt2-world-base"}, {"b": "gpt2-world-tuned"},
                         ("--model", "gpt2-world-base"), ("--model-b", "gpt2-world-tuned"), tuned=True)}
    lora = zoo_dir() / REAL_LORA
    if (real_model_dir() / "config.json").is_file() and lora.is_dir():
        out["real"] = World("real", {"a": REAL_MODEL}, {"b": REAL_MODEL, "b.adapter": str(lora)},
                            ("--model", REAL_MODEL), ("--model-b", REAL_MODEL, "--adapter-b", str(lora)))
    return out


def full_height(page, width: int, height: int) -> None:
    """Grow the viewport to the main area's whole height (Streamlit scrolls inside it, so a plain full-page
    screenshot would stop at the first screen) and let the charts redraw at that size."""
    tall = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=stMainBlockContainer], "
                         "[data-testid=stSidebarContent]')].map(e => e.scrollHeight + e.getBoundingClientRect().top))")
    if tall and tall > height:
        page.set_viewport_size({"width": width, "height": min(int(tall) + 40, 30_000)})
        page.wait_for_timeout(1500)


RUN_BUTTONS = re.compile(r"^(Run|Build|Generate|Sweep|Compute|Scan)\b")


def press_runs(page) -> None:
    """Press the visible buttons of the open tab that start a computation (Run ablation, Build vectors, ...), once
    each, and wait for the page to settle, so the shot shows results rather than a prompt to press Run."""
    from tests.e2e.conftest import _wait_for_app_idle

    pressed: set[str] = set()
    for _ in range(6):
        todo = [b for b in page.get_by_test_id("stMain").get_by_role("button").all()
                if b.is_visible() and RUN_BUTTONS.match((b.inner_text() or "").strip())
                and (b.inner_text() or "").strip() not in pressed]
        if not todo:
            return
        label = (todo[0].inner_text() or "").strip()
        pressed.add(label)
        try:
            todo[0].click(timeout=5_000)
            page.mouse.move(0, 0)  # no tooltip left open over the shot
            _wait_for_app_idle(page, LONG_MS)
        except Exception:  # noqa: BLE001 - a button gone with the rerun: the next pass looks again
            continue


def tabs(page, name: str, caption: str, out: Path, width: int, height: int) -> list[tuple[str, str]]:
    """Click each further tab of the page (the first is in the whole-page shot) and capture the page with it."""
    shots = []
    found = page.get_by_test_id("stMain").get_by_role("tab")
    labels = [t.strip() for t in found.all_inner_texts()]
    for i, label in enumerate(labels[1:], start=1):
        found.nth(i).click()
        page.wait_for_timeout(1200)
        press_runs(page)
        full_height(page, width, height)
        file = name.replace(".png", f"-tab{i}.png")
        page.screenshot(path=str(out / file), full_page=True)
        shots.append((file, f"{caption} · tab {label}"))
    return shots


def shoot(url: str, world: World, pages: list[str], sizes, out: Path, log) -> list[tuple[str, str]]:
    """Full-page screenshots of each page alone and with B at each size; [(file, caption)]."""
    from playwright.sync_api import sync_playwright

    shots = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            for mode in ("alone", "compare"):
                runs = [(path, "", {}) for path in pages]
                runs += [(path, *VARIANTS[path]) for path in pages if path in VARIANTS and world.tuned]
                for path, variant, extra in runs:
                    key = PAGES[path][0]
                    query = {**world.a, **(world.b if mode == "compare" else {}), f"{key}.run": "1", **extra}
                    for w, h in sizes:
                        ctx = browser.new_context(viewport={"width": w, "height": h})
                        page = ctx.new_page()
                        t0 = time.monotonic()
                        try:
                            _goto_app(page, f"{url}/{path}?{urlencode(query)}", LONG_MS)
                            press_runs(page)
                            name = f"{world.name}-{mode}-{path}{'-' + variant if variant else ''}-{w}x{h}.png"
                            page.screenshot(path=str(out / name.replace(".png", "-screen.png")))
                            full_height(page, w, h)
                            page.screenshot(path=str(out / name), full_page=True)
                            errors = page.get_by_test_id("stMain").get_by_test_id("stAlertContentError")
                            err = "; ".join(errors.all_inner_texts()) if errors.count() else ""
                            caption = f"{world.name} · {mode} · {PAGES[path][2]}{' · ' + variant if variant else ''} · {w}x{h}"
                            shots.append((name.replace(".png", "-screen.png"), caption + " · first screen"))
                            shots.append((name, caption + " · whole page" + (f" · ERROR: {err}" if err else "")))
                            shots += tabs(page, name, caption, out, w, h)
                            log(f"  {name} ({time.monotonic() - t0:.0f} s){' ERROR ' + err if err else ''}")
                        finally:
                            ctx.close()
        finally:
            browser.close()
    return shots


def exports(world: World, pages: list[str], out: Path, log) -> list[tuple[str, str]]:
    """Each command's exported figures (PNG) on A alone and on A vs B; [(file, caption)]."""
    shots = []
    for mode in ("alone", "compare"):
        for path in pages:
            command = PAGES[path][1]
            if command == "shift" and mode == "alone":
                continue  # shift compares two checkpoints
            folder = out / "runs" / f"{world.name}-{mode}-{command}"
            args = [sys.executable, "-m", "logitscope", command, *world.cli_a,
                    *(world.cli_b if mode == "compare" else ()), "--out", str(folder), "--force", "--quiet"]
            t0 = time.monotonic()
            done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                log(f"  {command} {mode}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
                continue
            for png in sorted((folder / "figures").glob("*.png")):
                shots.append((str(png.relative_to(out)), f"{world.name} · {mode} · export · {command} · {png.stem}"))
            log(f"  export {command} {mode} ({time.monotonic() - t0:.0f} s)")
    return shots


def write_index(out: Path, sections: dict[str, list[tuple[str, str]]]) -> Path:
    """gallery/index.html: one section per world, each image with its caption (all text escaped)."""
    parts = ["<!doctype html><meta charset='utf-8'><title>Logitscope gallery</title>",
             "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;width:460px;margin:6px;"
             "vertical-align:top}img{width:100%;border:1px solid #ccc}figcaption{font-size:12px}</style>",
             "<h1>Logitscope gallery</h1>"]
    for title, shots in sections.items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for file, caption in shots:
            src = html.escape(file, quote=True)
            parts.append(f"<figure><a href='{src}'><img src='{src}' loading='lazy'></a>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    """Draw the gallery; exit 1 when a page showed an error or a command failed."""
    ap = argparse.ArgumentParser(prog="python -m tests.e2e.gallery", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO_ROOT / "gallery"))
    ap.add_argument("--world", default="all", choices=("demo", "real", "all"))
    ap.add_argument("--pages", default=",".join(PAGES), help="comma-separated url paths: " + ", ".join(PAGES))
    ap.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES))
    ap.add_argument("--no-exports", action="store_true", help="screenshots only")
    args = ap.parse_args(argv)
    if not chromium_path():
        print("error: no Chromium found (make setup installs Debian's chromium)", file=sys.stderr)
        return 2
    pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    unknown = [p for p in pages if p not in PAGES]
    if unknown:
        print(f"error: unknown page(s) {', '.join(unknown)}; choose from {', '.join(PAGES)}", file=sys.stderr)
        return 2
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = {k: v for k, v in worlds().items() if args.world in ("all", k)}
    if args.world == "real" and not chosen:
        print("error: the real model or its LoRA is not installed (make setup)", file=sys.stderr)
        return 2
    sections, failed = {}, False
    for world in chosen.values():
        if world.tuned and "logit_lens" in pages:
            for model in (world.cli_a[1], world.cli_b[1]):  # seconds on the demo models; cached afterwards
                subprocess.run([sys.executable, "-m", "logitscope", "tuned-lens", "--model", model], cwd=REPO_ROOT,
                               capture_output=True, text=True)
    with run_streamlit(REPO_ROOT / "app.py", "gallery-server") as url:
        for world in chosen.values():
            print(f"{world.name}: pages", flush=True)
            shots = shoot(url, world, pages, sizes, out, lambda m: print(m, flush=True))
            failed |= any("ERROR" in c for _, c in shots)
            sections[f"{world.name}: pages"] = shots
            if not args.no_exports:
                print(f"{world.name}: exported figures", flush=True)
                ex = exports(world, pages, out, lambda m: print(m, flush=True))
                sections[f"{world.name}: exported figures"] = ex
    print(f"wrote {write_index(out, sections)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
