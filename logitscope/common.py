"""Shared plumbing of the command line: models, prompt sets, progress, the output folder and the bundle."""
from __future__ import annotations

import argparse
import io
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from analysis.core.errors import InputError, PromptSetError
from analysis.core.progress import ProgressFn
from analysis.core.wording import plural
from analysis.models.pair import ModelPair

OWNED = ("figures", "data", "prompts", "metadata.json")  # what a run writes into --out (and may replace with --force)


REDRAW_EVERY_S = 0.5  # the bar's redraws at most this often; close() draws the final state


class Progress:
    """A stderr progress bar (tqdm) driven by engine progress callbacks; stage() maps a part of the run onto it."""

    def __init__(self, label: str, quiet: bool = False, notebook: bool = False) -> None:
        if notebook:  # a widget in Jupyter, text elsewhere
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm

        self.bar = tqdm(total=1000, desc=label, file=sys.stderr, disable=quiet, leave=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}")
        self._shown = 0.0  # when the bar was last redrawn (a redraw per engine callback floods a notebook cell)

    def stage(self, lo: float, hi: float, label: str = "") -> ProgressFn:
        """A progress callback whose fractions 0..1 fill the bar from lo to hi."""
        def report(fraction: float, message: str = "") -> None:
            f = lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0)
            self.bar.n = max(self.bar.n, int(round(f * 1000)))
            text = f"{label}: {message}" if label and message else (label or message)
            self.bar.set_postfix_str(text[:60], refresh=False)
            now = time.monotonic()
            if now - self._shown >= REDRAW_EVERY_S:
                self._shown = now
                self.bar.refresh()
        return report

    def close(self) -> None:
        """Fill and close the bar."""
        self.bar.n = 1000
        self.bar.refresh()
        self.bar.close()


@contextmanager
def progress(label: str, quiet: bool) -> Iterator[Progress]:
    """A Progress bar closed at the end of the block."""
    bar = Progress(label, quiet)
    try:
        yield bar
    finally:
        bar.close()


def load_prompts(text: str) -> Any:
    """A built-in set by name, 'store:<sha256>' (a set in the local prompt store), else a .txt/.csv/.jsonl file
    path; PromptSetError if it is none of these."""
    from analysis.prompts import builtin_sets, load_builtin, parse_prompt_file
    from analysis.prompts import store as prompt_store

    if text in builtin_sets():
        return load_builtin(text)
    if text.startswith("store:"):  # a set kept in the local prompt store by its sha256 (links, rerun)
        stored = prompt_store.load(text[len("store:"):])
        if stored is None:
            raise PromptSetError(f"No prompt set {text[6:18]}… is stored on this machine "
                                 f"({prompt_store.store_dir()}).")
        return stored
    path = Path(text)
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as err:
            raise PromptSetError(f"The prompt file '{text}' could not be read ({err.strerror}).") from None
        return parse_prompt_file(path.name, data)
    raise PromptSetError(f"'{text}' is neither a built-in prompt set ({', '.join(builtin_sets()) or 'none'}) "
                         "nor a prompt file (.txt, .csv, .jsonl).")


def first_n(ps: Any, n: int | None) -> Any:
    """The first n rows of a prompt set as a set of its own (all of them when n is None)."""
    from analysis.prompts import PromptSet

    if n is None or len(ps) <= n:
        return ps
    if n < 1:
        raise InputError(f"The number of prompts must be at least 1 (got {n}).")
    return PromptSet.from_rows(f"{ps.name} (first {n})", ps.rows[:n], ps.notes)


def spec_of(args: argparse.Namespace, source: str, which: str = "") -> Any:
    """The spec of a --model (which "a") or --model-b ("b") source with its --revision/--adapter(-b) and the options."""
    from dataclasses import replace

    from analysis.models.catalog import named_spec

    spec = named_spec(source, revision=None, dtype=args.dtype, device=args.device,
                      allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code)
    suffix = {"a": "", "b": "_b"}.get(which)
    if suffix is None:
        return spec
    revision, adapter = getattr(args, f"revision{suffix}", None), getattr(args, f"adapter{suffix}", None)
    return replace(spec, revision=revision or spec.revision, adapter=adapter or spec.adapter)


