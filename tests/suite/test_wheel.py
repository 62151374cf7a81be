"""A vendor's view: the built wheel, installed into a fresh venv outside the checkout, runs the suite from
a directory of the vendor's own (CLI, pytest plugin, a C device built against the installed header),
with the checkout nowhere on sys.path."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What the wheel is built from: the packages and the files pyproject.toml reads.
SOURCES = ("refmodel", "conformance", "spec", "pyproject.toml", "README.md")
PACKAGE_DATA = ("conformance/adapters/c/virtio_conformance.h", "conformance/adapters/c/example_device.c",
                "conformance/adapters/c/example_driver.c", "conformance/adapters/qemu/known_deviations.txt",
                "spec/requirements.toml")

MYDEV = '''
"""A vendor's device: the reference device under another name."""
from refmodel.balloon.device import BalloonDevice


class MyDevice(BalloonDevice):
    pass


def make(mem):
    return MyDevice(mem)
'''


def _env():
    """The environment without anything that would put the checkout on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(cmd, cwd, timeout=300):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _vc(venv, cwd, *args):
    """The installed ``virtio-conformance``."""
    return _run([venv / "virtio-conformance", *args], cwd)


def _report(path):
    data = json.loads(path.read_text())
    return data, [r["id"] for r in data["requirements"] if r["verdict"] == "fail"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built from a copy of the working tree (a build in place would leave build/ behind)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(path, src / name)
    out = _run([sys.executable, "-m", "build", "--wheel", "--outdir", base / "dist", src], base, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (whl,) = (base / "dist").glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A plain venv with the wheel (its dependencies from the index) and pytest, for the plugin."""
    env_dir = tmp_path_factory.mktemp("venv") / "v"
    out = _run([sys.executable, "-m", "venv", env_dir], env_dir.parent)
    assert out.returncode == 0, out.stderr
    pip = [env_dir / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    out = _run([*pip, wheel, "pytest"], env_dir.parent, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return env_dir / "bin"


@pytest.fixture
def vendor_dir(tmp_path):
    """The vendor's own directory, holding mydev.py, outside the checkout."""
    assert ROOT not in tmp_path.parents
    (tmp_path / "mydev.py").write_text(textwrap.dedent(MYDEV))
    return tmp_path


def test_the_wheel_holds_the_header_examples_and_known_deviations(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= names, sorted(set(PACKAGE_DATA) - names)
    assert not any(n.startswith("tests/") for n in names)


def test_the_installed_suite_is_not_the_checkout(venv, vendor_dir):
    code = "import conformance, sys; print(conformance.__file__); print(sys.path)"
    out = _run([venv / "python", "-c", code], vendor_dir)
    assert out.returncode == 0, out.stderr
    where, path = out.stdout.splitlines()
    assert Path(where).is_relative_to(venv.parent) and str(ROOT) not in path


def test_the_cli_runs_a_python_device_from_the_current_directory(venv, vendor_dir):
    out = _vc(venv, vendor_dir, "run", "--dut", "mydev:make", "--role", "device", "--profile", "dev",
              "--known-deviations", "qemu", "--report", "r.json", "--quiet")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report, _ = _report(vendor_dir / "r.json")
    assert (report["implementation"], report["role"], report["profile"]) == ("mydev:make", "device", "dev")
    assert report["summary"]["fail"] == 0 and report["summary"]["pass"] > 30 and not report["errors"]
    assert "BAL-FPH-DEV-2" in {r["id"] for r in report["requirements"] if r["verdict"] == "pass"}


def test_the_pytest_plugin_runs_a_python_device_from_the_current_directory(venv, vendor_dir):
    out = _run([venv / "pytest", "--virtio-dut", "mydev:make", "--virtio-role", "device", "--virtio-profile",
                "dev", "-q", "-p", "no:cacheprovider"], vendor_dir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout and "failed" not in out.stdout


def test_a_c_device_builds_against_the_installed_header_and_runs(venv, vendor_dir):
    cc = shutil.which("cc")
    assert cc, "tools/test installs a C compiler"
    inc = _vc(venv, vendor_dir, "c-header", "--include-dir")
    header = _vc(venv, vendor_dir, "c-header")
    example = _vc(venv, vendor_dir, "c-example", "device")
    assert inc.returncode == header.returncode == example.returncode == 0, inc.stderr + header.stderr
    inc_dir, header_path, example_path = (Path(o.stdout.strip()) for o in (inc, header, example))
    assert inc_dir.is_relative_to(venv.parent) and header_path == inc_dir / "virtio_conformance.h"
    shutil.copy(example_path, vendor_dir / "mydev.c")  # alone: the header comes from -I
    build = _run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", f"-I{inc_dir}", "-o", "libexample.so",
                  "mydev.c"], vendor_dir)
    assert build.returncode == 0, build.stderr
    out = _vc(venv, vendor_dir, "run", "--dut", "c:./libexample.so", "--role", "device", "--profile", "dev",
              "--report", "c.json", "--quiet")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report, _ = _report(vendor_dir / "c.json")
    assert report["summary"]["fail"] == 0 and report["summary"]["pass"] > 20 and not report["errors"]
    # Its broken variant fails, naming the requirement (ci: derandomized, so it is found every time).
    build = _run([cc, "-shared", "-fPIC", "-O2", f"-I{inc_dir}", "-DBROKEN_REUSE_CMD_ID", "-o",
                  "libbroken.so", "mydev.c"], vendor_dir)
    assert build.returncode == 0, build.stderr
    out = _vc(venv, vendor_dir, "run", "--dut", "c:./libbroken.so", "--role", "device", "--profile", "ci",
              "--max-failures", "0", "--report", "b.json", "--quiet")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert _report(vendor_dir / "b.json")[1] == ["BAL-FPH-DEV-2"]


def test_c_example_output_copies_the_example_and_header(venv, vendor_dir):
    out = _vc(venv, vendor_dir, "c-example", "driver", "--output", "ex")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(Path("ex", "example_driver.c"))
    assert {p.name for p in (vendor_dir / "ex").iterdir()} == {"example_driver.c", "virtio_conformance.h"}
