"""Named, frozen training recipes: one :class:`Recipe` per use (search trial, final run, ...).

A recipe is everything :func:`nasforge.train.train` needs besides the model and the data, in
small frozen groups: ``defaults`` (the model and data the CLI uses when not told), ``inputs``
(which images train, validate and initialise), ``schedule`` (epochs, batch, learning-rate
curve), ``optim`` (the update rule and which parameters learn), ``regularisation``,
``augmentation`` and ``speed`` (settings that change time and memory, not what is learned).
``RECIPES`` maps names to recipes; ``get_recipe(name)`` looks one up and
``recipe.replace(lr=0.1, ...)`` derives a variant, each field named by its flat name (the name
it had before the groups) or a whole group replaced (``recipe.replace(optim=...)``).
``Recipe.from_dict`` reads both the grouped form ``to_dict`` writes and the flat form of run
folders written before the groups.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from nasforge.data.loader import FLIP_MODES
from nasforge.rules import add_unique, reject_unknown_keys


LR_SHAPES = ("cosine", "linear")
TTA_MODES = ("none", "flip", "flip_translate")
OPTIMIZERS = ("sgd", "rmsprop")


@dataclass(frozen=True)
class Defaults:
    """What the CLI and a search build and load when they are not told (``train()`` itself
    takes the model and the data as arguments)."""

    model: str = "nasnet_a"  # zoo name or cell-pair JSON: the model when no MODEL is given
    setting: str | None = "cifar"  # zoo setting of the default model (its macro shape)
    # (field, value) build overrides of the default model only (its N, filters, widths)
    model_overrides: tuple[tuple[str, object], ...] = ()
    data: str = "cifar10"  # data source when no --data is given (nasforge.data.load_data)


@dataclass(frozen=True)
class Inputs:
    """Which images a run trains, validates and initialises on."""

    split: str = "search"  # "search": train/val (test unused); "final": train/test
    val_size: int = 5000  # images held out of the training set for validation (search split)
    train_subset: int | None = None  # images: train on a fixed random n of them (smoke runs)
    eval_subset: int | None = None  # images: evaluate on a fixed random n (short streamed runs)
    # images: the first n training images (unaugmented) are run through the model once before
    # training so that data-initialised layers (any module with ``fit_to_inputs``: the
    # patch-whitening conv) set themselves from the inputs reaching them; 0 = off
    data_init_images: int = 0

    def __post_init__(self):
        if self.split not in ("search", "final"):
            raise ValueError("split must be 'search' or 'final'")
        if self.data_init_images < 0:
            raise ValueError("need data_init_images >= 0")


@dataclass(frozen=True)
class Schedule:
    """How long a run trains and the learning rate at each step (``nasforge.train.schedules``)."""

    epochs: int = 20  # full passes over the training split: the run's length
    batch_size: int = 128  # images per step (global; clamped to the training set size)
    lr: float = 0.025  # peak learning rate (after warm-up): the step size the curve scales
    min_lr: float = 0.0  # learning rate at the end of the decay (or of each SGDR period)
    # "cosine" = linear warm-up from 0, then a half cosine to min_lr; "linear" = linear
    # warm-up from warmup_start_ratio * lr to lr, then a straight line to min_lr (airbench's
    # triangle: fast runs spend more steps at a high rate); ignored with restarts
    lr_shape: str = "cosine"
    warmup_epochs: float = 0.0  # epochs of linear warm-up to lr (per iteration): early stability
    warmup_start_ratio: float = 0.0  # lr_shape "linear": lr at step 0 / lr (airbench: 0.2)
    # epochs of the first cosine period of SGDR warm restarts (ENAS); 0 = one cosine over the
    # run (after the warm-up); with restarts there is no warm-up
    restart_epochs: float = 0.0
    restart_mult: float = 2.0  # each SGDR period is this many times longer than the last
    # one-shot searches with a search phase after training (spos): paths it evaluates on the
    # trained supernet (each costs its BN recalibration and a pass over the validation
    # images); None: the method's own default (SposConfig.candidates); a method option
    # ``candidates`` given with the search wins over both
    search_candidates: int | None = None

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.search_candidates is not None and self.search_candidates < 1:
            raise ValueError(f"search_candidates must be >= 1, got {self.search_candidates}")
        if self.batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        if self.warmup_epochs < 0 or self.lr <= 0:
            raise ValueError("need lr > 0 and warmup_epochs >= 0")
        _check_choice("lr_shape", self.lr_shape, LR_SHAPES)


@dataclass(frozen=True)
class Optim:
    """The update rule and which parameters learn how fast (``nasforge.train.optimizers``)."""

    # "sgd" or "rmsprop" (TF-style: decay, momentum, epsilon below); the flat name is
    # ``optimizer``
    kind: str = "sgd"
    momentum: float = 0.9  # SGD / RMSProp momentum: smooths the gradient over ~1/(1-m) steps
    nesterov: bool = False  # Nesterov momentum (SGD): looks ahead along the momentum
    weight_decay: float = 5e-4  # L2 coefficient on all parameters (the optimiser's weight_decay)
    rmsprop_decay: float = 0.9  # RMSProp moving-average decay (torch's alpha)
    rmsprop_eps: float = 1.0  # RMSProp epsilon (TF's NASNet value: damps small second moments)
    # lr multiple of BatchNorm shifts (their weight decay divided by it, so their decay per
    # step is unchanged): airbench's 64 lets the shifts move as fast as scale-free weights do
    bn_bias_lr_mult: float = 1.0
    # learn BatchNorm scales; False: fixed at 1 (airbench: after a scale-invariant conv they
    # only duplicate what weight decay and the lr control)
    bn_scale: bool = True
    # steps between lookahead updates (hlb-CIFAR10/airbench): an EMA of the weights and BN
    # statistics, EMA <- lerp(EMA, w, 1 - d), then w <- EMA, with d = lookahead_decay *
    # (step / total steps) ** 3; the last step sets w <- EMA; 0 = off. Averages out the noise
    # of a short, high-lr run.
    lookahead_every: int = 0
    lookahead_decay: float = 0.95 ** 5  # d at the last step (airbench)

    def __post_init__(self):
        if self.kind not in OPTIMIZERS:
            raise ValueError("optimizer must be 'sgd' or 'rmsprop'")
        if self.bn_bias_lr_mult <= 0 or self.lookahead_every < 0 or \
                not 0.0 <= self.lookahead_decay <= 1.0:
            raise ValueError("need bn_bias_lr_mult > 0, lookahead_every >= 0 and "
                             "lookahead_decay in [0, 1]")


@dataclass(frozen=True)
class Regularisation:
    """What keeps a long run from fitting its training images too closely."""

    label_smoothing: float = 0.0  # target mass spread over all classes (F.cross_entropy's)
    grad_clip: float | None = 5.0  # max global gradient L2 norm (stops blow-ups); None: off
    drop_path_keep_prob: float = 1.0  # ScheduledDropPath keep prob (cell networks; 1 = off)
    aux_weight: float = 0.0  # auxiliary-head loss weight: gradient to early cells (0 = no head)
    # stochastic depth p_L (Huang et al. 2016): survival probability of the last residual
    # block of a chain model whose builder takes the ``stochastic_depth`` option (resnet110),
    # decaying linearly from 1 at the first block; 1 = off
    stochastic_depth: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.drop_path_keep_prob <= 1.0:
            raise ValueError("drop_path_keep_prob must be in (0, 1]")
        if not 0.0 < self.stochastic_depth <= 1.0:
            raise ValueError("stochastic_depth must be in (0, 1]")


@dataclass(frozen=True)
class Augmentation:
    """How training images are varied (``nasforge.data.DeviceLoader`` for small images,
    ``nasforge.data.stream`` for ImageFolder trees of any size) and how the last evaluation
    averages over views."""

    crop_padding: int = 4  # pixels of random-crop padding: shifts of up to this many pixels
    pad_mode: str = "zero"  # crop padding: "zero" (NASNet/DARTS) or "reflect" (airbench)
    flip: bool = True  # random horizontal flip: mirror images are as likely as the originals
    # "random": each image flipped with p 1/2 every epoch; "alternate" (airbench): random in
    # the first epoch, then each image flipped on every other epoch, so two consecutive epochs
    # always see both orientations of every image
    flip_mode: str = "random"
    cutout: int = 0  # pixels: side of the cutout square (0 = off): occlusion robustness
    image_size: int = 224  # pixels: RandomResizedCrop side (train), CenterCrop side (eval)
    eval_crop_ratio: float = 0.875  # eval: resize the short side to image_size / ratio first
    min_crop_scale: float = 0.08  # RandomResizedCrop's smallest area fraction (scale range)
    # test-time augmentation of the final evaluation (the last epoch's figures; earlier
    # epochs are plain): "none"; "flip": mean logits of x and its mirror; "flip_translate"
    # (airbench's level 2): 1/2 that + 1/4 each of the same for x shifted one pixel up-left
    # and down-right (reflect padding): a cheap ensemble worth about a point on CIFAR-10
    tta: str = "none"

    def __post_init__(self):
        if self.image_size < 8 or not 0.0 < self.eval_crop_ratio <= 1.0:
            raise ValueError("need image_size >= 8 and eval_crop_ratio in (0, 1]")
        _check_choice("flip_mode", self.flip_mode, FLIP_MODES)
        _check_choice("tta", self.tta, TTA_MODES)


@dataclass(frozen=True)
class Speed:
    """Settings that change time and memory, not what is learned (up to bf16 rounding)
    (``nasforge.train.placement``)."""

    bf16: bool = True  # bf16 autocast (CUDA only unless device_flags_on_cpu): ~2x GPU math
    channels_last: bool = True  # channels_last memory format (CUDA only unless ...on_cpu)
    device_flags_on_cpu: bool = False  # apply bf16/channels_last on CPU too (tests)
    # channels_last on CPU as well: NASNet children train 2-2.5x faster on CPU with it (oneDNN's
    # NHWC max/avg pools are vectorized, NCHW ones are not; measured N=1 F=8, batch 64)
    cpu_channels_last: bool = False
    # bf16 autocast on CPU as well, where the CPU has AMX bf16 tile units (Intel Sapphire Rapids
    # and later; elsewhere oneDNN emulates bf16 and it is slower, so there the run stays fp32
    # and says so): dense 3x3 convs (airbench) train ~1.8x faster per image; NASNet children's
    # depthwise convs and pools run slower in bf16 (benchmarks/bench_step_time.py --pair
    # airbench|child --channels-last, with and without --bf16)
    cpu_bf16: bool = False
    compile: bool = False  # torch.compile the model: faster steps after a compile pause
    # cell networks: ops that start with a ReLU and read the same tensor share one ReLU of it
    # in training (nasforge.compiler.set_relu_sharing; same values, a CPU search child's step
    # ~10% faster and a fifth fewer activations kept for the backward pass); False: each op
    # computes its own, as before 2026-12
    share_relu: bool = True
    # cell networks: each cell runs under torch.utils.checkpoint in training (only its inputs
    # kept for the backward pass, its inside recomputed there with the same drop-path masks,
    # BN statistics updated once; nasforge.compiler.set_cell_recompute): same loss and
    # gradients, fewer bytes per child worker (a CPU search child's private memory is mostly
    # these activations) for about one more forward pass of compute per step; False: off
    recompute_cells: bool = False
    divergence_check_every: int = 1  # steps between non-finite-loss checks on CUDA (syncs)
    eval_batch_size: int = 500  # images per evaluation step
    # (search children use 100: evaluation activations of 500 images were the largest part of
    # a CPU child worker's private memory; accuracy does not depend on it, BN is in eval mode)
    data_workers: int = 4  # DataLoader worker processes per training process (streamed data)

    def __post_init__(self):
        if self.eval_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")


def _check_choice(field_name: str, value: str, known: tuple[str, ...]) -> None:
    if value not in known:
        raise ValueError(f"{field_name} must be one of {', '.join(known)}; got {value!r}")


#: the groups of a Recipe: attribute name -> config class
GROUPS: dict[str, type] = {"defaults": Defaults, "inputs": Inputs, "schedule": Schedule,
                           "optim": Optim, "regularisation": Regularisation,
                           "augmentation": Augmentation, "speed": Speed}
#: a group field's flat name (the Recipe field it was before the groups) when it differs
_FLAT_NAMES = {("optim", "kind"): "optimizer"}
#: flat field name -> (group, field in the group): how flat JSON and ``Recipe.replace`` route
FLAT_FIELDS: dict[str, tuple[str, str]] = {
    _FLAT_NAMES.get((group, f.name), f.name): (group, f.name)
    for group, cls in GROUPS.items() for f in dataclasses.fields(cls)}
assert len(FLAT_FIELDS) == sum(len(dataclasses.fields(c)) for c in GROUPS.values())


@dataclass(frozen=True)
class Recipe:
    """A training configuration: a name, the groups (see the module docstring), notes."""

    name: str
    defaults: Defaults = field(default_factory=Defaults)
    inputs: Inputs = field(default_factory=Inputs)
    schedule: Schedule = field(default_factory=Schedule)
    optim: Optim = field(default_factory=Optim)
    regularisation: Regularisation = field(default_factory=Regularisation)
    augmentation: Augmentation = field(default_factory=Augmentation)
    speed: Speed = field(default_factory=Speed)
    notes: str = field(default="", compare=False)

    def __getattr__(self, name: str):
        """Only reached for a missing attribute: a flat field name says where it lives now."""
        if name in FLAT_FIELDS:
            group, inner = FLAT_FIELDS[name]
            raise AttributeError(f"Recipe.{name} is Recipe.{group}.{inner}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def replace(self, **changes) -> "Recipe":
        """A variant of this recipe. ``changes`` name fields by their flat name (``lr=0.1``
        goes to ``schedule``, ``optimizer="rmsprop"`` to ``optim.kind``), whole groups
        (``optim=Optim(...)``; flat names apply on top), ``name`` or ``notes``. A bad value
        raises ValueError naming the recipe; an unknown name raises TypeError."""
        top = {k: v for k, v in changes.items() if k not in FLAT_FIELDS}
        unknown = sorted(set(top) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"recipe {self.name}: unknown field(s) {', '.join(unknown)}")
        name = top.get("name", self.name)
        per_group: dict[str, dict] = {}
        for flat, value in changes.items():
            if flat in FLAT_FIELDS:
                group, inner = FLAT_FIELDS[flat]
                per_group.setdefault(group, {})[inner] = value
        try:
            for group, fields in per_group.items():
                top[group] = dataclasses.replace(top.get(group, getattr(self, group)), **fields)
        except ValueError as e:
            raise ValueError(f"recipe {name}: {e}") from None
        return dataclasses.replace(self, **top)

    @property
    def training_overrides(self) -> dict:
        """The build overrides a cell network needs to train with this recipe (the one place
        this rule lives: ``nasforge train``, search children and transfer use it):
        ScheduledDropPath when ``drop_path_keep_prob < 1``, the auxiliary head when
        ``aux_weight > 0``."""
        reg = self.regularisation
        out = {}
        if reg.drop_path_keep_prob < 1.0:
            out["drop_path_keep_prob"] = reg.drop_path_keep_prob
        if reg.aux_weight > 0:
            out["aux_head"] = True
        return out

    @property
    def chain_overrides(self) -> dict:
        """The build overrides a hand-designed (chain) network needs to train with this recipe:
        stochastic depth when ``stochastic_depth < 1`` (for the builders that take it)."""
        p_last = self.regularisation.stochastic_depth
        return {"stochastic_depth": p_last} if p_last < 1.0 else {}

    @property
    def overrides(self) -> dict:
        """The default model's build overrides: ``model_overrides`` over
        ``training_overrides``."""
        return self.build_overrides()

    def build_overrides(self, model_name: str | None = None, *, network: str = "cell") -> dict:
        """The one rule for which of this recipe's overrides apply to the model it trains
        (``nasforge train``, search children, the one-shot supernet, transfer models).

        ``model_name``: the model's zoo name or file; None: the recipe's own model with a
        searched cell (search children, the supernet). ``model_overrides`` apply only to the
        recipe's own model (``model``). ``network`` says what is built:
        ``"cell"``: a cell network, with ``training_overrides`` (drop-path, auxiliary head);
        ``"chain"``: a hand-designed network, with ``chain_overrides`` (stochastic depth);
        ``"chain_file"``: a cell-chain file, which fixes its own options: nothing applies;
        ``"supernet"``: a one-shot supernet, which has neither drop-path nor an auxiliary
        head (off even where ``model_overrides`` turn them on)."""
        own = dict(self.defaults.model_overrides) if model_name in (None, self.defaults.model) else {}
        if network == "cell":
            return {**self.training_overrides, **own}
        if network == "chain":
            return {**self.chain_overrides, **own}
        if network == "chain_file":
            return {}
        if network == "supernet":
            return {**own, "drop_path_keep_prob": 1.0, "aux_head": False}
        raise ValueError(f"unknown network kind {network!r} (cell, chain, chain_file, supernet)")

    def to_dict(self) -> dict:
        """The grouped form (``{"name", "defaults": {...}, ..., "notes"}``; JSON values)."""
        d = asdict(self)
        d["defaults"]["model_overrides"] = dict(self.defaults.model_overrides)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        """Inverse of ``to_dict`` (a run resumes with the recipe it saved, even if the
        registry's recipe of that name has changed since). Also reads the flat form written
        before the groups (``{"name", "lr", ...}``; flat keys apply over group keys)."""
        grouped = {k: v for k, v in data.items() if k not in FLAT_FIELDS}
        reject_unknown_keys(cls, grouped, "recipe")
        groups = {}
        for group, config in GROUPS.items():
            fields = dict(grouped.pop(group, None) or {})
            reject_unknown_keys(config, fields, f"recipe {group}")
            if "model_overrides" in fields:
                fields["model_overrides"] = tuple(dict(fields["model_overrides"]).items())
            groups[group] = fields
        for flat, value in data.items():
            if flat in FLAT_FIELDS:
                group, inner = FLAT_FIELDS[flat]
                groups[group][inner] = (tuple(dict(value).items()) if flat == "model_overrides"
                                        else value)
        try:
            built = {group: GROUPS[group](**fields) for group, fields in groups.items()}
        except ValueError as e:
            raise ValueError(f"recipe {grouped.get('name')}: {e}") from None
        return cls(**grouped, **built)


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to the recipes; ValueError if its name is taken."""
    return add_unique(RECIPES, recipe.name, recipe, "recipe")


def get_recipe(name: str | Recipe) -> Recipe:
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r} (known: {', '.join(sorted(RECIPES))})") from None


