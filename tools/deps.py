"""Prints the requirements declared in pyproject.toml (build-system, runtime and the given extras), one per
line, so the Makefile installs exactly what the project declares. Usage: python tools/deps.py [extra ...]"""

import sys
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
reqs = list(project["build-system"]["requires"]) + list(project["project"]["dependencies"])
for extra in sys.argv[1:]:
    reqs += project["project"]["optional-dependencies"][extra]
print("\n".join(dict.fromkeys(reqs)))
