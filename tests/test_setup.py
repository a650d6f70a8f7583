"""The setup scripts (scripts/run.sh, scripts/install.sh, scripts/setup_env.py): which
environment they choose on each kind of machine, and what they would install. Cheap and
offline: the decision is checked on fake interpreter markers, and the scripts run with
--dry-run in a scratch copy of scripts/ (with throwaway venvs made without pip)."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "scripts" / "setup_env.py"


def load_setup():
    spec = importlib.util.spec_from_file_location("setup_env_under_test", SETUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


setup_env = load_setup()


def fake(**markers):
    facts = {"executable": "/usr/bin/python3", "version": [3, 11, 2], "prefix": "/usr",
             "in_venv": False, "conda": False, "externally_managed": False,
             "is_project_venv": False, "has_ensurepip": True}
    facts.update(markers)
    return facts


# ------------------------------------------------------------------ the decision itself

def test_an_externally_managed_system_python_gets_the_project_venv():
    # (b): Debian 12 / Ubuntu 23.04+, the only Python the system one
    mode, reason = setup_env.decide(fake(externally_managed=True), venv_exists=False)
    assert mode == "venv" and "externally managed" in reason


def test_an_unmanaged_python_is_used_directly():
    # (a): the course machines' pyenv Python, a python.org build, a container's Python
    mode, _ = setup_env.decide(fake(executable="/root/.pyenv/versions/3.11.7/bin/python3",
                                    prefix="/root/.pyenv/versions/3.11.7"), venv_exists=False)
    assert mode == "current"


@pytest.mark.parametrize("markers, word", [
    (dict(in_venv=True, prefix="/home/u/env"), "virtual environment"),
    (dict(conda=True, prefix="/opt/conda/envs/gpu"), "conda"),
    # inside a venv the PEP 668 marker of the base does not count
    (dict(in_venv=True, externally_managed=True, prefix="/home/u/env"), "virtual environment"),
])
def test_a_users_own_venv_or_conda_env_is_used_as_it_is(markers, word):
    # (c): even where a project .venv exists, the active environment wins
    for venv_exists in (False, True):
        mode, reason = setup_env.decide(fake(**markers), venv_exists=venv_exists)
        assert mode == "current" and word in reason


def test_an_existing_project_venv_is_reused_and_the_active_one_kept():
    assert setup_env.decide(fake(), venv_exists=True)[0] == "venv"
    mode, reason = setup_env.decide(fake(in_venv=True, is_project_venv=True), venv_exists=True)
    assert mode == "current" and ".venv" in reason


def test_flows_venv_forces_either_way_and_rejects_other_values():
    assert setup_env.decide(fake(), False, force="1")[0] == "venv"
    assert setup_env.decide(fake(externally_managed=True), False, force="0")[0] == "current"
    assert setup_env.decide(fake(externally_managed=True), False, force="auto")[0] == "venv"
    with pytest.raises(setup_env.SetupError, match="FLOWS_VENV must be"):
        setup_env.decide(fake(), False, force="yes")


def test_too_old_a_python_is_refused_with_a_clear_message():
    with pytest.raises(setup_env.SetupError, match=r"needs Python >= 3\.10.*3\.9\.2"):
        setup_env.check_version([3, 9, 2], "/usr/bin/python3")
    setup_env.check_version([3, 10, 0], "/usr/bin/python3")


def test_the_running_interpreter_is_described_truthfully():
    facts = setup_env.facts()
    assert facts["in_venv"] == (sys.prefix != sys.base_prefix)
    marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
    assert facts["externally_managed"] == (not facts["in_venv"] and os.path.isfile(marker))


# ------------------------------------------------------------------ the scripts, dry-run

@pytest.fixture
def scratch(tmp_path):
    """A checkout with only scripts/ and pyproject.toml: a project .venv made here is
    throwaway."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    return repo


def run_script(repo, args, python, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("FLOWS_VENV", "TORCH_VERSION")}
    environ.update(env, FLOWS_PYTHON=str(python))
    done = subprocess.run(["bash", str(repo / "scripts" / "install.sh")] + args, env=environ,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    return done


def dry_run(repo, python, **env):
    done = run_script(repo, ["--dry-run"], python, **env)
    assert done.returncode == 0, done.stderr
    return dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())