register_recipe(Recipe(
    name="search",
    defaults=Defaults(model="nasnet_a", setting="cifar", model_overrides=(("N", 2),),
                      data="cifar10"),
    inputs=Inputs(split="search", val_size=5000),
    schedule=Schedule(epochs=20, batch_size=32, lr=0.025),
    optim=Optim(weight_decay=5e-4),
    regularisation=Regularisation(grad_clip=5.0),
    speed=Speed(eval_batch_size=100, cpu_channels_last=True),
    notes="NASNet child training (Zoph et al. 2018): N=2, 20 epochs, cosine; a search passes "
          "its own model and F; accuracy on the 5,000 held-out images is the reward."))

register_recipe(Recipe(
    name="final-cifar",
    defaults=Defaults(model="nasnet_a", setting="cifar",
                      model_overrides=(("N", 6), ("filters", 32)), data="cifar10"),
    inputs=Inputs(split="final"),
    schedule=Schedule(epochs=600, batch_size=32, lr=0.025),
    optim=Optim(momentum=0.9, weight_decay=5e-4),
    regularisation=Regularisation(grad_clip=5.0, drop_path_keep_prob=0.6, aux_weight=0.4),
    augmentation=Augmentation(cutout=16),
    notes="NASNet-A 6@768 CIFAR-10 final training, docs/reference.md section 4 ([TF] config)."))