def load_models(args: argparse.Namespace, need_b: bool = False) -> ModelPair:
    """Load --model (and --model-b) with their cards, as the sidebar picker does."""
    from analysis.core.loading import load_model
    from analysis.models.card import model_card

    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if args.allow_pickle:
        print("warning: pickle weights allowed: loading them can execute code.", file=sys.stderr)
    if args.trust_remote_code:
        print("warning: remote code trusted: the checkpoint's Python code will run.", file=sys.stderr)
    if need_b and not args.model_b:
        raise InputError(f"'{args.command}' compares two checkpoints: give the second one with --model-b "
                         "(e.g. --model gpt2-world-base --model-b gpt2-world-tuned).")
    lm_a = load_model(spec_of(args, args.model, "a"))
    if not args.model_b:
        return ModelPair(lm_a, model_card(lm_a))
    lm_b = load_model(spec_of(args, args.model_b, "b"))
    return ModelPair(lm_a, model_card(lm_a), lm_b, model_card(lm_b))


def prepare_out(out: str, force: bool) -> Path:
    """The output folder, created; refuses to mix with an earlier run's files unless force (then replaces them)."""
    import shutil

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {out} exists and is not a folder.")
    if path.is_dir():
        present = [name for name in OWNED if (path / name).exists()]
        if present and not force:
            raise InputError(f"--out {out} already holds {', '.join(present)} from an earlier run; "
                             "pass --force to replace them, or choose another folder.")
        for name in present:
            target = path / name
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def extract_bundle(out: Path, data: bytes) -> list[str]:
    """Extract a bundle zip into out; returns its files."""
    root = out.resolve()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        for name in names:
            dest = (root / name).resolve()
            if root not in dest.parents:  # bundle names are safe_filename'd; belt and braces
                raise InputError(f"Refusing to write {name!r} outside {out}.")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(zf.read(name))
    return names


def bundle_zip(report: Any, page: str, models: ModelPair, settings: dict, prompt_set: Any, inputs: dict | None = None,
               formats: Sequence[str] = ("png", "svg", "html")) -> bytes:
    """The page's bundle zip (components.exporting.build_bundle) of a report and its metadata (the page's keys):
    ``inputs`` = {CLI flag: set(s)} of every prompt set the run used (default: prompt_set under --prompts)."""
    from components.exporting import build_bundle
    from components.reports import report_metadata

    meta = report_metadata(page, models.cards(), settings, prompt_set, report.notes, inputs)
    return build_bundle(report.figures, report.tables, meta, formats)


def save_bundle(out: str | Path, report: Any, page: str, models: ModelPair, settings: dict, prompt_set: Any,
                inputs: dict | None = None, formats: Sequence[str] = ("png", "svg", "html"),
                force: bool = False) -> tuple[Path, list[str]]:
    """The bundle (``bundle_zip``) extracted into the folder ``out``: (the folder, its files)."""
    data = bundle_zip(report, page, models, settings, prompt_set, inputs, formats)
    folder = prepare_out(str(out), force)
    return folder, extract_bundle(folder, data)


def finish(args: argparse.Namespace, report: Any, page: str, models: ModelPair, settings: dict, prompt_set: Any,
           inputs: dict | None = None) -> int:
    """The bundle into --out (``save_bundle``), the notes on stderr, and the folder on stdout."""
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    out, names = save_bundle(args.out, report, page, models, settings, prompt_set, inputs, args.formats, args.force)
    if not args.quiet:
        print(f"wrote {len(names)} files ({len(report.figures)} figures, {len(report.tables)} tables) to {out}",
              file=sys.stderr)
    print(out)
    return 0


def formats_arg(text: str) -> tuple[str, ...]:
    from components.exporting import FIGURE_FORMATS

    fmts = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()))
    bad = [f for f in fmts if f not in FIGURE_FORMATS]
    if bad or not fmts:
        raise argparse.ArgumentTypeError(f"choose figure formats from {', '.join(FIGURE_FORMATS)} "
                                         f"(comma separated), got {text!r}")
    return fmts


