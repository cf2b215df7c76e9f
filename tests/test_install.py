"""The library as pip installs it (not editable), as on Colab: the wheel must carry every
registered pretrained model, and a fresh venv that has only the wheel must load them.

The build and the venv come from scripts/wheel_venv.py (sdist, wheel from the sdist,
`python -m venv`, `pip install --no-deps`, a .pth that appends this interpreter's
site-packages so the dependencies need no download). About 10 s, offline.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import diffusion_core
from diffusion_core.pretrained import CLASSIFIER_FILE, MNIST_CLASSIFIER, PACKAGE_DIR, REGISTRY, snapshot_dir

REPO = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = Path(diffusion_core.__file__).resolve().parent
SHIPPED = ("ema.safetensors", "state.json")


def _wheel_venv_module():
    spec = importlib.util.spec_from_file_location("wheel_venv", REPO / "scripts" / "wheel_venv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _missing_build_tools() -> str | None:
    for module in ("setuptools", "pip", "venv"):
        if importlib.util.find_spec(module) is None:
            return f"cannot build and install a wheel offline: {module} is not importable in {sys.executable}"
    return None


pytestmark = pytest.mark.skipif(_missing_build_tools() is not None, reason=str(_missing_build_tools()))


def _shipped_paths() -> list[str]:
    """Archive paths of every registered model's files (its snapshots' and training log
    too, and the MNIST classifier's), relative to the package's parent."""
    weights = PACKAGE_DIR.resolve().relative_to(PACKAGE_ROOT.parent).as_posix()
    paths = [f"{weights}/{name}/{file}" for name in REGISTRY for file in SHIPPED]
    for name, spec in REGISTRY.items():
        for step in spec.snapshots:
            snap = snapshot_dir(name, step).relative_to(PACKAGE_DIR).as_posix()
            paths += [f"{weights}/{snap}/model.safetensors", f"{weights}/{snap}/state.json"]
    paths += [f"{weights}/mnist_simple/metrics.jsonl",
              f"{weights}/{MNIST_CLASSIFIER}/{CLASSIFIER_FILE}"]
    return paths


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(work dir, wheel path, fresh venv python)."""
    helper = _wheel_venv_module()
    work = tmp_path_factory.mktemp("install")
    try:
        wheel = helper.build_wheel(work)
        python = helper.make_venv(work / "venv", wheel)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"building or installing the wheel failed: {e}\n{e.output}")
    return work, wheel, python


def test_registry_files_exist_in_the_source_tree():
    assert REGISTRY, "no registered pretrained model"
    for rel in _shipped_paths():
        assert (PACKAGE_ROOT.parent / rel).is_file(), rel


def test_wheel_and_sdist_carry_every_registered_model(built):
    work, wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    missing = [p for p in _shipped_paths() if p not in infos]
    assert not missing, f"{wheel.name} lacks {missing}; has {sorted(infos)}"
    for rel in _shipped_paths():  # byte for byte what the tree holds
        assert infos[rel].file_size == (PACKAGE_ROOT.parent / rel).stat().st_size, rel
    assert not [n for n in infos if "__pycache__" in n or n.endswith(".pyc")]
    # plausible size: the weights barely compress, and nothing big besides them
    weights = sum(infos[p].file_size for p in _shipped_paths())
    size = wheel.stat().st_size
    assert 0.8 * weights < size < weights + 2_000_000, (size, weights)

    sdist = next((work / "dist").glob("*.tar.gz"))
    with tarfile.open(sdist) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert not [p for p in _shipped_paths() if p not in names], f"{sdist.name} lacks weights"


CHECK_INSTALLED = textwrap.dedent("""
    import hashlib, importlib.metadata, json, sys, warnings
    from pathlib import Path

    venv, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()

    def inside(path, root):
        return Path(path).resolve().is_relative_to(root)

    import diffusion_core
    from diffusion_core.pretrained import PACKAGE_DIR, REGISTRY, load_pretrained

    assert inside(diffusion_core.__file__, venv), diffusion_core.__file__
    assert inside(PACKAGE_DIR, venv), PACKAGE_DIR
    # the editable install of the build interpreter stays invisible: its finder (loaded by a
    # .pth in the build site-packages) never ran, and no sys.path entry but the fresh
    # site-packages holds a diffusion_core (the repo is not on sys.path)
    assert not [m for m in sys.modules if m.startswith("__editable__")], sys.modules.keys()
    assert not [f for f in sys.meta_path if "editable" in type(f).__module__], sys.meta_path
    holders = [p for p in sys.path if (Path(p or ".") / "diffusion_core").exists()]
    assert len(holders) == 1 and inside(holders[0], venv), holders
    assert str(repo) not in [str(Path(p or ".").resolve()) for p in sys.path], sys.path
    # ... while the dependencies come from the build interpreter's site-packages
    import torch  # noqa: F401
    dist = importlib.metadata.distribution("diffusion_core")
    assert inside(dist.locate_file(""), venv), dist.locate_file("")
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    assert "archive_info" in direct_url and "dir_info" not in direct_url, direct_url

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # load_pretrained only warns on a sha256 mismatch
        for name, spec in REGISTRY.items():
            weights = PACKAGE_DIR / name / "ema.safetensors"
            assert hashlib.sha256(weights.read_bytes()).hexdigest() == spec.sha256, name
            model, diffusion, config = load_pretrained(name, retrain_if_missing=False, progress=False)
            assert config == spec.config and not model.training, name
            assert diffusion.model_var == spec.config.model_var, name
            print("loaded", name, flush=True)
    print("ok", diffusion_core.__file__)
""")


def test_fresh_venv_loads_every_registered_model_from_the_wheel(built):
    work, _, python = built
    run_dir = work / "run"
    run_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([str(python), "-c", CHECK_INSTALLED, str(python.parent.parent), str(REPO)],
                          cwd=run_dir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    for name in REGISTRY:
        assert f"loaded {name}" in done.stdout
    assert not (run_dir / "runs").exists()  # nothing was retrained