# airbench94's hyperparameters (KellerJordan/cifar10-airbench) in this trainer's units: its
# loss is summed over the batch with lr 11.5 / (1024 (1 + 1 / (1 - momentum))) and weight
# decay 0.0153 x batch / that; for a mean loss at batch B that is lr 11.5 B / (1024 x 7.667)
# and weight decay 0.0153 / 11.5 (the same decay per example), BN shifts at 64 x the lr.
AIRBENCH_MOMENTUM = 0.85
AIRBENCH_LR_PER_IMAGE = 11.5 / (1024 * (1 + 1 / (1 - AIRBENCH_MOMENTUM)))  # x batch = lr
AIRBENCH_WEIGHT_DECAY = 0.0153 / 11.5
CIFAR_FAST_EPOCHS = 14
# a CPU step costs about 12% more per image at batch 500 than at 250 (cache footprint;
# `bench_step_time.py --pair airbench`; airbench's 1024 is a GPU throughput choice), and a
# short run gains from more steps: 200 of 250 per epoch rather than 100 of 500
CIFAR_FAST_BATCH = 250
# airbench's 64/256/256 cut to the zoo's 32/128/128 to fit 2 CPU cores (bf16 on AMX makes
# these widths cost what 16/96/96 cost in fp32: 89.3% in 12 min 48 s against 87.0% in 15:17)
CIFAR_FAST_WIDTHS = (32, 128, 128)