def user_venv(path, torch_version=None):
    """A venv made without pip (fast, offline), with a fake torch of the given version
    (metadata only: the setup never imports torch to learn its version)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    if torch_version is not None:
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
        info = Path(site) / ("torch-%s.dist-info" % torch_version)
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: %s\n" % torch_version)
    return python


@pytest.mark.skipif(os.name == "nt", reason="bash scripts")
def test_dry_run_in_a_users_venv_keeps_their_cuda_torch(scratch, tmp_path):
    python = user_venv(tmp_path / "userenv", torch_version="2.5.1+cu121")
    plan = dry_run(scratch, python)
    assert plan["environment"] == "current" and "virtual environment" in plan["reason"]
    assert plan["python"] == str(python)
    assert plan["torch"] == "keep 2.5.1+cu121"
    assert "not installed" in plan["project"]
    assert not (scratch / ".venv").exists()


@pytest.mark.skipif(os.name == "nt", reason="bash scripts")
def test_dry_run_replaces_only_a_torch_older_than_the_project_needs(scratch, tmp_path):
    plan = dry_run(scratch, user_venv(tmp_path / "old", torch_version="2.0.1"), TORCH_VERSION="2.13.0")
    assert plan["torch"] == "install torch==2.13.0"
    plan = dry_run(scratch, user_venv(tmp_path / "none"))
    assert plan["torch"].startswith("install torch==")


SYSTEM = Path("/usr/bin/python3")


def externally_managed(python):
    code = ("import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join("
            "sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))")
    return python.exists() and subprocess.run([str(python), "-c", code]).returncode == 0


@pytest.mark.skipif(not externally_managed(SYSTEM), reason="no externally managed /usr/bin/python3")
def test_dry_run_with_the_system_python_plans_the_project_venv(scratch):
    plan = dry_run(scratch, SYSTEM)
    assert plan["environment"] == "venv" and "externally managed" in plan["reason"]
    assert plan["python"] == str(scratch / ".venv" / "bin" / "python")
    assert plan["venv"] == "create" and plan["torch"].startswith("install torch==")
    assert not (scratch / ".venv").exists()  # a dry run changes nothing


@pytest.mark.skipif(os.name == "nt", reason="bash scripts")
def test_a_dot_venv_that_is_no_venv_is_left_alone_with_a_clear_error(scratch):
    (scratch / ".venv").mkdir()
    (scratch / ".venv" / "notes.txt").write_text("mine")
    done = run_script(scratch, [], sys.executable, FLOWS_VENV="1")
    assert done.returncode == 1
    assert "is not a virtual environment: move it away" in done.stderr
    assert (scratch / ".venv" / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(os.name == "nt", reason="bash scripts")
def test_a_missing_python_and_a_bad_option_give_clear_errors(scratch):
    done = run_script(scratch, [], "/nonexistent/python3")
    assert done.returncode == 127 and "not found" in done.stderr
    done = run_script(scratch, ["--frobnicate"], sys.executable)
    assert done.returncode == 1 and "unknown option" in done.stderr


# ------------------------------------------------------------------ README and CI agree

def quick_start_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^    (\S.*)$", section, flags=re.M)


def test_the_quick_start_is_two_commands_through_run_sh_and_ci_runs_the_test_one():
    commands = quick_start_commands()
    assert commands == ["bash scripts/run.sh examples/rings.py", "bash scripts/run.sh -m pytest -q"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash scripts/run\.sh -m pytest -q$", ci, flags=re.M)


def test_requirements_are_read_without_packaging_too(monkeypatch):
    # a venv without pip has no packaging module: a small reader takes over
    monkeypatch.setattr(setup_env, "_requirement_class", lambda: None)
    name, applies, ok = setup_env.requirement("torch>=2.1")
    assert (name, applies) == ("torch", True)
    assert ok("2.13.0+cpu") and ok("2.1") and ok("2.5.1+cu121") and not ok("2.0.1")
    _, _, ok = setup_env.requirement("numpy >=1.24, <3")
    assert ok("2.4.6") and not ok("3.0.0") and not ok("1.23.5")
    _, _, ok = setup_env.requirement("fpdf2~=2.7.6")
    assert ok("2.7.9") and not ok("2.8.0") and not ok("2.7.5")
    _, _, ok = setup_env.requirement("scipy==1.*")
    assert ok("1.17.1") is None  # unknown: the setup then lets pip decide


def test_the_project_venv_is_made_isolated_and_ignored_by_git(tmp_path, monkeypatch):
    # without pip here, for speed; the whole path, pip and install included, is CI's (b)
    facts = setup_env.facts()
    venv = tmp_path / "repo" / ".venv"
    monkeypatch.setattr(setup_env, "VENV", str(venv))
    assert setup_env.venv_state() == "absent"
    setup_env.create_venv(facts, with_pip=False)
    assert setup_env.venv_state() == "ok"
    assert (venv / ".gitignore").read_text().splitlines()[-1] == "*"
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    (venv / "bin" / "python").unlink()  # e.g. its Python was upgraded away
    assert setup_env.venv_state() == "broken"


def test_a_second_setup_waits_for_the_first(tmp_path):
    pytest.importorskip("fcntl")
    import fcntl
    with open(SETUP, "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # as a setup in progress holds it
        waiting = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.path.insert(0, %r); import setup_env\n"
             "with setup_env.one_at_a_time(): print('got it')" % str(SETUP.parent)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=1.0)
    out, err = waiting.communicate(timeout=30)
    assert out.strip() == "got it" and "waiting for another setup" in err
