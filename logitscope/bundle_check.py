"""A bundle zip read as untrusted input, for `python -m logitscope rerun`: only entries of the exact shapes a bundle
writes, sizes bounded from the zip directory before anything is inflated, and metadata validated against the
method's declaration (its page, its own input flags, model cards with the expected fields, typed settings) before
anything runs. Every refusal is an InputError naming the entry, flag, card or setting.
"""
from __future__ import annotations

import json
import re
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.core.errors import InputError, brief
from analysis.prompts.store import MAX_STORED_BYTES

_STEM = r"[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?=[A-Za-z0-9_-])){0,119}"  # what safe_filename (+ _unique) writes
ENTRY = re.compile(rf"metadata\.json|plotly\.min\.js|data/{_STEM}\.(?:csv|json)|figures/{_STEM}\.(?:png|svg|pdf|html)"
                   r"|prompts/[a-z0-9]+(?:-[a-z0-9]+)*-[1-9][0-9]{0,3}\.jsonl|(?:data|figures|prompts)/")
READ = ("metadata.json", "data/", "prompts/")  # the entries rerun reads; figures are never opened
MAX_ENTRIES = 4096
MAX_READ_BYTES = {"metadata.json": 8 << 20, "data/": 64 << 20, "prompts/": MAX_STORED_BYTES}
MAX_ENTRY_BYTES = 256 << 20  # any entry (figures included)
MAX_TOTAL_BYTES = 1 << 30
MAX_RATIO, RATIO_FROM = 200, 1 << 20  # an entry above 1 MiB may inflate at most 200-fold
SHA256 = re.compile(r"[0-9a-f]{64}")
DTYPES = ("float32", "bfloat16", "float16")


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 1 << 20 else f"{n:,} bytes"


def _limit(name: str) -> int | None:
    return next((cap for prefix, cap in MAX_READ_BYTES.items() if name == prefix or name.startswith(prefix)), None)