register_recipe(Recipe(
    name="cifar-fast",
    defaults=Defaults(model="airbench", setting="cifar",
                      model_overrides=(("widths", CIFAR_FAST_WIDTHS),), data="cifar10"),
    inputs=Inputs(split="final", data_init_images=5000),
    schedule=Schedule(epochs=CIFAR_FAST_EPOCHS, batch_size=CIFAR_FAST_BATCH,
                      lr=AIRBENCH_LR_PER_IMAGE * CIFAR_FAST_BATCH, lr_shape="linear",
                      warmup_epochs=0.23 * CIFAR_FAST_EPOCHS, warmup_start_ratio=0.2,
                      min_lr=0.07 * AIRBENCH_LR_PER_IMAGE * CIFAR_FAST_BATCH),
    optim=Optim(momentum=AIRBENCH_MOMENTUM, nesterov=True, weight_decay=AIRBENCH_WEIGHT_DECAY,
                bn_bias_lr_mult=64.0, bn_scale=False, lookahead_every=5),
    regularisation=Regularisation(label_smoothing=0.2, grad_clip=None),
    augmentation=Augmentation(crop_padding=2, pad_mode="reflect", flip_mode="alternate",
                              tta="flip_translate"),
    # eval at 250 too: a CPU forward costs ~25% less per image than at 1,000
    speed=Speed(eval_batch_size=250, cpu_channels_last=True, cpu_bf16=True),
    notes="Fast CPU CIFAR-10, airbench94's recipe (Jordan 2024) at widths 32/128/128 (0.50M "
          "params), batch 250, 14 epochs, bf16 autocast on AMX CPUs: patch-whitening first "
          "conv fitted to 5,000 training images, BN without scales (shifts at 64 x lr), "
          "Nesterov SGD 0.85 with airbench's linear warm-up and decay, label smoothing 0.2, "
          "lookahead every 5 steps, 2-pixel reflect crops, alternating flips, flip + "
          "translate test-time augmentation."))

