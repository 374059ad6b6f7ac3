"""The commands of `segformer3d-rt`: one module each (run, train, eval, bench, weights: info/convert, synth), each
with a ``run_*(cfg)`` entry taking one typed config. cli.py parses arguments into those configs and calls them."""
from ..runtime.sizes import parse_range, parse_size  # noqa: F401  (cli.py parses its arguments with them)
