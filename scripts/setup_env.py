"""Chooses the Python environment for this project, installs what it lacks, and prints
that environment's interpreter on stdout (progress and errors go to stderr).

Used by scripts/run.sh (before every command) and scripts/install.sh. Standard library
only: it is run by whatever `python3` is on PATH, before anything is installed.

Which environment (first rule that applies; `decide` below):

1. FLOWS_VENV=1 forces the project virtual environment `.venv`, FLOWS_VENV=0 the
   interpreter itself.
2. An active virtual environment or conda environment (the user's own, or `.venv`
   activated) is used as it is: its torch (e.g. a CUDA build) is kept.
3. An existing project `.venv` is used, so that a machine keeps the environment that
   an earlier command made.
4. An externally managed interpreter (PEP 668: Debian 12, Ubuntu 23.04 and later mark
   their system Python with an EXTERNALLY-MANAGED file, and pip refuses to install into
   it) gets the project `.venv`, created here.
5. Any other interpreter (pyenv, python.org, a Docker image's Python) is used directly.

The project `.venv` is isolated (no --system-site-packages): packages from the
distribution, built against its own numpy, would otherwise mix with newer pip-installed
ones (e.g. a Debian scipy against numpy 2 from pip fails on import). A user who wants a
distribution torch reused can make their own venv with --system-site-packages, activate
it, and rule 2 keeps that torch.

What is installed: torch only where none is importable or it is older than the project
needs, as torch==$TORCH_VERSION (default below; on the course machines that pin resolves
to a local CPU build, whereas an unpinned torch pulls gigabytes of CUDA packages), then
the project editable with its test tools (`pip install -e .[test]`). When everything is
already there (checked through package metadata, without importing torch) nothing runs:
the check takes a fraction of a second.

Options: --dry-run prints the decision as `key: value` lines and changes nothing.
Environment: FLOWS_VENV (see above), TORCH_VERSION.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(REPO, ".venv")
TORCH_VERSION = "2.13.0"
MIN_PYTHON = (3, 10)


class SetupError(Exception):
    """A problem the user has to act on; its message says what to do."""


def log(message):
    print("[setup] " + message, file=sys.stderr, flush=True)


def venv_python(venv):
    if os.name == "nt":
        return os.path.join(venv, "Scripts", "python.exe")
    return os.path.join(venv, "bin", "python")


def facts():
    """What the running interpreter is: the markers `decide` looks at."""
    base = getattr(sys, "base_prefix", sys.prefix)
    in_venv = sys.prefix != base or hasattr(sys, "real_prefix")
    stdlib = sysconfig.get_path("stdlib") or ""
    try:
        import importlib.util
        has_ensurepip = importlib.util.find_spec("ensurepip") is not None
    except Exception:
        has_ensurepip = False
    return {
        "executable": sys.executable,
        "version": list(sys.version_info[:3]),
        "prefix": sys.prefix,
        "in_venv": in_venv,
        "conda": os.path.isdir(os.path.join(sys.prefix, "conda-meta")),
        # PEP 668: the marker is ignored inside a virtual environment.
        "externally_managed": (not in_venv) and os.path.isfile(os.path.join(stdlib, "EXTERNALLY-MANAGED")),
        "is_project_venv": os.path.realpath(sys.prefix) == os.path.realpath(VENV),
        "has_ensurepip": has_ensurepip,
    }


def decide(f, venv_exists, force=""):
    """("current" | "venv", reason) for interpreter facts `f` (see the module docstring)."""
    if force not in ("", "auto", "0", "1"):
        raise SetupError("FLOWS_VENV must be 1 (use the project .venv), 0 (use python3 itself) "
                         "or unset, not %r" % force)
    if force == "1":
        return "venv", "FLOWS_VENV=1"
    if force == "0":
        return "current", "FLOWS_VENV=0"
    if f["in_venv"]:
        if f["is_project_venv"]:
            return "current", "the project virtual environment .venv is active"
        return "current", "an active virtual environment (%s)" % f["prefix"]
    if f["conda"]:
        return "current", "an active conda environment (%s)" % f["prefix"]
    if venv_exists:
        return "venv", "the project virtual environment .venv exists"
    if f["externally_managed"]:
        return "venv", "%s is externally managed (PEP 668)" % f["executable"]
    return "current", "%s is not externally managed" % f["executable"]


def check_version(version, executable):
    if tuple(version[:2]) < MIN_PYTHON:
        raise SetupError(
            "this project needs Python >= %d.%d; %s is %s. Install a newer Python and run "
            "again with it first on PATH (or FLOWS_PYTHON=/path/to/python3 for scripts/run.sh)."
            % (MIN_PYTHON + (executable, ".".join(map(str, version)))))


# ---------------------------------------------------------------- the probe (in the target)

def _requirement_class():
    try:
        from packaging.requirements import Requirement
    except Exception:
        try:
            from pip._vendor.packaging.requirements import Requirement
        except Exception:
            return None
    return Requirement


def _release(version):
    """(2, 13, 0) from "2.13.0+cpu"; None where there is no leading release number."""
    match = re.match(r"v?(\d+(?:\.\d+)*)", version.strip())
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def _compare(a, b):
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def requirement(text):
    """(name, applies, satisfied) where satisfied(version) -> bool, or None if unknown.

    Uses packaging where it is importable (it is, through pip, in every environment with
    pip), else a small reading of plain `name>=x.y,<z` requirements, enough for ours."""
    Requirement = _requirement_class()
    if Requirement is not None:
        req = Requirement(text)
        applies = req.marker is None or req.marker.evaluate()
        return req.name, applies, lambda v: req.specifier.contains(v, prereleases=True)
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)(;.*)?$", text)
    if match is None:
        return text, True, lambda v: None
    name, specs, marker = match.groups()
    if marker:
        return name, True, lambda v: None
    parsed = []
    for part in filter(None, (p.strip() for p in specs.split(","))):
        m = re.match(r"(~=|==|!=|<=|>=|<|>)\s*(\d+(?:\.\d+)*)$", part)
        if m is None:
            return name, True, lambda v: None
        parsed.append((m.group(1), _release(m.group(2))))
    ops = {">=": lambda c: c >= 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0,
           "<": lambda c: c < 0, "==": lambda c: c == 0, "!=": lambda c: c != 0}

    def satisfied(version):
        have = _release(version)
        if have is None:
            return None
        for op, want in parsed:
            if op == "~=":
                if _compare(have, want) < 0 or _compare(have[:len(want) - 1], want[:-1]) != 0:
                    return False
            elif not ops[op](_compare(have, want)):
                return False
        return True
    return name, True, satisfied


def _pyproject():
    try:
        import tomllib
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            return None
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)


def _dist(name):
    from importlib import metadata
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def _torch_version():
    dist = _dist("torch")
    if dist is not None:
        return dist.version
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return None
    try:  # a torch without metadata (built from source): slow, but rare
        import torch
        return torch.__version__
    except Exception:
        return None


def probe():
    """Run inside the target interpreter: what of the project's needs is missing."""
    out = facts()
    out["torch"] = _torch_version()
    out["torch_ok"] = False
    problems = []
    project = _pyproject()
    if project is None:
        problems.append("pyproject.toml cannot be read here (no tomllib)")
    else:
        meta = project.get("project", {})
        reqs = list(meta.get("dependencies", [])) + list(meta.get("optional-dependencies", {}).get("test", []))
        seen = set()
        for text in reqs:
            name, applies, satisfied = requirement(text)
            if not applies or (name.lower(), text) in seen:
                continue
            seen.add((name.lower(), text))
            dist = _dist(name)
            version = out["torch"] if name.lower() == "torch" else (dist.version if dist else None)
            ok = None if version is None else satisfied(version)
            if version is None:
                problems.append("%s is not installed" % name)
            elif ok is None:
                problems.append("cannot tell whether %s %s satisfies %s" % (name, version, text))
            elif not ok:
                problems.append("%s %s does not satisfy %s" % (name, version, text))
            elif name.lower() == "torch":
                out["torch_ok"] = True
        problems.extend(_project_problems(meta, project))
    out["problems"] = problems
    return out