register_recipe(Recipe(
    name="cifar-fast-resnet9",
    defaults=Defaults(model="resnet9", setting="cifar", data="cifar10"),
    inputs=Inputs(split="final"),
    schedule=Schedule(epochs=16, batch_size=512, lr=0.4, warmup_epochs=2.0),
    optim=Optim(nesterov=True, weight_decay=5e-4),
    regularisation=Regularisation(label_smoothing=0.2, grad_clip=None),
    augmentation=Augmentation(pad_mode="reflect"),
    speed=Speed(eval_batch_size=1000),
    notes="The earlier cifar-fast (85.8% in 22 min on 2 CPU cores): a quarter-width DAWNBench "
          "ResNet-9 (0.41M params, 24M mult-adds), 16 epochs, Nesterov SGD with warm-up and "
          "cosine, label smoothing 0.2, reflect-pad crops and flips (airbench-style)."))

register_recipe(Recipe(
    name="cifar-stochastic-depth",
    defaults=Defaults(model="resnet110", setting="cifar", data="cifar10"),
    inputs=Inputs(split="final"),
    schedule=Schedule(epochs=500, batch_size=128, lr=0.1),
    optim=Optim(momentum=0.9, nesterov=True, weight_decay=1e-4),
    regularisation=Regularisation(grad_clip=None, stochastic_depth=0.5),
    notes="ResNet-110 with stochastic depth on CIFAR-10 (Huang et al. 2016, section 4): "
          "p_L = 0.5 with linear decay, 500 epochs, batch 128, Nesterov SGD lr 0.1, wd 1e-4; "
          "the paper divides the learning rate by 10 at epochs 250 and 375, this trainer "
          "anneals it with a cosine."))

register_recipe(Recipe(
    name="smoke",
    defaults=Defaults(model="nasnet_a", setting="cifar",
                      model_overrides=(("N", 1), ("filters", 8)), data="synthetic"),
    inputs=Inputs(split="final", train_subset=2000, val_size=1000),
    schedule=Schedule(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.2),
    optim=Optim(weight_decay=5e-4),
    regularisation=Regularisation(grad_clip=5.0, drop_path_keep_prob=0.8, aux_weight=0.4),
    augmentation=Augmentation(cutout=8),
    speed=Speed(eval_batch_size=100, cpu_channels_last=True),
    notes="A CPU run of a minute or two that exercises every code path; as a search recipe "
          "(nasforge search --recipe smoke) a child learns enough in 125 steps to rank "
          "above chance on real CIFAR-10."))

