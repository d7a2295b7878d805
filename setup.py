"""Only what pyproject.toml cannot say: conf/ stays at the top of the repository (the layout
users know) and ships inside the wheel as the package ganlab.conf, so `pip install .` and
`pip install git+<repo>` train from any directory (ganlab.config.CONF_DIR finds it)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["ganlab", "ganlab.*"]), "ganlab.conf"],
    package_dir={"ganlab.conf": "conf"},
    package_data={"ganlab.conf": ["*.yaml", "*/*.yaml"]},
)
