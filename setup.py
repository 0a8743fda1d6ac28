"""Which packages the wheel holds; everything else is in pyproject.toml.

* ``sim2real`` and the simulation package ``sim2real_envs`` (the repository folder of the same name;
  the env needs no data files of its own: meshes/URDFs come from ``pybullet_data``, photos from
  scikit-image, the default scene is embedded in ``sim2real_envs/config.py``).
* The repository's ``configs/`` folder (stage configs and ``scenes/``) becomes the package-data
  folder ``sim2real/_configs``, so ``sim2real generate`` / ``train`` find their defaults after a
  non-editable install; ``configs/`` stays the single copy in git (``sim2real.paths.bundled_config``).

Checked by ``tests/test_wheel_install.py`` (builds the wheel into a fresh venv and runs the CLI).
"""

from setuptools import find_packages, setup

CONFIG_PACKAGES = {"sim2real._configs": "configs", "sim2real._configs.scenes": "configs/scenes"}

setup(
    packages=find_packages(include=["sim2real", "sim2real.*", "sim2real_envs", "sim2real_envs.*"])
    + list(CONFIG_PACKAGES),
    package_dir=CONFIG_PACKAGES,
    package_data={"sim2real._configs": ["*.yaml"], "sim2real._configs.scenes": ["*.yaml"]},
    include_package_data=False,
)
