"""Write `constraints.txt`: the exact versions, installed here, of everything the package and its extras pull in.

The package's own requirements stay ranges (pyproject.toml); CI and the README install with `-c constraints.txt`, so
a fresh machine gets the versions the suite was run with. torch is left out: its build (CPU, a CUDA version) is the
user's choice and the README's commands name it. Run after `pip install -e ".[test,demo,docs]"` in a tested env:

    python scripts/write_constraints.py
"""

import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement


ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("test", "demo", "docs", "quantization")
LEFT_OUT = {"torch", "pixelgen-diffusers"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(name: str, extras: tuple[str, ...]) -> dict[str, str]:
    """Installed name -> version for `name[extras]` and everything it requires, markers evaluated here."""
    pinned, pending = {}, [(name, extras)]
    while pending:
        current, current_extras = pending.pop()
        try:
            dist = distribution(current)
        except PackageNotFoundError:
            continue  # an optional requirement whose marker matched but which is not installed: nothing to pin
        key = canonical(dist.metadata["Name"])
        first_visit = key not in pinned
        pinned[key] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in current_extras] or [{"extra": ""}]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
                continue
            if first_visit or requirement.extras:
                pending.append((requirement.name, tuple(requirement.extras)))
    return pinned


def main():
    pinned = closure("pixelgen-diffusers", EXTRAS)
    lines = [f"{name}=={version}" for name, version in sorted(pinned.items()) if name not in LEFT_OUT]
    header = "# Versions the test suite ran with; regenerate with `python scripts/write_constraints.py`.\n"
    (ROOT / "constraints.txt").write_text(header + "\n".join(lines) + "\n")
    print(f"constraints.txt: {len(lines)} packages")


if __name__ == "__main__":
    main()
