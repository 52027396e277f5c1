"""Logitscope as an installed package: the wheel that `pip wheel .` builds holds the packages, the app, its pages,
the demo models and the built-in prompt sets, declares exactly the pinned requirements, and works from a fresh
environment outside the clone (the `logitscope` command runs a method and starts the app)."""
from __future__ import annotations

import email
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.slow
SKIP = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", "build", "dist", "*.egg-info", "gallery*", ".*cache",
                              "artifacts", "test-artifacts")


def _pins(name: str) -> list[str]:
    lines = (REPO / name).read_text(encoding="utf-8").splitlines()
    return sorted(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the working tree (so the clone gains no build/ or egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=SKIP)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-q", "-w", str(tmp / "dist")],
                          cwd=src, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("logitscope-*.whl")
    return whl


def test_the_wheel_holds_the_packages_the_app_the_demo_models_and_the_prompt_sets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = next(n.split("/")[0] for n in names if n.endswith(".data/data/share/logitscope/app.py"))
    share = f"{data}/data/share/logitscope/"
    expected = {share + "app.py"} | {share + str(p.relative_to(REPO)) for p in REPO.glob("pages/*.py")}
    expected |= {share + str(p.relative_to(REPO)) for d in ("zoo", "data/prompts") for p in (REPO / d).rglob("*")
                 if p.is_file()}
    assert expected <= names, sorted(expected - names)[:10]
    code = {str(p.relative_to(REPO)) for pkg in ("analysis", "components", "logitscope")
            for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts}
    assert code <= names, sorted(code - names)[:10]
    assert not [n for n in names if n.startswith(("tests/", "bench/", "pages/"))]  # pages only as the app's data


def test_the_wheel_declares_the_pinned_requirements_and_the_console_script(wheel):
    z = zipfile.ZipFile(wheel)
    meta = email.message_from_string(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
                                     .decode())
    requires = meta.get_all("Requires-Dist")
    core = sorted(r for r in requires if "extra ==" not in r)
    assert core == _pins("requirements.txt")
    for extra, file in (("ray", "requirements-scale.txt"), ("dev", "requirements-dev.txt")):
        assert sorted(r.split(";")[0].strip() for r in requires if f'extra == "{extra}"' in r) == _pins(file), extra
    entry = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "logitscope = logitscope.cli:run" in entry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh venv holding only the wheel; the pinned dependencies come from this environment's site-packages (a
    path line, so no editable install of the clone there could leak in). Returns (its bin/, the environment)."""
    tmp = tmp_path_factory.mktemp("venv")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz_logitscope_deps.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--no-deps", "--no-index", "--disable-pip-version-check", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOGITSCOPE_ZOO", "LOGITSCOPE_PROMPTS", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return venv / "bin", env


def test_the_installed_command_runs_a_method_from_outside_the_clone(installed, tmp_path):
    bin_dir, env = installed
    where = subprocess.run([str(bin_dir / "python"), "-c", "import analysis, logitscope; from analysis.core.paths "
                            "import DATA_ROOT; print(analysis.__file__); print(DATA_ROOT)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    module, data_root = where.stdout.split()
    assert Path(module).is_relative_to(bin_dir.parent) and Path(data_root) == bin_dir.parent / "share" / "logitscope"
    helped = subprocess.run([str(bin_dir / "logitscope"), "--help"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "lens" in helped.stdout and "app" in helped.stdout, helped.stderr
    done = subprocess.run([str(bin_dir / "logitscope"), "lens", "--model", "gpt2-world-base", "--prompts", "facts",
                           "--out", "out", "--formats", "html", "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "metadata.json").is_file() and list((tmp_path / "out" / "data").glob("*.csv"))
    bad = subprocess.run([str(bin_dir / "logitscope"), "lens", "--model", "no-such-model", "--out", "bad"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no-such-model" in bad.stderr and "Traceback" not in bad.stderr


def test_logitscope_app_serves_the_installed_app(installed, tmp_path):
    bin_dir, env = installed
    port = _free_port()
    proc = subprocess.Popen([str(bin_dir / "logitscope"), "app", "--server.headless", "true", "--server.port",
                             str(port), "--browser.gatherUsageStats", "false"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, health = time.monotonic() + 90, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert health == "ok", proc.stdout.read() if proc.poll() is not None else "no answer in 90 s"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    app = bin_dir.parent / "share" / "logitscope" / "app.py"
    assert str(app) in subprocess.run([str(bin_dir / "logitscope"), "app", "--print-command"], cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=60).stdout, out
    # the installed app.py runs its home page (imports from site-packages, no sys.path edit, the zoo found)
    script = ("from streamlit.testing.v1 import AppTest; import sys\n"
              f"at = AppTest.from_file({str(app)!r}, default_timeout=120).run()\n"
              "assert not at.exception, [e.message for e in at.exception]\n"
              "print('\\n'.join(str(s.value) for s in at.sidebar.selectbox))\n")
    ran = subprocess.run([str(bin_dir / "python"), "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "gpt2-world-base" in ran.stdout, ran.stdout