def add_common(p: argparse.ArgumentParser, default_prompts: str, b_required: bool = False) -> None:
    from analysis.core.loading import DEFAULT_MODEL

    g = p.add_argument_group("models and data")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint A: zoo name, real model name "
                   f"(smollm2-135m-instruct, or smollm2-grumpy-lora for its LoRA fine-tune), local folder, .gguf "
                   f"file or hub id (default {DEFAULT_MODEL})")
    g.add_argument("--model-b", default=None, help="checkpoint B, compared with A" +
                   (" (required)" if b_required else " (optional)"))
    g.add_argument("--revision", default=None, help="revision (branch, tag or commit) of checkpoint A")
    g.add_argument("--revision-b", default=None, help="revision of checkpoint B")
    g.add_argument("--adapter", default=None, help="LoRA adapter folder merged into checkpoint A")
    g.add_argument("--adapter-b", default=None, help="LoRA adapter folder merged into checkpoint B")
    from analysis.models.defaults import REAL_EQUIVALENTS

    real = REAL_EQUIVALENTS.get(default_prompts, default_prompts)
    g.add_argument("--prompts", default=None, help=f"built-in prompt set name or a .txt/.csv/.jsonl file (default "
                   f"from model A: {default_prompts} on the demo models" + (f", {real} on any other" if real !=
                   default_prompts else "") + "); prompts run exactly as given (.txt: one per line, no line breaks)")
    p.set_defaults(demo_prompts=default_prompts)
    g.add_argument("--chat-template", action="store_true", help="wrap each plain prompt as one user turn with A's chat "
                   "template (.jsonl rows given as \"messages\" always use it)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="default auto")
    g.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights: they can run code")
    g.add_argument("--trust-remote-code", action="store_true", help="run Python code shipped with the checkpoint")
    add_ray(g)
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="folder for figures/, data/, prompts/ and metadata.json (the bundle's "
                   "layout)")
    o.add_argument("--formats", type=formats_arg, default=("png", "svg", "html"),
                   help="figure formats, comma separated, from png,svg,pdf,html (default png,svg,html as the "
                        "page's bundle; png/svg/pdf need Chromium, else HTML is written and metadata says why)")
    o.add_argument("--force", action="store_true", help="replace figures/, data/ and metadata.json already in --out")
    o.add_argument("--quiet", action="store_true", help="no progress bar")


def ray_arg(text: str) -> str:
    """An argparse type: a --ray address ('auto', 'ray://HOST:PORT' or 'local:N'), checked (one-line error)."""
    from analysis.compute.backend import check_address
    from analysis.core.errors import BackendError

    try:
        return check_address(text)
    except BackendError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_ray(g: Any) -> None:
    """The --ray flag (the compute backend; docs/scaling.md)."""
    g.add_argument("--ray", type=ray_arg, default=None, metavar="auto|ray://HOST:PORT|local:N",
                   help="run the prompt-heavy work on Ray actors, one model copy each (lens, ood, steer, neurons "
                        "shard; flow and shift run in this process): 'local:N' starts N workers here, 'auto' joins "
                        "a cluster on this machine, ray://HOST:PORT a remote one (default: this process)")


def index_arg(one_based: int, count: int, flag: str) -> int:
    if not 1 <= one_based <= count:
        raise InputError(f"{flag} {one_based} is out of range: the set has {plural(count, 'prompt')} (1..{count}).")
    return one_based - 1


def numbers(text: str, what: str, kind: type = float) -> tuple:
    import re

    items = [t for t in re.split(r"[,\s;]+", text.strip()) if t]
    if not items:
        raise InputError(f"Give at least one {what}, separated by commas (e.g. 2, 4).")
    try:
        return tuple(kind(t) for t in items)
    except ValueError:
        raise InputError(f"'{text}' is not a list of {what}s; write them separated by commas (e.g. 2, 4).") from None


def parts_of(allowed: tuple[str, ...], *, none: bool = False) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma list of names from ``allowed`` (and 'none' for no part, if ``none``)."""
    def parse(text: str) -> tuple[str, ...]:
        if none and text.strip() == "none":
            return ()
        parts = tuple(p.strip() for p in text.split(",") if p.strip())
        bad = [p for p in parts if p not in allowed]
        if bad:
            extra = " (or 'none')" if none else ""
            raise argparse.ArgumentTypeError(f"choose parts from {', '.join(allowed)}{extra}, got {', '.join(bad)}")
        return parts
    return parse


def layer_opt(text: str) -> str | int:
    if text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a layer number or 'best', got {text!r}") from None
