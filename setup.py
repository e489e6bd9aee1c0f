"""Computes the package list so a new subpackage under a layer folder can never be forgotten.

The metadata lives in pyproject.toml; setuptools reads both.
"""

from setuptools import find_packages, setup

LAYERS = ("domain", "adapters", "projections")

packages = ["idstitch", *(f"idstitch.{p}" for p in find_packages("idstitch"))]
for layer in LAYERS:
    packages.append(f"idstitch.{layer}")
    packages.extend(f"idstitch.{layer}.{p}" for p in find_packages(layer))

setup(packages=packages)
