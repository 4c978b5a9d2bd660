"""Print ``name==lower`` for every runtime requirement of pyproject.toml: the constraints that install the oldest
versions the project claims to support (``make test-lowest``). A requirement without one ``>=`` bound, or with
an exact pin, is an error. Standard library only: it runs before anything is installed."""
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$")


def lower_bounds(pyproject: Path = PYPROJECT) -> dict[str, str]:
    bounds = {}
    for line in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        name, spec = REQUIREMENT.match(line).groups()
        lows = re.findall(r">=\s*([0-9][0-9A-Za-z.]*)", spec)
        if len(lows) != 1 or "==" in spec:
            raise SystemExit(f"error: {name} in pyproject.toml needs one lower bound (>=) and no pin; has {spec!r}")
        bounds[name] = lows[0]
    return bounds


if __name__ == "__main__":
    sys.stdout.write("".join(f"{name}=={version}\n" for name, version in lower_bounds().items()))
