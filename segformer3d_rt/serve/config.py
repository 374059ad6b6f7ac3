"""The typed settings of `serve`: :class:`ServeConfig` (the server) holding a template RunConfig (what every
stream shares: weights, backend, precision, input box, rendering, encoder) and the :class:`StreamSpec` of each
stream (name, source, view, loop, recording). A config file (``--config serve.toml``) gives the same settings::

    host = "127.0.0.1"
    port = 8080
    max_batch = 4
    allow_sources = ["url", "synthetic"]   # what POST /api/streams may add

    [run]                                  # RunConfig settings shared by every stream
    input_size = "256x512"

    [streams.front]
    source = "rtsp://cam1/stream"
    view = "side-by-side"
    record = "front.mp4"

    [streams.demo]
    source = "samples/synthetic-drive.mp4"
    loop = true

Flags and NAME=SOURCE arguments override the file.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..pipeline.config import RunConfig, shared_run_config
from ..pipeline.render import VIEWS
from ..pipeline.sources.dispatch import SOURCE_KINDS, source_kind
from ..runtime.settings import Spec, check_settings, quoted, setting

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RUN_SETTINGS", "TOKEN_ENV", "ServeConfig", "StreamSpec", "build_serve_config", "load_serve_file",
           "run_template"]

TOKEN_ENV = "SEGFORMER3D_RT_TOKEN"
MAX_STREAMS = 64  # streams are bounded like every other user-sized request (and the metrics' label set with them)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
# the settings of `run` that `serve` takes for every stream (flags of the same names)
RUN_SETTINGS = ("weights", "device", "precision", "backend", "input_size", "alpha", "legend", "hud", "colormap",
                "depth_range", "depth_smoothing", "codec", "crf", "preset", "timeout_s", "overwrite")


@dataclass
class StreamSpec:
    """One stream: ``name`` (letters, digits, ``_.-``; it labels metrics and URLs), ``source`` (anything `run`
    takes), ``view`` (switchable while it runs), ``loop`` (a file starts again at its end), ``record`` (an
    optional video written as `run -o` writes it: NAME.partial, then renamed)."""

    name: str = setting("", help="stream name")
    source: str = setting("", help="what `run` takes as its source")
    view: str = setting("overlay", choices=VIEWS, help="what is drawn")
    loop: bool = setting(False, help="a file starts again at its end")
    record: str | None = setting(None, help="a video file the stream is also written to")

    @classmethod
    def parse(cls, text: str) -> "StreamSpec":
        """``NAME=SOURCE`` from the command line."""
        name, sep, source = str(text).partition("=")
        if not sep or not source:
            raise UserError(f"stream '{text}': give it as NAME=SOURCE (e.g. front=rtsp://cam/stream)")
        return cls.from_mapping({"name": name, "source": source})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: Callable[[str], str] = quoted) -> "StreamSpec":
        spec = cls(**check_settings(cls, dict(values), where))
        spec.check()
        return spec

    def check(self) -> "StreamSpec":
        if not NAME_RE.fullmatch(self.name or ""):
            raise UserError(f"stream name '{self.name}': use 1-64 letters, digits, '_', '.' or '-', starting with "
                            "a letter or digit")
        if not self.source:
            raise UserError(f"stream '{self.name}': no source")
        return self

    @property
    def kind(self) -> str:
        return source_kind(self.source)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ServeConfig:
    """Every setting of `serve`. ``run`` is the template RunConfig every stream is built from (its source,
    view and outputs come from each StreamSpec)."""

    streams: list[str] = setting([], positional=True, metavar="NAME=SOURCE",
                                 help="named streams, each any source `run` takes")
    config: str | None = setting(None, metavar="TOML", help="a serve.toml with streams and settings; flags override it")
    host: str = setting("127.0.0.1", help="address to listen on; anything but loopback needs --token")
    port: int = setting(8080, low=0, high=65535, help="port (0: any free port, printed)")
    token: str | None = setting(None, default_text=f"${TOKEN_ENV}",
                                help="bearer token the API, viewer and metrics require")
    max_batch: int = setting(4, low=1, high=16, help="frames per batch across streams")
    max_wait_ms: float = setting(10.0, low=0.0, high=1000.0, metavar="MS",
                                 help="how long a batch waits for more frames after its first")
    allow_sources: tuple[str, ...] = setting(("url", "synthetic"), choices=SOURCE_KINDS, commas=True,
                                             metavar="KIND", help="source kinds a stream added over the API may "
                                                                  "use (camera, url, synthetic, file)")
    loop: bool = setting(False, help="streams given as NAME=FILE start again at their end")
    record_dir: str | None = setting(None, metavar="DIR", help="record every stream to DIR/NAME.mp4")
    stamp: bool = setting(False, help="paint each frame's capture time into its top edge, for the viewer's "
                                      "glass-to-glass latency (/view/NAME?g2g=1)")
    run: RunConfig = dataclasses.field(default_factory=RunConfig,
                                       metadata={"setting": Spec(cli=False, help="the settings every stream shares")})
    specs: list[StreamSpec] = setting([], cli=False, help="the streams, typed")

    def check(self, where: Callable[[str], str] = quoted) -> "ServeConfig":
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None
        if self.host not in LOOPBACK and not self.token:
            raise UserError(f"{where('host')} {self.host} is reachable from other machines: give {where('token')} "
                            f"(or set {TOKEN_ENV}) so that the API, viewer and metrics need it")
        seen: set[str] = set()
        for s in self.specs:
            if s.name in seen:
                raise UserError(f"stream name '{s.name}' given twice")
            seen.add(s.name)
        if len(self.specs) > MAX_STREAMS:
            raise UserError(f"{len(self.specs)} streams: at most {MAX_STREAMS}")
        return self

    def stream_run(self, spec: StreamSpec) -> RunConfig:
        """The RunConfig of one stream: the template with its source, view and recording (always live)."""
        outputs = [spec.record] if spec.record else []
        if not outputs and self.record_dir:
            outputs = [str(Path(self.record_dir) / f"{spec.name}.mp4")]
        cfg = replace(self.run, source=spec.source, view=spec.view, outputs=outputs, live=True, show=False,
                      progress="none", stats_json=None)
        return cfg.validate()


def run_template(values: Mapping[str, Any], where: Callable[[str], str] = quoted) -> RunConfig:
    """The shared RunConfig from ``values`` (a subset of RUN_SETTINGS), checked as `run` checks them."""
    return shared_run_config(dict(values), RUN_SETTINGS, "serve", where)


def load_serve_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], list[StreamSpec]]:
    """(ServeConfig settings, [run] settings, streams) of a serve.toml."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"serve config '{p}' not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read serve config '{p}': {e}") from None
    except OSError as e:
        raise UserError(f"cannot read serve config '{p}': {e.strerror or e}") from None
    where = lambda key: f"'{key}' in '{p}'"  # noqa: E731
    run = data.pop("run", {})
    streams = data.pop("streams", {})
    if not isinstance(run, dict) or not isinstance(streams, dict):
        raise UserError(f"'{p}': [run] and [streams.NAME] must be tables")
    allowed = {f.name for f in dataclasses.fields(ServeConfig)} - {"run", "specs", "streams", "config"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)} in '{p}'")
    specs = []
    for name, table in streams.items():
        if not isinstance(table, dict):
            raise UserError(f"'{p}': streams.{name} must be a table (source = \"...\")")
        specs.append(StreamSpec.from_mapping({**table, "name": name},
                                             lambda key, n=name: f"'streams.{n}.{key}' in '{p}'"))
    return check_settings(ServeConfig, data, where), run, specs