# --- ImageNet transfer (nasforge transfer): docs/reference.md sections 4 and 6 ------------------
# The NASNet ImageNet recipes follow the paper's setting as far as it is documented: RMSProp
# (decay 0.9, momentum 0.9, epsilon 1.0: the TF-slim optimiser the NASNet ImageNet models were
# trained with), label smoothing 0.1, the auxiliary head (loss weight 0.4), weight decay 4e-5
# (mobile) / 5e-5 (large), ScheduledDropPath keep 0.7 for large and none for mobile; the
# schedule (cosine with warm-up), learning rate and epochs are nasforge's choice, since the
# paper's TPU/GPU-cluster schedule does not transfer to other batch sizes. ``nasforge transfer
# --epochs E --image-size S`` shortens either.
register_recipe(Recipe(
    name="imagenet-nasnet-mobile",
    defaults=Defaults(model="nasnet_a", setting="mobile", data="imagenet"),
    inputs=Inputs(split="final"),
    schedule=Schedule(epochs=150, batch_size=256, lr=0.064, warmup_epochs=2.0),
    optim=Optim(kind="rmsprop", momentum=0.9, rmsprop_decay=0.9, rmsprop_eps=1.0,
                weight_decay=4e-5),
    regularisation=Regularisation(label_smoothing=0.1, grad_clip=10.0, aux_weight=0.4,
                                  drop_path_keep_prob=1.0),
    augmentation=Augmentation(image_size=224, eval_crop_ratio=0.875),
    speed=Speed(eval_batch_size=256, cpu_channels_last=True),
    notes="NASNet-A mobile setting on ImageNet (N@P e.g. 4@1056, 224 px): RMSProp, label "
          "smoothing 0.1, auxiliary head, no drop-path, wd 4e-5."))

register_recipe(Recipe(
    name="imagenet-nasnet-large",
    defaults=Defaults(model="nasnet_a", setting="large", data="imagenet"),
    inputs=Inputs(split="final"),
    schedule=Schedule(epochs=150, batch_size=256, lr=0.064, warmup_epochs=2.0),
    optim=Optim(kind="rmsprop", momentum=0.9, rmsprop_decay=0.9, rmsprop_eps=1.0,
                weight_decay=5e-5),
    regularisation=Regularisation(label_smoothing=0.1, grad_clip=10.0, aux_weight=0.4,
                                  drop_path_keep_prob=0.7),
    augmentation=Augmentation(image_size=331, eval_crop_ratio=0.911),
    speed=Speed(eval_batch_size=128, cpu_channels_last=True),
    notes="NASNet-A large setting on ImageNet (6@4032, 331 px): RMSProp, label smoothing 0.1, "
          "auxiliary head, ScheduledDropPath keep 0.7, wd 5e-5."))

register_recipe(Recipe(
    name="imagenet-baseline",
    defaults=Defaults(model="resnet50", setting=None, data="imagenet"),
    inputs=Inputs(split="final"),
    schedule=Schedule(epochs=90, batch_size=256, lr=0.1, warmup_epochs=2.0),
    optim=Optim(kind="sgd", momentum=0.9, nesterov=True, weight_decay=1e-4),
    regularisation=Regularisation(label_smoothing=0.1, grad_clip=None),
    augmentation=Augmentation(image_size=224, eval_crop_ratio=0.875),
    speed=Speed(eval_batch_size=256),
    notes="Hand-designed ImageNet baselines (ResNet, MobileNet, ...): the usual SGD recipe "
          "(lr 0.1 per 256 images, Nesterov momentum 0.9, wd 1e-4, cosine with warm-up), with "
          "the same label smoothing 0.1 as the NASNet recipes."))

# --- one-shot search (nasforge search --searcher enas|darts|gdas|spos): the supernet's ----------
# training; the methods' own settings (controller, architecture optimiser, temperature) are the
# defaults of their configs in nasforge/oneshot/methods.py. docs/reference.md section 9.
register_recipe(Recipe(
    name="oneshot-smoke",
    defaults=Defaults(model="nasnet_a", setting="cifar",
                      model_overrides=(("N", 1), ("filters", 8)), data="synthetic"),
    inputs=Inputs(split="search", train_subset=32, val_size=256),
    schedule=Schedule(epochs=2, batch_size=16, lr=0.05, min_lr=0.001, search_candidates=12),
    optim=Optim(weight_decay=3e-4),
    regularisation=Regularisation(grad_clip=5.0),
    augmentation=Augmentation(cutout=0),
    speed=Speed(eval_batch_size=256, cpu_channels_last=True),
    notes="A one-shot search within 5 minutes on one CPU thread, every method on the full "
          "NASNet space (synthetic data, N=1, F=8, 2 steps of 16 images per epoch: a darts "
          "mixture step takes 20-50 s there; spos's search phase 12 paths, about 10 s "
          "each); it checks that a search runs end to end, not what it finds; the tests "
          "use it with a 2-block, 3-op space."))

