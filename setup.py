"""Package discovery for the three installed packages; everything else is in pyproject.toml.

Every folder with an ``__init__.py`` under ``viz_server/``, ``plugins/`` (installed as ``viz_server_plugins``) and
``models/`` (installed as ``viz_server_models``) is a package of the distribution, so a new subpackage ships
without being listed anywhere (tests/test_packaging.py installs the wheel and runs it).
"""

from setuptools import find_packages, setup

PACKAGE_DIRS = {"viz_server": "viz_server", "viz_server_plugins": "plugins", "viz_server_models": "models"}


def discovered() -> list[str]:
    packages = []
    for package, folder in PACKAGE_DIRS.items():
        packages.append(package)
        packages.extend(f"{package}.{inner}" for inner in find_packages(folder))
    return packages


setup(packages=discovered(), package_dir=PACKAGE_DIRS)