def build_serve_config(given: dict[str, Any], run_given: dict[str, Any],
                       where: Callable[[str], str] = quoted, run_where: Callable[[str], str] = quoted
                       ) -> ServeConfig:
    """Defaults <- the --config file <- flags; streams from the file, then NAME=SOURCE arguments."""
    values: dict[str, Any] = {}
    run_values: dict[str, Any] = {}
    specs: list[StreamSpec] = []
    if given.get("config"):
        values, run_values, specs = load_serve_file(given["config"])
    values.update(check_settings(ServeConfig, {k: v for k, v in given.items() if v is not None}, where))
    run_values.update(run_given)
    loop = bool(values.get("loop", False))
    for text in values.get("streams", ()):
        s = StreamSpec.parse(text)
        s.loop = loop and s.kind == "file"
        specs.append(s)
    cfg = ServeConfig(**{k: v for k, v in values.items()}, run=run_template(run_values, run_where),
                      specs=specs)
    check_config_fields(cfg, where)
    return cfg.check(where)


def check_config_fields(cfg: ServeConfig, where: Callable[[str], str]) -> None:
    """Types and bounds of the plain fields (``run`` and ``specs`` are checked where they are made)."""
    plain = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in ("run", "specs")}
    for name, value in check_settings(ServeConfig, plain, where).items():
        setattr(cfg, name, value)

