"""Packaging: the repository root is the `avdet` package; every subpackage under it is found here, so a new one can
never be left out of the wheel or the Docker image (tests/test_package.py checks the wheel)."""

from setuptools import find_packages, setup

SUBPACKAGES = find_packages(".", include=["pipeline*", "extractors*", "models*", "configs*"])

setup(
    package_dir={"avdet": "."},
    packages=["avdet", *(f"avdet.{name}" for name in SUBPACKAGES)],
)