register_recipe(Recipe(
    name="enas-micro",
    defaults=Defaults(model="nasnet_a", setting="cifar",
                      model_overrides=(("N", 5), ("filters", 20)), data="cifar10"),
    inputs=Inputs(split="search", val_size=5000),
    schedule=Schedule(epochs=150, batch_size=160, lr=0.05, min_lr=0.0005, restart_epochs=10,
                      restart_mult=2.0),
    optim=Optim(weight_decay=1e-4),
    regularisation=Regularisation(grad_clip=5.0),
    augmentation=Augmentation(cutout=0),
    notes="ENAS micro search (cifar10_micro_search.sh): batch 160, 150 epochs, SGDR cosine "
          "0.05 -> 0.0005 restarting after 10, 20, 40, 80 epochs, wd 1e-4, 5 cells per stack, "
          "20 filters; controller settings in EnasConfig."))

register_recipe(Recipe(
    name="darts-search",
    defaults=Defaults(model="nasnet_a", setting="cifar",
                      model_overrides=(("N", 2), ("filters", 16)), data="cifar10"),
    inputs=Inputs(split="search", val_size=25000),
    schedule=Schedule(epochs=50, batch_size=64, lr=0.025, min_lr=0.001),
    optim=Optim(momentum=0.9, weight_decay=3e-4),
    regularisation=Regularisation(grad_clip=5.0),
    augmentation=Augmentation(cutout=0),
    notes="DARTS search (Liu et al. 2019): half of the training set for the weights, half for "
          "the architecture, batch 64, 50 epochs, SGD 0.025 cosine to 0.001, wd 3e-4, 8 cells "
          "of 16 filters (N=2 here: 2 normal cells per stack); architecture Adam in DartsConfig."))

register_recipe(Recipe(
    name="gdas-search",
    defaults=Defaults(model="nasnet_a", setting="cifar",
                      model_overrides=(("N", 2), ("filters", 16)), data="cifar10"),
    inputs=Inputs(split="search", val_size=25000),
    schedule=Schedule(epochs=240, batch_size=64, lr=0.025, min_lr=0.001),
    optim=Optim(momentum=0.9, weight_decay=3e-4),
    regularisation=Regularisation(grad_clip=5.0),
    augmentation=Augmentation(cutout=0),
    notes="GDAS search (Dong & Yang 2019): as DARTS' split and optimiser, 240 epochs, the "
          "Gumbel temperature 10 -> 0.1 (GdasConfig)."))

register_recipe(Recipe(
    name="spos-search",
    defaults=Defaults(model="nasnet_a", setting="cifar",
                      model_overrides=(("N", 2), ("filters", 16)), data="cifar10"),
    inputs=Inputs(split="search", val_size=5000),
    schedule=Schedule(epochs=100, batch_size=96, lr=0.05, min_lr=0.0),
    optim=Optim(momentum=0.9, weight_decay=3e-4),
    regularisation=Regularisation(grad_clip=5.0),
    augmentation=Augmentation(cutout=0),
    notes="Single-path one-shot on CIFAR-10: uniform paths, SGD cosine, then the search "
          "phase (SposConfig: evolution over 1,000 paths)."))

register_recipe(Recipe(
    name="rsps-search",
    defaults=Defaults(model="nasnet_a", setting="cifar",
                      model_overrides=(("N", 2), ("filters", 16)), data="cifar10"),
    inputs=Inputs(split="search", val_size=25000),
    schedule=Schedule(epochs=250, batch_size=64, lr=0.025, min_lr=0.001),
    optim=Optim(momentum=0.9, weight_decay=3e-4),
    regularisation=Regularisation(grad_clip=5.0),
    augmentation=Augmentation(cutout=0),
    notes="Random sampling with parameter sharing (Li & Talwalkar 2019) as NAS-Bench-201's "
          "RSPS: uniform paths, 250 epochs, batch 64, SGD cosine 0.025 -> 0.001; the derived "
          "cell is the best of 100 random paths (RspsConfig)."))

# NAS-Bench-201's space (--space nas-bench-201): its network (setting nb201; model_overrides
# C, N and the search cells' BN: nasforge/oneshot/nas_bench_201.py Nb201Macro) and the
# settings of its search scripts (docs/reference.md section 13): C=16, N=5, the training set
# split in halves, DARTS 50 epochs, GDAS/SETN/RSPS 250 epochs, batch 64, cosine 0.025 ->
# 0.001; ENAS 250 epochs, batch 128, 0.05; search cells' BN without affine parameters.
NB201_MODEL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|" \
              "nor_conv_3x3~1|nor_conv_3x3~2|"  # the table's best CIFAR-10 cell (any cell)
NB201_SEARCH = (("C", 16), ("N", 5), ("bn_affine", False), ("bn_running_stats", True))
for _method, _epochs, _batch, _lr, _min_lr in (
        ("darts", 50, 64, 0.025, 0.001), ("gdas", 250, 64, 0.025, 0.001),
        ("rsps", 250, 64, 0.025, 0.001), ("spos", 250, 64, 0.025, 0.001),
        ("enas", 250, 128, 0.05, 0.0)):
    register_recipe(Recipe(
        name=f"{_method}-nb201",
        defaults=Defaults(model=NB201_MODEL, setting="nb201", model_overrides=NB201_SEARCH,
                          data="cifar10"),
        inputs=Inputs(split="search", val_size=25000),
        schedule=Schedule(epochs=_epochs, batch_size=_batch, lr=_lr, min_lr=_min_lr),
        optim=Optim(momentum=0.9, weight_decay=5e-4),
        regularisation=Regularisation(grad_clip=5.0),
        augmentation=Augmentation(cutout=0),
        notes=f"{_method} on NAS-Bench-201's space with its search scripts' settings: C=16, "
              f"N=5, half of the training set for the weights, half for the architecture, "
              f"{_epochs} epochs, batch {_batch}, SGD cosine {_lr} -> {_min_lr}, search-cell "
              f"BN without affine parameters (GPU scale)."))

