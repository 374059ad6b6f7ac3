"""`train`'s one typed config: every setting, its default, its bounds and its help (the flags are made from it)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..runtime.progress import PROGRESS_MODES
from ..runtime.settings import check_config, quoted, setting
from ..runtime.sizes import MAX_SIDE
from .losses import DEPTH_LOSSES

FREEZABLE = ("encoder", "seg_head", "depth_head")
# bounds of user-sized requests, checked before any work (a typo costs one line, not an allocation failure)
MAX_BATCH = 256
MAX_STEPS = 10_000_000
MAX_WORKERS = 64
G_DATA, G_OPT, G_LOSS, G_VIDEO, G_RUN = "data", "optimisation", "losses", "video sources", "run"


@dataclass
class TrainConfig:
    data: tuple[str, ...] = setting(("synthetic",), repeat=True, group=G_DATA,
                                    help="dataset spec, repeatable: several are mixed by their weight= option")
    split: str = setting("train", group=G_DATA, help="dataset split")
    out: str = setting("runs/train", group=G_RUN, help="run directory for checkpoints")
    variant: str = setting("b0", group=G_RUN, help="b0..b5")
    num_classes: int = setting(19, low=1, high=1000, group=G_RUN, help="classes of a freshly built model")
    decoder_dim: int | None = setting(None, low=1, high=4096, group=G_RUN, default_text="the variant's",
                                      help="decoder width of a freshly built model")
    crop: tuple[int, int] = setting((256, 512), size=MAX_SIDE, metavar="HxW", group=G_DATA, help="training crop")
    scale: tuple[float, float] = setting((0.5, 2.0), low=0.0, low_open=True, high=100.0, metavar="MIN,MAX",
                                         group=G_DATA, help="random zoom range before cropping")
    input_size: tuple[int, int] | None = setting(None, size=MAX_SIDE, metavar="HxW", group=G_RUN,
                                                 default_text="the crop",
                                                 help="recommended inference input stored in the checkpoint")
    threads: int | None = setting(None, low=1, high=1024, group=G_RUN, default_text="torch's choice",
                                  help="torch CPU threads")
    steps: int = setting(10_000, low=1, high=MAX_STEPS, group=G_OPT, help="iterations")
    batch_size: int = setting(8, low=1, high=MAX_BATCH, group=G_OPT, help="images per step")
    lr: float = setting(6e-4, low=0.0, low_open=True, high=1.0, group=G_OPT, help="peak AdamW learning rate")
    weight_decay: float = setting(0.01, low=0.0, high=1.0, group=G_OPT, help="AdamW weight decay")
    warmup: int = setting(200, low=0, high=MAX_STEPS, group=G_OPT,
                          help="linear warm-up iterations, then poly decay")
    poly_power: float = setting(1.0, low=0.0, high=10.0, group=G_OPT, help="power of the poly decay")
    seg_weight: float = setting(1.0, low=0.0, high=1000.0, group=G_LOSS, help="segmentation loss weight")
    depth_weight: float = setting(1.0, low=0.0, high=1000.0, group=G_LOSS, help="depth loss weight")
    depth_loss: str = setting("log-l1", choices=DEPTH_LOSSES, group=G_LOSS,
                              help="depth loss (mse: the original's, on the raw channel)")
    silog_lambda: float = setting(0.85, low=0.0, high=1.0, group=G_LOSS, help="lambda of the silog loss")
    photometric_weight: float = setting(1.0, low=0.0, high=1000.0, group=G_VIDEO,
                                        help="weight of the self-supervised loss of video sources")
    smoothness: float = setting(1e-3, low=0.0, high=1000.0, group=G_VIDEO,
                                help="edge-aware smoothness of inverse depth (Monodepth2's weight)")
    pose_warmup: int = setting(200, low=0, high=MAX_STEPS, group=G_VIDEO,
                               help="steps in which the photometric loss trains the pose network only")
    pose_lr: float = setting(1e-3, low=0.0, low_open=True, high=1.0, group=G_VIDEO,
                             help="peak learning rate of the pose network (it starts from nothing)")
    freeze: tuple[str, ...] = setting((), repeat=True, choices=FREEZABLE, group=G_OPT,
                                      help="freeze a part (repeatable); --freeze encoder --freeze seg_head is the "
                                           "original's depth-head-only training")
    init: str | None = setting(None, group=G_RUN, help="initialise from a MiT ImageNet file (encoder) or any "
                               "checkpoint")
    resume: str | None = setting(None, group=G_RUN, help="resume a run directory (or its last.state.pt)")
    overwrite: bool = setting(False, group=G_RUN, help="train into an --out folder that already holds another run "
                              "(its checkpoints are replaced)")
    seed: int = setting(0, group=G_RUN, help="random seed (data order, augmentation, initialisation)")
    workers: int = setting(1, low=0, high=MAX_WORKERS, group=G_RUN, help="data loader processes")
    amp: bool = setting(True, group=G_RUN, help="mixed precision on CUDA")
    device: str = setting("auto", group=G_RUN, help="auto | cpu | cuda[:N]")
    save_every: int = setting(1000, low=1, high=MAX_STEPS, group=G_RUN, help="steps between checkpoints")
    log_every: int = setting(20, low=1, high=MAX_STEPS, group=G_RUN, help="steps between plain log lines")
    augment: bool = setting(True, group=G_DATA, help="zoom, crop, flip, colour, blur and noise")
    progress: str = setting("auto", choices=PROGRESS_MODES, group=G_RUN,
                            help="auto: a progress bar on a terminal, plain lines otherwise")
    balance: float = setting(0.5, low=0.0, high=10.0, group=G_LOSS,
                             help="rare-label weighting power for datasets that count their labels (CamVid): "
                                  "(median freq / freq) ** POWER; 0 = off")
    sky_depth: float = setting(100.0, low=0.0, high=1000.0, group=G_LOSS,
                               help="depth target in metres for sky pixels without depth (sky is taught as far; "
                                    "0 = off; per dataset: sky=M in its spec)")

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = (self.data,)
        self.check()

    def check(self, where: Callable[[str], str] = quoted) -> None:
        """Every type and bound, before any work: one line naming the setting."""
        from ..errors import UserError

        check_config(self, where)
        if not self.data:
            raise UserError(f"{where('data')}: give at least one dataset")
