"""Installed as ``segformer3d_rt.bundled_weights`` (pyproject.toml maps this folder into the package): the
bundled weights ship as package data and are found through importlib.resources (segformer3d_rt.runtime.bundled).
A regular package, not a namespace one: setuptools' editable finder cannot map a nested namespace package
(pypa/setuptools#4943)."""
