"""`python -m logitscope rerun BUNDLE.zip` recomputes a page's bundle from the bundle alone (models, settings, the
exact prompts it holds) and reports whether every table matches; it fails when a prompt in the bundle is changed.

Pages run under AppTest on the demo zoo with the tiny built-in sets of tests/cli/test_cli.py; the page's bundle is
the zip build_bundle makes of what the page passes to export_bundle.
"""
from __future__ import annotations

import json
import zipfile

import pytest

from components import exporting
from components.methods import METHODS
from logitscope.cli import main
from tests.cli.test_cli import _ok, _page, tiny_prompts  # noqa: F401  (fixture)

COMPARE = {"shift": True}  # methods whose page needs checkpoint B


def _bundle(got: dict, path) -> None:
    meta = dict(got["metadata"])
    path.write_bytes(exporting.build_bundle(got["figures"], got["tables"], meta, ("html",)))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_rerun_of_a_page_bundle_reproduces_every_table(name, tiny_prompts, captured, tmp_path, capsys):  # noqa: F811
    m = METHODS[name]
    at = _page(m.page_file.split("/")[-1][:-3], compare=COMPARE.get(name, False))
    at.button(key=f"{m.module.KEY}_run").click().run()
    _ok(at)
    zpath = tmp_path / "bundle.zip"
    _bundle(captured, zpath)
    with zipfile.ZipFile(zpath) as zf:
        meta = json.loads(zf.read("metadata.json"))
        assert meta["inputs"] and all(e["file"] in zf.namelist() for v in meta["inputs"].values() for e in v)
        assert all(card.get("weights_sha256") for card in meta["models"].values())
    capsys.readouterr()
    assert main(["rerun", str(zpath), "--out", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    n_tables = len(captured["tables"])
    assert f"{n_tables} of {n_tables} tables match" in out and "same weights" in out


def test_rerun_fails_when_a_prompt_in_the_bundle_is_changed(tiny_prompts, captured, tmp_path, capsys):  # noqa: F811
    at = _page("logit_lens", compare=False)
    at.radio(key="lens__prompts_source").set_value("Built-in").run()
    at.selectbox(key="lens__prompts_builtin").set_value("facts").run()
    at.button(key="lens_run").click().run()
    _ok(at)
    zpath = tmp_path / "bundle.zip"
    _bundle(captured, zpath)
    def altered(path, fix_hash: bool):
        """The bundle with its first prompt changed; with fix_hash its metadata records the new set's hash."""
        from analysis.prompts.store import from_jsonl
        with zipfile.ZipFile(zpath) as src, zipfile.ZipFile(path, "w") as dst:
            meta = json.loads(src.read("metadata.json"))
            for item in src.namelist():
                data = src.read(item)
                if item.startswith("prompts/"):
                    rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
                    rows[0]["prompt"] = rows[0]["prompt"].replace(rows[0]["prompt"].split()[0], "Fuvaki", 1)
                    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
                    if fix_hash:
                        meta["inputs"]["--prompts"][0]["sha256"] = from_jsonl("x", data).sha256
                if item != "metadata.json":
                    dst.writestr(item, data)
            dst.writestr("metadata.json", json.dumps(meta))
        return path

    capsys.readouterr()
    # a prompt changed behind the recorded hash: refused before anything runs
    assert main(["rerun", str(altered(tmp_path / "tampered.zip", False)), "--out", str(tmp_path / "t")]) == 2
    assert "has changed" in capsys.readouterr().err
    # a different prompt recorded as such: it runs, and the tables no longer match the bundle's
    assert main(["rerun", str(altered(tmp_path / "changed.zip", True)), "--out", str(tmp_path / "again")]) == 1
    out = capsys.readouterr().out
    assert "differs" in out and "tables match" in out


def test_rerun_refuses_what_is_not_a_bundle(tmp_path, capsys):
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"not a zip")
    assert main(["rerun", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not a bundle zip" in capsys.readouterr().err
    empty = tmp_path / "e.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"page": "Logit lens", "models": {}, "settings": {}}))
    assert main(["rerun", str(empty), "--out", str(tmp_path / "o2")]) == 2
    assert "holds no prompts" in capsys.readouterr().err


def test_a_cli_bundle_zipped_reruns_too(tiny_prompts, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "cli"
    assert main(["lens", "--model", "gpt2-world-base", "--prompts", "facts", "--top-k", "3", "--out", str(out),
                 "--formats", "html", "--quiet"]) == 0
    zpath = tmp_path / "cli.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in out.rglob("*"):
            if p.is_file():
                zf.write(p, str(p.relative_to(out)))
    capsys.readouterr()
    assert main(["rerun", str(zpath), "--out", str(tmp_path / "again")]) == 0
    assert "tables match" in capsys.readouterr().out
