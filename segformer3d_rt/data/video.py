"""Driving video as a training source: consecutive frame triplets for self-supervised depth (``video:PATH``).

``video:PATH[,stride=N,size=HxW,crop=T:B:L:R,fov=DEG|intrinsics=fx,fy,cx,cy]``, PATH a clip or a folder of
clips (every clip with the same options):

- ``crop``: pixels cut from the top, bottom, left and right of each source frame before anything else, so that
  burnt-in text, black bars and the bonnet never reach a loss.
- ``size``: the network's input for these frames (multiples of 32; default: the cropped frame fitted into
  192x384).
- ``stride``: frames between the three frames of a triplet (default: about 10 triplet steps per second, as
  KITTI's 10 Hz that self-supervised methods are tuned on).
- ``fov``: the source frame's horizontal field of view in degrees, or ``intrinsics``: fx, fy, cx, cy in source
  pixels (pixel centres at integers, KITTI's convention). With neither, :data:`DEFAULT_FOV` is assumed and
  logged: a clip of unknown camera gets a stated guess, never a silent one.

Frames are decoded once, cropped and resized when the dataset opens (uint8 in memory: about 0.2 MB a frame at
192x352), so that data workers only index arrays. Triplets whose outer frames barely differ (the car stands)
are left out: a still camera teaches a photometric loss nothing but that everything may be infinitely far.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..errors import UserError
from ..runtime.media_kinds import VIDEO_SUFFIXES
from ..runtime.sizes import check_multiple, check_size, model_input_size, parse_size

log = logging.getLogger(__name__)

DEFAULT_FOV = 75.0  # degrees, horizontal: between a phone's main camera (~65) and KITTI's (81)
DEFAULT_BOX = (192, 384)
# the mean absolute grey difference (0-255) between a triplet's outer frames below which the camera is
# taken to stand still
STILL_THRESHOLD = 1.5
OPTIONS = ("stride", "size", "crop", "fov", "intrinsics")


@dataclass(frozen=True)
class ClipOptions:
    stride: int | None = None
    size: tuple[int, int] | None = None
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right (source pixels)
    fov: float | None = None
    intrinsics: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy (source pixels)

    @classmethod
    def parse(cls, opts: dict[str, str], spec: str) -> "ClipOptions":
        def ints(key: str, n: int, sep: str) -> tuple[int, ...]:
            try:
                values = tuple(int(v) for v in opts[key].split(sep))
            except ValueError:
                values = ()
            if len(values) != n:
                raise UserError(f"'{spec}': {key}= wants {n} whole numbers separated by '{sep}', "
                                f"not '{opts[key]}'")
            return values

        stride = None
        if "stride" in opts:
            (stride,) = ints("stride", 1, ",")
            if not 1 <= stride <= 30:
                raise UserError(f"'{spec}': stride= is the gap in frames between a triplet's frames, 1 to 30")
        size = parse_size(opts["size"], what=f"'{spec}': size=") if "size" in opts else None
        if size is not None:
            check_multiple(size, f"'{spec}': size=")
        crop = ints("crop", 4, ":") if "crop" in opts else (0, 0, 0, 0)
        if min(crop) < 0:
            raise UserError(f"'{spec}': crop= takes pixels to cut (>= 0), not '{opts['crop']}'")
        if "fov" in opts and "intrinsics" in opts:
            raise UserError(f"'{spec}': give fov= or intrinsics=, not both")
        fov = None
        if "fov" in opts:
            try:
                fov = float(opts["fov"])
            except ValueError:
                fov = -1.0
            if not 10.0 <= fov <= 170.0:
                raise UserError(f"'{spec}': fov= is the horizontal field of view in degrees, 10 to 170, "
                                f"not '{opts['fov']}'")
        intrinsics = None
        if "intrinsics" in opts:
            try:
                intrinsics = tuple(float(v) for v in opts["intrinsics"].split(","))
            except ValueError:
                intrinsics = ()
            if len(intrinsics) != 4 or not (intrinsics[0] > 0 and intrinsics[1] > 0):
                raise UserError(f"'{spec}': intrinsics= wants fx,fy,cx,cy in pixels (fx, fy > 0), "
                                f"not '{opts['intrinsics']}'")
        return cls(stride, size, crop, fov, intrinsics)


def clip_paths(path: Path) -> list[Path]:
    if path.is_dir():
        clips = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not clips:
            raise UserError(f"no video ({'/'.join(VIDEO_SUFFIXES)}) in '{path}'")
        return clips
    if not path.is_file():
        raise UserError(f"video '{path}' not found")
    return [path]


def intrinsics_matrix(opts: ClipOptions, src_hw: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """3x3 K of the network's frames in continuous pixel coordinates (a pixel's centre at i + 0.5), after
    cropping ``opts.crop`` from a source frame of ``src_hw`` and resizing to ``size``."""
    top, bottom, left, right = opts.crop
    h, w = src_hw
    if opts.intrinsics is not None:
        fx, fy, cx, cy = opts.intrinsics
        cx, cy = cx + 0.5, cy + 0.5  # integer pixel centres -> continuous
    else:
        fov = DEFAULT_FOV if opts.fov is None else opts.fov
        fx = fy = (w / 2) / math.tan(math.radians(fov) / 2)
        cx, cy = w / 2, h / 2
    sx = size[1] / (w - left - right)
    sy = size[0] / (h - top - bottom)
    return np.array([[fx * sx, 0, (cx - left) * sx], [0, fy * sy, (cy - top) * sy], [0, 0, 1]], dtype=np.float32)


def decode_clip(path: Path, opts: ClipOptions) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Every frame of the clip, cropped and resized: (N x H x W x 3 uint8, frames per second, source H x W)."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise UserError(f"cannot open video '{path}': {e}") from None
    with container:
        if not container.streams.video:
            raise UserError(f"'{path}' has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # a file, not a live source: frame delay costs nothing here
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        frames, src_hw, size = [], None, opts.size
        top, bottom, left, right = opts.crop
        try:
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                if src_hw is None:
                    src_hw = rgb.shape[:2]
                    kept = (src_hw[0] - top - bottom, src_hw[1] - left - right)
                    if min(kept) < 32:
                        raise UserError(f"'{path}': crop={top}:{bottom}:{left}:{right} leaves {kept[1]}x{kept[0]} "
                                        f"of its {src_hw[1]}x{src_hw[0]} frames")
                    size = size or model_input_size(kept, DEFAULT_BOX)
                    check_size(size, what=f"'{path}' size")
                rgb = rgb[top:rgb.shape[0] - bottom, left:rgb.shape[1] - right]
                frames.append(cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA))
        except av.error.FFmpegError as e:
            if not frames:
                raise UserError(f"cannot decode video '{path}': {e}") from None
            log.warning("%s: decoding stopped after %d frames (%s)", path.name, len(frames), e)
    if len(frames) < 3:
        raise UserError(f"'{path}' has {len(frames)} frames; a triplet needs 3")
    return np.stack(frames), fps, src_hw


@dataclass(frozen=True)
class Triplet:
    clip: int
    centre: int


@dataclass
class Clip:
    name: str
    frames: np.ndarray  # N x H x W x 3 uint8
    K: np.ndarray  # 3 x 3, at the frames' size
    stride: int
    fps: float


class VideoTriplets(Dataset):
    """(previous, centre, next) frames ``stride`` apart with their intrinsics; item: (3 x H x W x 3 uint8, K)."""

    def __init__(self, path: str | Path, opts: ClipOptions) -> None:
        self.path = Path(path).expanduser()
        self.opts = opts
        self.clips: list[Clip] = []
        self.triplets: list[Triplet] = []
        if opts.fov is None and opts.intrinsics is None:
            log.info("video %s: no fov= or intrinsics= given: assuming a %g degree horizontal field of view",
                     self.path, DEFAULT_FOV)
        sizes = set()
        for p in clip_paths(self.path):
            frames, fps, src_hw = decode_clip(p, opts)
            stride = opts.stride or max(1, round(fps / 10))
            K = intrinsics_matrix(opts, src_hw, frames.shape[1:3])
            clip = Clip(p.name, frames, K, stride, fps)
            index = len(self.clips)
            self.clips.append(clip)
            sizes.add(frames.shape[1:3])
            grey = frames.mean(axis=3, dtype=np.float32)
            kept = still = 0
            for t in range(stride, len(frames) - stride):
                if np.abs(grey[t - stride] - grey[t + stride]).mean() < STILL_THRESHOLD:
                    still += 1
                    continue
                self.triplets.append(Triplet(index, t))
                kept += 1
            log.info("video %s: %d frames at %.2f fps, %dx%d -> %dx%d, stride %d: %d triplets (%d left out: "
                     "camera still)", p.name, len(frames), fps, src_hw[1], src_hw[0], frames.shape[2],
                     frames.shape[1], stride, kept, still)
        if len(sizes) > 1:
            raise UserError(f"'{self.path}': its clips come out at different sizes ({', '.join(f'{h}x{w}' for h, w in sorted(sizes))}); "
                            "give size=HxW")
        if not self.triplets:
            raise UserError(f"'{self.path}': no triplet with a moving camera (stride {self.clips[0].stride})")

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        t = self.triplets[index]
        clip = self.clips[t.clip]
        s = clip.stride
        return clip.frames[[t.centre - s, t.centre, t.centre + s]], clip.K
