"""`python -m logitscope rerun BUNDLE.zip --out DIR`: recompute a page's (or a command's) bundle from the bundle
alone and say whether every table matches.

The bundle names its method (metadata "page"), its models (cards: source, revision, adapter, dtype, weights
sha256), every setting, and holds the exact prompts of every input set (prompts/*.jsonl, metadata "inputs" maps
each CLI flag to its files). Each set goes into the local prompt store (analysis.prompts.store) under its name and
sha256 and is passed as 'store:<sha256>'; a set whose content does not match its recorded hash is refused. The
rerun runs that method's command with those, writes DIR like any command, then compares each data/*.csv (inside
DIR only): identical, within the dtype's tolerance (the largest difference is printed), or not.

A bundle is untrusted input (logitscope.bundle_check): entries of the shapes a bundle writes only, sizes bounded from
the zip directory before reading, and metadata checked against the method's declaration before anything runs.
Exit status 0 when every table matches, 1 when one does not, 2 on a project error.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.prompts import store as prompt_store
from logitscope.bundle_check import check_metadata, read_bundle

TOLERANCE = {"float32": (1e-4, 1e-6), "bfloat16": (2e-2, 1e-3), "float16": (5e-3, 1e-4)}  # (rtol, atol) by dtype


def command_line(meta: Any, files: dict[str, bytes], tmp: Path) -> list[str]:
    """The command that recomputes the bundle: its method's command, models, input files and every setting, from
    metadata validated first (bundle_check.check_metadata: nothing is stored or run for a bundle it refuses)."""
    from components.settings import field_of, to_text

    m, cards, inputs, settings = check_metadata(meta, files)
    argv = [m.command]
    for which, suffix in (("A", ""), ("B", "-b")):
        card = cards.get(which)
        if card is None:
            continue
        argv.append(f"--model{suffix}={card.source}")  # '=': a value is never read as a flag
        if card.revision:
            argv.append(f"--revision{suffix}={card.revision}")
        if card.adapter:
            argv.append(f"--adapter{suffix}={card.adapter}")
    dtypes = {c.dtype for c in cards.values()}
    if len(dtypes) == 1 and (dtype := dtypes.pop()) is not None:
        argv.append(f"--dtype={dtype}")
    for flag, entries in inputs.items():
        refs = []
        for e in entries:
            # into the local prompt store under its own name and hash (names appear in tables: 'facts', not a file)
            ps = prompt_store.from_jsonl(e["name"], files[e["file"]], e["sha256"])
            refs.append(f"store:{prompt_store.save(ps)}")
        argv.append(f"{flag}={','.join(refs)}")
    for name, value in settings.items():
        f = field_of(m.settings, name)
        argv.append(f"{f.flag}={to_text(f, value)}")
    return argv


def compare_tables(original: dict[str, bytes], out: Path, dtype: str = "float32") -> list[tuple[str, str, bool]]:
    """[(table, verdict, ok)] for every data/*.csv of the bundle against the rerun's."""
    rtol, atol = TOLERANCE.get(dtype, TOLERANCE["float32"])
    rows = []
    root = out.resolve()
    for name in sorted(n for n in original if n.startswith("data/") and n.endswith(".csv")):
        new_path = (out / name).resolve()
        if root not in new_path.parents:  # names are checked on reading; the folder itself may hold links
            rows.append((name, "outside the output folder", False))
            continue
        if not new_path.is_file():
            rows.append((name, "missing from the rerun", False))
            continue
        if new_path.read_bytes() == original[name]:
            rows.append((name, "identical", True))
            continue
        a = pd.read_csv(io.BytesIO(original[name]))
        b = pd.read_csv(new_path)
        if a.shape != b.shape or list(a.columns) != list(b.columns):
            rows.append((name, f"differs: shape {a.shape} vs {b.shape}", False))
            continue
        worst, ok, why = 0.0, True, ""
        for col in a.columns:
            x, y = a[col], b[col]
            if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
                xv, yv = x.to_numpy(float), y.to_numpy(float)
                both_nan = np.isnan(xv) & np.isnan(yv)
                diff = np.where(both_nan, 0.0, np.abs(xv - yv))
                if np.isnan(diff).any():
                    ok, why = False, f"column '{col}': NaN in one run only"
                    continue
                worst = max(worst, float(diff.max(initial=0.0)))
                if not np.all(diff <= atol + rtol * np.abs(xv)):
                    ok, why = False, f"column '{col}': max |diff| {float(diff.max()):.3g}"
            elif not x.astype(str).equals(y.astype(str)):
                bad = int((x.astype(str) != y.astype(str)).to_numpy().argmax())
                ok, why = False, f"column '{col}' row {bad + 1}: {x.iloc[bad]!r} vs {y.iloc[bad]!r}"
        rows.append((name, f"within {dtype} tolerance (max |diff| {worst:.3g})" if ok else f"differs: {why}", ok))
    return rows


def run(args: argparse.Namespace) -> int:
    """Recompute the bundle into --out and report table by table."""
    from logitscope.cli import main

    meta, files = read_bundle(Path(args.bundle))
    with tempfile.TemporaryDirectory(prefix="logitscope-rerun-") as tmp:
        argv = command_line(meta, files, Path(tmp))
        argv += ["--out", args.out, "--formats", "html", "--quiet"] + (["--force"] if args.force else [])
        argv += ["--ray", args.ray] if args.ray else []
        print("rerun: python -m logitscope " + " ".join(argv[:1] + [repr(a) if " " in a or not a else a
                                                                   for a in argv[1:]]), file=sys.stderr)
        rc = main(argv)
    if rc != 0:
        return rc
    out = Path(args.out)
    new_meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    for which, card in meta.get("models", {}).items():
        old_w, new_w = card.get("weights_sha256"), new_meta["models"].get(which, {}).get("weights_sha256")
        same = "same weights" if old_w and old_w == new_w else ("weights differ" if old_w and new_w else
                                                                 "weights not fingerprinted")
        print(f"model {which}: {card.get('name')} ({same})")
    dtype = next(iter(meta.get("models", {}).values()), {}).get("dtype", "float32")
    rows = compare_tables(files, out, dtype)
    for name, verdict, _ in rows:
        print(f"{name}: {verdict}")
    bad = sum(not ok for *_, ok in rows)
    print(f"{len(rows) - bad} of {len(rows)} tables match" + ("" if not bad else f"; {bad} differ"))
    return 0 if not bad and rows else 1


def add(sub: Any) -> None:
    """The rerun subcommand."""
    p = sub.add_parser("rerun", help="recompute a bundle and check that its tables match",
                       description="Recompute a page's or a command's bundle (zip) from the models, settings and "
                                   "exact prompts it records, write it to --out and compare every table.")
    p.add_argument("bundle", help="the bundle zip (Download bundle on a page, or a zipped --out folder)")
    p.add_argument("--out", required=True, help="folder for the recomputed bundle")
    p.add_argument("--force", action="store_true", help="replace an earlier run's files in --out")
    from logitscope.common import add_ray

    add_ray(p)
    p.set_defaults(func=run)