def check_directory(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Entry names, kinds and sizes from the zip's directory alone: InputError naming the first bad entry."""
    if len(infos) > MAX_ENTRIES:
        raise InputError(f"{path.name} has {len(infos):,} entries; a bundle has at most {MAX_ENTRIES:,}.")
    twice = [n for n, k in Counter(i.filename for i in infos).items() if k > 1]
    if twice:
        raise InputError(f"{path.name} holds the entry {twice[0]!r} twice; a bundle names each file once.")
    total = 0
    for info in infos:
        name = info.filename
        if not ENTRY.fullmatch(name) or ".." in name:
            raise InputError(f"{path.name} holds {name!r}, which is not a bundle entry (metadata.json, data/<name>.csv"
                             "|json, prompts/<flag>-<i>.jsonl, figures/<name>.<format>).")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(f"{path.name} holds {name!r} as a symbolic link; a bundle holds plain files only.")
        cap = _limit(name) or MAX_ENTRY_BYTES
        if info.file_size > cap:
            raise InputError(f"{path.name}: {name} is {_mib(info.file_size)} uncompressed; a bundle entry of its kind "
                             f"holds at most {_mib(cap)}.")
        if info.file_size > RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise InputError(f"{path.name}: {name} inflates {info.file_size / max(info.compress_size, 1):,.0f}-fold "
                             f"({_mib(info.file_size)}); a compression ratio above {MAX_RATIO} is refused.")
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise InputError(f"{path.name} holds {_mib(total)} uncompressed; a bundle holds at most {_mib(MAX_TOTAL_BYTES)}.")


def read_bundle(path: Path) -> tuple[Any, dict[str, bytes]]:
    """(metadata, {entry: bytes} of metadata.json, data/ and prompts/): the directory checked first, each entry then
    read no further than the size its directory declares."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise InputError(f"{path} is not a bundle zip ({brief(err)}).") from None
    with zf:
        infos = zf.infolist()
        check_directory(path, infos)
        if "metadata.json" not in {i.filename for i in infos}:
            raise InputError(f"{path} has no metadata.json: it is not a Logitscope bundle.")
        files = {}
        for info in infos:
            if info.is_dir() or not info.filename.startswith(READ):
                continue
            try:
                with zf.open(info) as f:
                    data = f.read(info.file_size + 1)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as err:
                raise InputError(f"{path.name}: the entry {info.filename} is damaged ({brief(err)}).") from None
            if len(data) != info.file_size:
                raise InputError(f"{path.name}: the entry {info.filename} is not the size its directory declares.")
            files[info.filename] = data
    try:
        meta = json.loads(files["metadata.json"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path.name}: metadata.json is not JSON ({brief(err)}).") from None
    return meta, files


# ---------------------------------------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class Card:
    """What rerun takes from a model card: where the model comes from and its dtype."""

    source: str
    revision: str | None
    adapter: str | None
    dtype: str | None


def _text(value: Any, *, optional: bool) -> bool:
    if value is None:
        return optional
    return (isinstance(value, str) and 0 < len(value) <= 4096 and not value.startswith("-")
            and not any(ord(c) < 32 for c in value))


def check_card(which: str, card: Any) -> Card:
    """A model card's source, revision, adapter and dtype, each of the expected type and shape."""
    where = f"The bundle's model card {which}"
    if not isinstance(card, dict):
        raise InputError(f"{where} is not an object.")
    for key, optional in (("source", False), ("revision", True), ("adapter", True)):
        if not _text(card.get(key), optional=optional):
            raise InputError(f"{where}: '{key}' must be {'a name or path' if not optional else 'empty or a name'} "
                             f"(not starting with '-'), got {card.get(key)!r}.")
    if card.get("dtype") not in (None, *DTYPES):
        raise InputError(f"{where}: 'dtype' must be one of {', '.join(DTYPES)}, got {card.get('dtype')!r}.")
    if card.get("weights_sha256") is not None and not SHA256.fullmatch(str(card["weights_sha256"])):
        raise InputError(f"{where}: 'weights_sha256' is not a sha256.")
    return Card(card["source"], card.get("revision"), card.get("adapter"), card.get("dtype"))


def check_inputs(inputs: Any, allowed: tuple[str, ...], command: str, files: Mapping[str, bytes]) -> dict:
    """{flag: [entry]} of the bundle's input sets: the method's own flags only, each entry naming a prompts/ file of
    that flag that the bundle holds, a set name and the set's sha256."""
    if not isinstance(inputs, dict) or not inputs:
        raise InputError("The bundle holds no prompts in its metadata (it was written before bundles kept them, or "
                         "'inputs' is not an object): it cannot be rerun.")
    for flag, entries in inputs.items():
        if flag not in allowed:
            raise InputError(f"The bundle's metadata names the input {flag!r}, which is not an input of '{command}' "
                             f"(its inputs: {', '.join(allowed)}).")
        if not isinstance(entries, list) or not 1 <= len(entries) <= 64:
            raise InputError(f"The bundle's metadata input {flag} is not a list of prompt files.")
        for e in entries:
            stem = flag.lstrip("-")
            if not (isinstance(e, dict) and isinstance(e.get("file"), str)
                    and re.fullmatch(rf"prompts/{re.escape(stem)}-[1-9][0-9]{{0,3}}\.jsonl", e["file"])):
                raise InputError(f"The bundle's metadata input {flag} names a file that is not prompts/{stem}-<i>.jsonl.")
            if not (isinstance(e.get("name"), str) and 0 < len(e["name"]) <= 300):
                raise InputError(f"The bundle's metadata input {flag} ({e['file']}) has no set name.")
            if not isinstance(e.get("sha256"), str) or not SHA256.fullmatch(e["sha256"]):
                raise InputError(f"The bundle's metadata input {flag} ({e['file']}) has no valid sha256.")
            if e["file"] not in files:
                raise InputError(f"The bundle lacks {e['file']} named in its metadata.")
    return inputs


def check_metadata(meta: Any, files: Mapping[str, bytes]) -> tuple[Any, dict[str, Card], dict, Any]:
    """(method, {A/B: card}, inputs, {setting: value} of the CLI settings the bundle records, typed and within
    bounds) of a bundle's metadata, or InputError naming what is wrong."""
    from components.settings import fields_of, from_metadata

    if not isinstance(meta, dict):
        raise InputError("The bundle's metadata.json is not a JSON object.")
    if not isinstance(meta.get("page"), str):
        raise InputError("The bundle's metadata names no page (metadata 'page').")
    method = method_for(meta["page"])
    inputs = check_inputs(meta.get("inputs"), method.inputs, method.command, files)
    models = meta.get("models")
    if not isinstance(models, dict) or "A" not in models or set(models) - {"A", "B"}:
        raise InputError("The bundle's metadata 'models' must hold model card A (and optionally B), nothing else.")
    cards = {which: check_card(which, card) for which, card in models.items()}
    saved = meta.get("settings", {})
    if not isinstance(saved, dict):
        raise InputError("The bundle's metadata 'settings' is not an object.")
    settings = from_metadata(method.settings, saved)  # typed and checked; InputError naming the setting
    return method, cards, inputs, {f.name: getattr(settings, f.name) for f in fields_of(method.settings)
                                   if f.spec.cli and f.name in saved}


def method_for(page: str) -> Any:
    """The registry's method whose page is ``page``."""
    from components.methods import METHODS

    for m in METHODS.values():
        if page == m.module.PAGE:
            return m
    known = ", ".join(m.module.PAGE for m in METHODS.values())
    raise InputError(f"The bundle's page {page[:80]!r} has no rerun (known: {known}).")
