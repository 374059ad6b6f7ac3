"""Installed as ``segformer3d_rt.presets`` (pyproject.toml maps this folder into the package): the ``run
--pipeline`` presets ship as package data and are found through importlib.resources
(segformer3d_rt.runtime.bundled). A regular package, not a namespace one: setuptools' editable finder cannot
map a nested namespace package (pypa/setuptools#4943)."""
