"""The two set-ups (pip's pyproject.toml and conda's environment.yml) must not drift apart."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    req = req.split(";")[0].strip()  # drop environment markers
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_norm(r) for r in extra}
    yml = (ROOT / "environment.yml").read_text()
    pip_lines = re.findall(r"^\s{6}- (.+)$", yml, flags=re.M)
    listed = {_norm(r) for r in pip_lines if not r.startswith("-e")}
    assert listed == wanted, (
        f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"
    )


def test_torch_and_triton_pinned_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps
    assert any(d.startswith("triton==3.7.1") for d in deps)


def test_every_package_folder_is_shipped():
    """Every folder of hstu_tutorial/ with an __init__.py (perf/, ops/triton/...) is in the package build."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    patterns = include["include"]
    folders = [
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hstu_tutorial").rglob("__init__.py")
    ]
    assert "hstu_tutorial.perf" in folders
    missed = [f for f in folders if not any(re.fullmatch(pat.replace("*", ".*"), f) for pat in patterns)]
    assert not missed, f"package folders the build would leave out: {missed}; add them to {patterns}"


def test_notebook_measuring_code_lives_in_the_package():
    """What notebooks 07/08 import comes from hstu_tutorial.perf, which imports nothing from benchmarks/."""
    import hstu_tutorial.perf as perf

    for name in (
        "lever_config",
        "lever_dataset",
        "measure_trainer",
        "profile_loading",
        "run_levers",
        "run_scaling",
        "CPU_ROWS",
        "bench_levers",
        "bench_scaling",
    ):
        assert hasattr(perf, name), f"hstu_tutorial.perf lacks {name}"
    for path in (ROOT / "hstu_tutorial" / "perf").glob("*.py"):
        assert "benchmarks" not in re.findall(r"^\s*(?:from|import)\s+(\w+)", path.read_text(), flags=re.M)
