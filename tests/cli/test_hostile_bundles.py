"""Hostile bundles (issue #27): `python -m logitscope rerun` on crafted zips stays inside --out, reads nothing else
on the machine, bounds what it reads from the zip directory before reading, and runs only what the method's
declaration allows. Every case ends with exit status 2 and a one-line message naming the problem, checked on the
file system (nothing written outside --out), on Python's own audit trail of opened files (nothing read outside the
bundle, --out and the project) and on the allocation peak (tracemalloc).
"""
from __future__ import annotations

import io
import json
import stat
import sys
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from analysis.core.paths import REPO_ROOT
from logitscope.cli import main
from tests.hostile_fixtures import BASE, needs_zoo

pytestmark = needs_zoo

SECRET = "TOPSECRET-42"
_OPENED: list[str] | None = None  # paths opened while a test records them (audit hook, installed once)


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0] if not isinstance(args[0], bytes) else args[0].decode(errors="replace")))


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def bundle_files(tmp_path_factory) -> dict[str, bytes]:
    """A real lens bundle (CLI, demo model, two prompts) as {entry name: bytes}."""
    root = tmp_path_factory.mktemp("hostile-bundle")
    prompts = root / "two.jsonl"
    lines = (REPO_ROOT / "data" / "prompts" / "facts.jsonl").read_text(encoding="utf-8").splitlines()[:2]
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = root / "out"
    assert main(["lens", "--model", BASE, "--prompts", str(prompts), "--out", str(out), "--formats", "html",
                 "--quiet"]) == 0
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _zip(path: Path, files: dict[str, bytes], extra: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for info, data in extra:
            zf.writestr(info, data)
    return path


def _meta(files: dict[str, bytes]) -> dict:
    return json.loads(files["metadata.json"])


def _with_meta(files: dict[str, bytes], meta: object) -> dict[str, bytes]:
    return {**files, "metadata.json": json.dumps(meta).encode("utf-8")}


@pytest.fixture
def secret(tmp_path_factory) -> Path:
    """A CSV outside every folder rerun may touch, whose content an attacker would like to learn."""
    folder = tmp_path_factory.mktemp("elsewhere")
    path = folder / "secret.csv"
    path.write_text(f"secret\n{SECRET}\n", encoding="utf-8")
    return path


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _rerun(zpath: Path, out: Path, capsys, watch: list[Path] = ()) -> tuple[int, str, list[str], int]:
    """(exit status, stdout + stderr, files opened outside the bundle/--out/project/venv, allocation peak bytes)."""
    global _OPENED
    before = {str(w): _tree(w) for w in watch}
    capsys.readouterr()
    _OPENED = []
    tracemalloc.start()
    try:
        rc = main(["rerun", str(zpath), "--out", str(out)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        opened, _OPENED = _OPENED, None
    got = capsys.readouterr()
    for w in watch:  # nothing written or changed outside --out
        assert _tree(w) == before[str(w)], f"rerun changed files under {w}"
    return rc, got.out + got.err, opened, peak


def _one_line_error(text: str) -> str:
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


# ------------------------------------------------------------------------------------------------ entry names
def _traversal(secret: Path, prefix: str) -> str:
    return prefix + "../" * 40 + secret.as_posix().lstrip("/")


@pytest.mark.parametrize("prefix", ["data/", "prompts/", "figures/", "data/sub/"])
def test_traversal_names_are_refused_and_nothing_outside_is_read(prefix, bundle_files, secret, tmp_path, capsys):
    name = _traversal(secret, prefix)
    zpath = _zip(tmp_path / "b.zip", {**bundle_files, name: b"secret\nguess\n"})
    rc, text, opened, _ = _rerun(zpath, tmp_path / "out", capsys, watch=[secret.parent])
    assert rc == 2
    line = _one_line_error(text)
    assert "not a bundle entry" in line and "secret.csv" in line
    assert SECRET not in text and "differs" not in text
    assert not [p for p in opened if Path(p).name == "secret.csv"], opened


@pytest.mark.parametrize("name", ["/etc/logitscope-abs.csv", "data\\..\\..\\x.csv", "data/./x.csv", "data//x.csv",
                                  "data/x.csv/", "prompts/prompts-1.jsonl.exe", "data/.hidden.csv",
                                  "metadata.json.bak", "../metadata.json", "data/x.exe"])
def test_names_of_shapes_a_bundle_never_writes_are_refused(name, bundle_files, tmp_path, capsys):
    zpath = _zip(tmp_path / "b.zip", {**bundle_files, name: b"a\n1\n"})
    rc, text, _, _ = _rerun(zpath, tmp_path / "out", capsys)
    assert rc == 2
    line = _one_line_error(text)
    assert "not a bundle entry" in line and repr(name) in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_symlink_entry_is_refused(bundle_files, tmp_path, capsys):
    link = zipfile.ZipInfo("data/link.csv")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    zpath = _zip(tmp_path / "b.zip", bundle_files, [(link, b"/etc/passwd")])
    rc, text, _, _ = _rerun(zpath, tmp_path / "out", capsys)
    assert rc == 2 and "symbolic link" in _one_line_error(text) and "data/link.csv" in text


def test_a_duplicated_entry_is_refused(bundle_files, tmp_path, capsys):
    table = next(n for n in bundle_files if n.startswith("data/") and n.endswith(".csv"))
    dup = zipfile.ZipInfo(table)
    with pytest.warns(UserWarning, match="Duplicate name"):
        zpath = _zip(tmp_path / "b.zip", bundle_files, [(dup, b"x\n1\n")])
    rc, text, _, _ = _rerun(zpath, tmp_path / "out", capsys)
    assert rc == 2 and "twice" in _one_line_error(text) and table in text


def test_compare_only_reads_inside_out_even_when_out_holds_a_symlink(bundle_files, secret, tmp_path, capsys):
    """A genuine table name, but --out's data/ replaced by a link elsewhere between runs: compared files must resolve
    inside --out (prepare_out refuses to mix; with the link planted after the run the comparison refuses)."""
    from logitscope.commands import rerun

    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    elsewhere = secret.parent
    name = "data/secret.csv"
    (out / "data").rmdir()
    (out / "data").symlink_to(elsewhere, target_is_directory=True)
    rows = rerun.compare_tables({name: b"secret\nguess\n"}, out)
    assert rows == [(name, "outside the output folder", False)]


# ------------------------------------------------------------------------------------------------------- sizes
def _bomb(path: Path, files: dict[str, bytes], name: str, mib: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for n, data in files.items():
            zf.writestr(n, data)
        with zf.open(name, "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(mib):
                f.write(block)
    return path


@pytest.mark.parametrize("name", ["data/bomb.csv", "prompts/prompts-1.jsonl", "metadata.json"])
def test_a_zip_bomb_is_refused_from_the_directory_before_reading(name, bundle_files, tmp_path, capsys):
    files = {k: v for k, v in bundle_files.items() if k != name}
    zpath = _bomb(tmp_path / "bomb.zip", files, name, 300)
    assert zpath.stat().st_size < 2 << 20  # about 300 kB on disk, 300 MiB inflated
    rc, text, _, peak = _rerun(zpath, tmp_path / "out", capsys)
    assert rc == 2
    line = _one_line_error(text)
    assert name in line and ("MiB" in line or "compression" in line)
    assert peak < 32 << 20, f"rerun allocated {peak / 2**20:.0f} MiB before refusing"


def test_many_entries_are_refused(bundle_files, tmp_path, capsys):
    many = {f"figures/f{i}.html": b"" for i in range(5000)}
    zpath = _zip(tmp_path / "many.zip", {**bundle_files, **many})
    rc, text, _, _ = _rerun(zpath, tmp_path / "out", capsys)
    assert rc == 2 and "entries" in _one_line_error(text)


def test_an_entry_larger_than_its_directory_says_is_refused(bundle_files, tmp_path, capsys):
    """A lying directory: the central directory declares 40 bytes for a table that inflates to 8 MiB."""
    name = next(n for n in bundle_files if n.startswith("data/") and n.endswith(".csv"))
    zpath = _zip(tmp_path / "liar.zip", {**bundle_files, name: b"a\n" + b"1\n" * (4 << 20)})
    raw = bytearray(zpath.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        info = zf.getinfo(name)
    offset = raw.find(b"PK\x01\x02")
    while offset != -1:  # patch the central directory record of `name`: uncompressed size at +24
        n_len = int.from_bytes(raw[offset + 28:offset + 30], "little")
        if raw[offset + 46:offset + 46 + n_len].decode() == name:
            raw[offset + 24:offset + 28] = (40).to_bytes(4, "little")
            break
        offset = raw.find(b"PK\x01\x02", offset + 4)
    assert info.file_size > 40
    zpath.write_bytes(bytes(raw))
    rc, text, _, peak = _rerun(zpath, tmp_path / "out", capsys)
    assert rc == 2 and name in _one_line_error(text)
    assert peak < 32 << 20


# ---------------------------------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("flag", ["--trust-remote-code", "--allow-pickle", "--model-b", "--out", "--adapter",
                                  "--prompts=x --allow-pickle", "--ood-prompts"])
def test_input_flags_outside_the_methods_own_are_refused_before_anything_runs(flag, bundle_files, tmp_path, capsys,
                                                                            monkeypatch):
    import analysis.core.loading as loading

    loads: list = []
    monkeypatch.setattr(loading, "load_model", lambda spec: loads.append(spec) or (_ for _ in ()).throw(
        AssertionError("a model was loaded")))
    meta = _meta(bundle_files)
    meta["inputs"][flag] = meta["inputs"]["--prompts"]
    zpath = _zip(tmp_path / "b.zip", _with_meta(bundle_files, meta))
    rc, text, _, _ = _rerun(zpath, tmp_path / "out", capsys)
    assert rc == 2 and not loads
    line = _one_line_error(text)
    assert repr(flag) in line and "--prompts" in line  # names the stray flag and the allowed ones


def _lens_specs(monkeypatch) -> list:
    """Record the specs the rerun loads (and load them for real)."""
    import analysis.core.loading as loading

    specs: list = []
    real = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda spec: specs.append(spec) or real(spec))
    return specs


def test_settings_that_are_not_the_methods_cannot_switch_options_on(bundle_files, tmp_path, capsys, monkeypatch):
    specs = _lens_specs(monkeypatch)
    meta = _meta(bundle_files)
    meta["settings"].update(trust_remote_code=True, allow_pickle=True, out="/tmp/elsewhere", model_b="x")
    zpath = _zip(tmp_path / "b.zip", _with_meta(bundle_files, meta))
    rc, text, _, _ = _rerun(zpath, tmp_path / "out", capsys)
    assert rc == 0, text
    assert specs and all(not s.trust_remote_code and not s.allow_pickle for s in specs)
    assert not Path("/tmp/elsewhere").exists()


@pytest.mark.parametrize("card", [{"source": "--trust-remote-code"}, {"source": ""}, {"source": 7},
                                  {"source": BASE, "adapter": ["a"]}, {"source": BASE, "revision": {"x": 1}},
                                  {"source": BASE, "dtype": "float64; rm -rf"}, "gpt2"])
def test_model_cards_without_the_expected_fields_are_refused(card, bundle_files, tmp_path, capsys, monkeypatch):
    specs = _lens_specs(monkeypatch)
    meta = _meta(bundle_files)
    meta["models"]["A"] = card if not isinstance(card, dict) else {**meta["models"]["A"], **card}
    zpath = _zip(tmp_path / "b.zip", _with_meta(bundle_files, meta))
    rc, text, _, _ = _rerun(zpath, tmp_path / "out", capsys)
    assert rc == 2 and not specs
    assert "model card" in _one_line_error(text)


@pytest.mark.parametrize("mutate", ["not json", "list", "no page", "page", "models", "extra model", "inputs list",
                                    "entry file", "entry name", "entry sha", "settings list", "setting value"])
def test_malformed_metadata_is_a_one_line_error(mutate, bundle_files, tmp_path, capsys, monkeypatch):
    specs = _lens_specs(monkeypatch)
    meta = _meta(bundle_files)
    entry = meta["inputs"]["--prompts"][0]
    if mutate == "not json":
        files = {**bundle_files, "metadata.json": b"{not json"}
    else:
        if mutate == "list":
            meta = [meta]
        elif mutate == "no page":
            del meta["page"]
        elif mutate == "page":
            meta["page"] = {"lens": 1}
        elif mutate == "models":
            meta["models"] = "A"
        elif mutate == "extra model":
            meta["models"]["C"] = meta["models"]["A"]
        elif mutate == "inputs list":
            meta["inputs"] = ["--prompts"]
        elif mutate == "entry file":
            entry["file"] = "data/" + entry["file"].split("/")[-1]
        elif mutate == "entry name":
            entry["name"] = None
        elif mutate == "entry sha":
            entry["sha256"] = "../../etc"
        elif mutate == "settings list":
            meta["settings"] = [1, 2]
        elif mutate == "setting value":
            meta["settings"]["top_k"] = {"$gt": 1}
        files = _with_meta(bundle_files, meta)
    zpath = _zip(tmp_path / "b.zip", files)
    rc, text, _, _ = _rerun(zpath, tmp_path / "out", capsys)
    assert rc == 2 and not specs, text
    line = _one_line_error(text)
    assert "metadata" in line or "model card" in line or "setting" in line.lower(), line
    assert "Traceback" not in text


def test_the_genuine_bundle_still_reruns(bundle_files, tmp_path, capsys):
    zpath = _zip(tmp_path / "b.zip", bundle_files)
    rc, text, opened, _ = _rerun(zpath, tmp_path / "out", capsys)
    assert rc == 0, text
    n = sum(1 for n in bundle_files if n.startswith("data/") and n.endswith(".csv"))
    assert f"{n} of {n} tables match" in text


def test_every_methods_declared_inputs_are_flags_of_its_command():
    """The flags rerun accepts in metadata "inputs" are the command's own prompt-set flags, never a model option."""
    from components.methods import METHODS
    from logitscope.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for m in METHODS.values():
        options = {s for a in sub.choices[m.command]._actions for s in a.option_strings}
        assert set(m.inputs) <= options, (m.command, set(m.inputs) - options)
        assert not set(m.inputs) & {"--model", "--model-b", "--adapter", "--adapter-b", "--out", "--allow-pickle",
                                    "--trust-remote-code", "--ray", "--formats", "--revision", "--revision-b"}