def _project_problems(meta, project):
    """Is the project installed editable from this checkout, at this version?"""
    from urllib.parse import unquote, urlparse
    dist = _dist(meta.get("name", "flowmodels"))
    if dist is None:
        return ["the project is not installed"]
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        direct = {}
    url = urlparse(direct.get("url", ""))
    if not direct.get("dir_info", {}).get("editable") or url.scheme != "file":
        return ["the project is installed, but not editable from this checkout"]
    if os.path.realpath(unquote(url.path)) != os.path.realpath(REPO):
        return ["the project is installed from %s, not this checkout" % unquote(url.path)]
    if dist.version != meta.get("version"):
        return ["the installed project is version %s, pyproject.toml says %s" % (dist.version, meta.get("version"))]
    import importlib.util
    for package in project.get("tool", {}).get("setuptools", {}).get("packages", []):
        spec = importlib.util.find_spec(package)
        origin = os.path.realpath(spec.origin) if spec is not None and spec.origin else ""
        if not origin.startswith(os.path.realpath(REPO) + os.sep):
            return ["package %s does not come from this checkout" % package]
    return []


def run_probe(python, fresh=False):
    """probe() in `python`; in this process where that is this interpreter, unless `fresh`
    (after pip ran: this process's import machinery still holds the old install's paths)."""
    # Not realpath: a venv's python is a symlink to its base interpreter.
    if not fresh and os.path.abspath(python) == os.path.abspath(sys.executable):
        return probe()
    done = subprocess.run([python, os.path.abspath(__file__), "--probe"],
                          stdout=subprocess.PIPE, universal_newlines=True)
    if done.returncode != 0:
        raise SetupError("%s could not run the environment check (exit %d)" % (python, done.returncode))
    return json.loads(done.stdout)


# ---------------------------------------------------------------- acting

