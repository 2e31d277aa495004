"""Packaging glue: copy the browser client and the default model into the package.

``static/`` and ``models/`` live at the repository root so they are easy to edit and to
train into; a wheel needs them inside ``mediaserver/`` so that ``pip install .`` (not
editable) gives a server that finds both. ``mediaserver.resources`` looks in the checkout
first and in the package second. Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# folder at the repository root -> glob patterns of what ships
SHIPPED = {
    "static": ["**/*.html", "**/*.js", "**/*.css", "**/*.svg", "**/*.png", "**/*.ico"],
    "models": ["**/*.pt", "**/*.json", "**/*.md", "**/*.yaml", "**/*.txt"],
}


class BuildWithResources(build_py):
    """build_py that also copies static/ and models/ into mediaserver/ of the build tree."""

    def run(self) -> None:
        super().run()
        for folder, patterns in SHIPPED.items():
            source = ROOT / folder
            target = Path(self.build_lib) / "mediaserver" / folder
            if not source.is_dir():
                continue
            for pattern in patterns:
                for path in source.glob(pattern):
                    if path.is_file() and not path.is_symlink():
                        dest = target / path.relative_to(source)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(path, dest)


setup(cmdclass={"build_py": BuildWithResources})
