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