register_recipe(Recipe(
    name="oneshot-nb201-cpu",
    defaults=Defaults(model=NB201_MODEL, setting="nb201",
                      model_overrides=(("C", 8), ("N", 1), ("bn_affine", False),
                                       ("bn_running_stats", True)), data="cifar10"),
    inputs=Inputs(split="search", train_subset=5000, val_size=2500),
    schedule=Schedule(epochs=10, batch_size=64, lr=0.025, min_lr=0.001),
    optim=Optim(momentum=0.9, weight_decay=5e-4),
    regularisation=Regularisation(grad_clip=5.0),
    augmentation=Augmentation(cutout=0),
    speed=Speed(eval_batch_size=500, cpu_channels_last=True),
    notes="A one-shot search on NAS-Bench-201's space on real CIFAR-10 within 15 minutes "
          "to half an hour on one CPU thread (darts: about 2 minutes per epoch on a shared "
          "2-core machine): C=8, N=1 (3 search cells), a fixed 5,000 training images (78 "
          "steps of 64 per epoch), 2,500 validation images, 10 epochs; the table scores the "
          "derived cell at its own size (C=16, N=5)."))

register_recipe(Recipe(
    name="oneshot-nb201-smoke",
    defaults=Defaults(model=NB201_MODEL, setting="nb201",
                      model_overrides=(("C", 4), ("N", 1)), data="synthetic"),
    inputs=Inputs(split="search", train_subset=256, val_size=128),
    schedule=Schedule(epochs=2, batch_size=64, lr=0.025, min_lr=0.001),
    optim=Optim(weight_decay=5e-4),
    regularisation=Regularisation(grad_clip=5.0),
    augmentation=Augmentation(cutout=0),
    speed=Speed(eval_batch_size=256),
    notes="A one-shot search on NAS-Bench-201's space in well under a minute on CPU "
          "(synthetic data, C=4, N=1): a smoke test of the plumbing."))

# The DARTS space (--space darts): DARTS' search network (setting darts, DARTS' macro; the
# search cells' BN: nasforge/oneshot/darts_space.py DartsMacro) with DARTS' search settings.
register_recipe(Recipe(
    name="oneshot-darts",
    defaults=Defaults(model="darts_v2", setting="darts",
                      model_overrides=(("N", 2), ("filters", 16)), data="cifar10"),
    inputs=Inputs(split="search", val_size=25000),
    schedule=Schedule(epochs=50, batch_size=64, lr=0.025, min_lr=0.001),
    optim=Optim(momentum=0.9, weight_decay=3e-4),
    regularisation=Regularisation(grad_clip=5.0),
    augmentation=Augmentation(cutout=0),
    notes="A one-shot search on the DARTS space with DARTS' search settings (Liu et al. 2019): "
          "8 cells of C=16 (N=2), half of the training set for the weights, half for the "
          "architecture, batch 64, 50 epochs, SGD 0.025 cosine to 0.001, wd 3e-4, search-cell "
          "BN without affine parameters (DartsMacro's default; GPU scale)."))

register_recipe(Recipe(
    name="oneshot-darts-smoke",
    defaults=Defaults(model="darts_v2", setting="darts",
                      model_overrides=(("N", 1), ("filters", 4)), data="synthetic"),
    inputs=Inputs(split="search", train_subset=64, val_size=64),
    schedule=Schedule(epochs=2, batch_size=32, lr=0.025, min_lr=0.001, search_candidates=4),
    optim=Optim(momentum=0.9, weight_decay=3e-4),
    regularisation=Regularisation(grad_clip=5.0),
    augmentation=Augmentation(cutout=0),
    speed=Speed(eval_batch_size=64),
    notes="A one-shot search on the DARTS space in well under a minute on one CPU thread "
          "(synthetic data, 5 cells of C=4, 2 steps of 32 images per epoch; spos's search "
          "phase 4 paths): a check of the plumbing, not of what it finds."))

register_recipe(Recipe(
    name="oneshot-cifar-cpu",
    defaults=Defaults(model="nasnet_a", setting="cifar",
                      model_overrides=(("N", 1), ("filters", 8)), data="cifar10"),
    inputs=Inputs(split="search", train_subset=10000, val_size=1000),
    schedule=Schedule(epochs=8, batch_size=64, lr=0.05, min_lr=0.001),
    optim=Optim(weight_decay=3e-4),
    regularisation=Regularisation(grad_clip=5.0),
    augmentation=Augmentation(cutout=0),
    speed=Speed(eval_batch_size=500, cpu_channels_last=True),
    notes="A one-shot search on real CIFAR-10 within an hour on 2 CPU cores (use it with "
          "--space enas-micro): N=1, F=8, a fixed 10,000 training images (156 steps of 64 per "
          "epoch), 1,000 validation images, 8 epochs (1,248 steps: uniform paths need about "
          "a thousand steps to train a supernet at all; 234 steps over 13 ops did not)."))