def venv_state():
    """"absent", "ok" or "broken" for the project .venv."""
    if not os.path.exists(VENV):
        return "absent"
    python = venv_python(VENV)
    try:
        ok = subprocess.run([python, "-c", "import sys"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        ok = False
    return "ok" if ok else "broken"


def create_venv(f, with_pip=True):
    state = venv_state()
    if state == "ok":
        return
    if state == "broken":
        if not os.path.isfile(os.path.join(VENV, "pyvenv.cfg")):
            raise SetupError("%s exists but is not a virtual environment: move it away" % VENV)
        log("the project virtual environment .venv does not run (its Python was removed or "
            "upgraded?): making it again")
        shutil.rmtree(VENV)
    if f["has_ensurepip"]:
        command = [f["executable"], "-m", "venv", VENV] + ([] if with_pip else ["--without-pip"])
    elif shutil.which("virtualenv"):
        command = [shutil.which("virtualenv"), "--python", f["executable"], VENV] + ([] if with_pip else ["--no-pip"])
    else:
        major, minor = f["version"][:2]
        raise SetupError(
            "%s cannot make a virtual environment: its venv module lacks ensurepip. On "
            "Debian/Ubuntu install it with `sudo apt-get install python3-venv` (or "
            "python%d.%d-venv), or install virtualenv, then run the command again."
            % (f["executable"], major, minor))
    log("creating the project virtual environment .venv with %s" % f["executable"])
    done = subprocess.run(command, stdout=sys.stderr)
    if done.returncode != 0 or venv_state() != "ok":
        if os.path.isfile(os.path.join(VENV, "pyvenv.cfg")):
            shutil.rmtree(VENV, ignore_errors=True)
        raise SetupError("could not create %s with %s (see above)" % (VENV, " ".join(command)))
    with open(os.path.join(VENV, ".gitignore"), "w") as fh:
        fh.write("# made by scripts/setup_env.py\n*\n")
    site_conf = os.path.join(f["prefix"], "pip.conf")  # pip's per-interpreter config, if any
    if os.path.isfile(site_conf):
        shutil.copy(site_conf, os.path.join(VENV, "pip.conf"))


def pip_install(python, args, what):
    log("installing %s into %s" % (what, python))
    done = subprocess.run([python, "-m", "pip", "install"] + args, stdout=sys.stderr)
    if done.returncode != 0:
        raise SetupError("pip could not install %s (see pip's message above)" % what)


def ensure_installed(python, torch_version):
    state = run_probe(python)
    check_version(state["version"], python)
    if not state["problems"]:
        return state
    log("to install: " + "; ".join(state["problems"]))
    if subprocess.run([python, "-m", "pip", "--version"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        raise SetupError("%s has no pip; install it (Debian/Ubuntu: sudo apt-get install "
                         "python3-pip) or use a virtual environment" % python)
    if not state["torch_ok"]:
        if state["torch"] is None:
            why = "no torch is installed"
        else:
            why = "torch %s is older than the project needs" % state["torch"]
        pip_install(python, ["torch==" + torch_version], "torch==%s (%s)" % (torch_version, why))
    else:
        log("keeping the installed torch %s" % state["torch"])
    pip_install(python, ["-e", REPO + "[test]"], "the project (editable) with its test tools")
    state = run_probe(python, fresh=True)
    if state["problems"]:
        raise SetupError("still missing after pip install: " + "; ".join(state["problems"]))
    return state


def main(argv):
    if "--probe" in argv:
        print(json.dumps(probe()))
        return 0
    dry_run = "--dry-run" in argv
    unknown = [a for a in argv if a not in ("--dry-run",)]
    if unknown:
        raise SetupError("unknown option(s) %s; usage: setup_env.py [--dry-run]" % " ".join(unknown))
    f = facts()
    check_version(f["version"], f["executable"])
    state = venv_state()
    mode, reason = decide(f, state != "absent", os.environ.get("FLOWS_VENV", ""))
    torch_version = os.environ.get("TORCH_VERSION") or TORCH_VERSION
    python = venv_python(VENV) if mode == "venv" else sys.executable
    if dry_run:
        print("environment: %s" % mode)
        print("reason: %s" % reason)
        print("python: %s" % python)
        if mode == "venv":
            print("venv: %s" % {"absent": "create", "ok": "reuse", "broken": "recreate"}[state])
        if mode == "venv" and state != "ok":
            print("torch: install torch==%s" % torch_version)
            print("project: install")
        else:
            s = run_probe(python)
            print("torch: %s" % ("keep %s" % s["torch"] if s["torch_ok"] else "install torch==%s" % torch_version))
            print("project: %s" % ("; ".join(s["problems"]) or "up to date"))
        return 0
    with one_at_a_time():
        if mode == "venv":
            create_venv(f)
        ensure_installed(python, torch_version)
    print(python)
    return 0


class one_at_a_time:
    """Two commands started together on a fresh machine must not both create .venv or run
    pip: the second waits (a lock on this file, so no lock file appears in the checkout)."""

    def __enter__(self):
        self.fh = open(os.path.abspath(__file__), "rb")
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            return self
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log("waiting for another setup of this checkout to finish")
            fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.fh.close()  # releases the lock


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SetupError as error:
        log("error: %s" % error)
        sys.exit(1)
