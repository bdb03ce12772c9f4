"""Packaging: the repository root is the `avdet` package; every subpackage under it is found here, so a new one can
never be left out of the wheel or the Docker image (tests/test_package.py checks the wheel). This file lives in
the package's folder but is not part of the package: it is left out of the wheel."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

SUBPACKAGES = find_packages(".", include=["pipeline*", "extractors*", "models*", "configs*"])
NOT_MODULES = {("avdet", "setup")}  # (package, module) pairs in the root that are not avdet code


class BuildPy(build_py):
    """build_py without the root's non-package modules (setup.py would otherwise be installed as avdet.setup), into
    an emptied build folder: pip builds in the checkout, and a module deleted or moved since the last build would
    otherwise live on in build/lib and in every later wheel."""

    def run(self) -> None:
        if Path(self.build_lib).is_dir():
            shutil.rmtree(self.build_lib)
        super().run()

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) not in NOT_MODULES]


setup(
    package_dir={"avdet": "."},
    packages=["avdet", *(f"avdet.{name}" for name in SUBPACKAGES)],
    cmdclass={"build_py": BuildPy},
)
