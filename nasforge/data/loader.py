"""A device-resident batch loader for small-image data (the airbench recipe, on any device)."""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from nasforge.data.types import ImageData

PAD_MODES = ("reflect", "zero")
FLIP_MODES = ("random", "alternate")


class DeviceLoader:
    """Batches of normalised, augmented images from a uint8 set that lives on ``device``.

    Built once per training run and split (``train=True`` for training, ``train=False`` for
    validation/test); the whole uint8 set and its labels are copied to ``device`` here, once.
    Iterating gives one epoch of ``(images, labels)``: ``images`` of ``dtype`` (N, C, H, W)
    (channels_last strides when ``channels_last``), ``labels`` int64, both on ``device``.

    ``train=True``: each epoch draws, in this order, from ``generator`` (on the generator's
    device; moved to ``device`` once per epoch, so there is no per-step host-to-device copy):
    ``perm = randperm(N)``; if ``crop_padding`` p > 0, ``shift = randint(-p, p + 1, (N, 2))``
    (row, column); if ``flip``, ``flip = randint(0, 2, (N,))``; if ``cutout`` L > 0,
    ``cy = randint(0, H, (N,))`` then ``cx = randint(0, W, (N,))``. Draw ``i`` applies to the
    ``i``-th image of the epoch (``perm[i]``). The loader never touches torch's global RNG.
    ``flip_mode="alternate"`` (airbench): the flip draw happens in the first epoch only and
    belongs to image *j* (not to position ``i``); in epoch ``e`` (0-based) image ``j`` is
    flipped iff ``base[j] xor (e odd)``, so every image is seen in both orientations in any
    two consecutive epochs.
    The augmentation, with tensor ops on ``device``:

    - random crop: output pixel (r, c) = padded source pixel (r + dy, c + dx), i.e. a
      pad-by-p-then-crop at offset (p + dy, p + dx); ``pad_mode="reflect"`` mirrors without
      repeating the edge (``F.pad(mode="reflect")``, as airbench does), ``"zero"`` pads with
      black (torchvision ``RandomCrop(padding=p)``, DARTS/NASNet);
    - horizontal flip of the cropped image where ``flip`` is 1;
    - conversion to ``dtype`` and normalisation ``(x / 255 - mean) / std``;
    - cutout: the square rows ``cy - L//2 .. cy - L//2 + L - 1`` x the same for columns,
      clipped to the image, set to 0 in normalised units (= the mean colour; DeVries & Taylor
      and DARTS apply it after normalisation).

    Cost: the draws are turned into crop offsets and cutout masks once per epoch, vectorised
    over the set; a batch is then one gather of its images, their padding (and mirroring,
    where flipped) in a batch-sized buffer, one ``index_select`` (crop and flip together), one
    conversion, two in-place ops for the normalisation and one for cutout. Memory: the uint8
    set itself (on the CPU, ``data.images`` is used as it is, with no copy: a search's
    children share it through Ray's object store), plus an (N, H, W) bool cutout mask per
    epoch. (Until 2026-12 the set was kept padded and mirrored, 3.1x its size for CIFAR with
    p=4: 0.43 GB of every search child's worker for the 45,000 training images; the batches
    are the same.)
    ``train=False``: the plain uint8 set, no shuffling and no augmentation, consecutive
    slices. ``drop_last`` defaults to ``train``. ``len()`` is the number of batches per epoch.

    ``state_dict()`` holds the generator state and the epoch counter; the draws for an epoch
    happen when its iteration starts, so a state saved after an epoch (or during one) resumes
    at the start of the next epoch with exactly the batches an uninterrupted run would see.
    """

    def __init__(self, data: ImageData, batch_size: int, *, device="cpu", train: bool = True,
                 mean: Sequence[float], std: Sequence[float], crop_padding: int = 4,
                 pad_mode: str = "reflect", flip: bool = True, flip_mode: str = "random",
                 cutout: int = 0,
                 drop_last: bool | None = None, generator: torch.Generator | None = None,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32):
        if not isinstance(data, ImageData):
            raise TypeError(f"DeviceLoader needs an ImageData, got {type(data).__name__}")
        n, c, h, w = data.images.shape
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values (one per channel), got "
                             f"{len(mean)}/{len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if flip_mode not in FLIP_MODES:
            raise ValueError(f"flip_mode must be one of {FLIP_MODES}, got {flip_mode!r}")
        if crop_padding < 0 or cutout < 0:
            raise ValueError("crop_padding and cutout must be >= 0")
        if pad_mode == "reflect" and crop_padding >= min(h, w):
            raise ValueError(f"reflect padding {crop_padding} must be smaller than the image "
                             f"({h}x{w})")
        if train and generator is None:
            raise ValueError("DeviceLoader(train=True) needs an explicit torch.Generator")
        self.device = torch.device(device)
        self.train = bool(train)
        self.batch_size = int(batch_size)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.crop_padding = int(crop_padding) if self.train else 0
        self.pad_mode = pad_mode
        self.flip = bool(flip) and self.train
        self.flip_mode = flip_mode
        self._flip_base = None  # alternate flips: image j's flip in even epochs (bool, (N,))
        self.cutout = int(cutout) if self.train else 0
        self.generator = generator
        self.channels_last = bool(channels_last)
        self.dtype = dtype
        self.epoch = 0

        self.shape = (n, c, h, w)
        self.labels = data.labels.to(self.device)
        mean_t = torch.tensor(mean, dtype=torch.float64)
        std_t = torch.tensor(std, dtype=torch.float64)
        # (x / 255 - mean) / std == x * scale + bias
        self._scale = (1.0 / (255.0 * std_t)).to(self.device, dtype).view(1, c, 1, 1)
        self._bias = (-mean_t / std_t).to(self.device, dtype).view(1, c, 1, 1)
        self._rows = torch.arange(h, device=self.device)
        self._cols = torch.arange(w, device=self.device)
        self.images = data.images.to(self.device).contiguous()  # the one host-to-device copy

    def __len__(self) -> int:
        n = self.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    # --- resumable state ------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"epoch": self.epoch,
                 "generator": None if self.generator is None else self.generator.get_state()}
        if self._flip_base is not None:
            state["flip_base"] = self._flip_base.clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        base = state.get("flip_base")
        self._flip_base = None if base is None else base.to(
            self.generator.device if self.generator is not None else "cpu", torch.bool)
        if state.get("generator") is not None:
            if self.generator is None:
                raise ValueError("this DeviceLoader has no generator to restore")
            self.generator.set_state(state["generator"].to("cpu", torch.uint8))

    # --- iteration --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.epoch += 1
        if not self.train:
            return self._eval_batches()
        return self._train_batches(self._draw())

    def _draw(self) -> dict:
        """This epoch's random draws, turned into per-position gather offsets and masks.

        All of it is computed here, once per epoch and vectorised over the whole set, so a
        batch costs a handful of tensor ops: ``offset[i]`` is the flat offset (in pixels) of
        the first output row of the ``i``-th crop in its padded (and, where ``flip[i]``,
        mirrored) image, ``keep[i]`` the cutout mask.
        """
        n, _, h, w = self.shape
        g = self.generator
        kw = dict(generator=g, device=g.device)
        perm = torch.randperm(n, **kw)
        p = self.crop_padding
        shift = torch.randint(-p, p + 1, (n, 2), **kw) if p > 0 else None
        flip = None
        if self.flip and self.flip_mode == "random":
            flip = torch.randint(0, 2, (n,), **kw).bool()
        elif self.flip:  # alternate: a per-image draw in the first epoch, then every other
            if self._flip_base is None:
                self._flip_base = torch.randint(0, 2, (n,), **kw).bool()
            odd = (self.epoch - 1) % 2 == 1  # __iter__ counted this epoch already
            flip = self._flip_base.to(perm.device)[perm] ^ odd
        if self.cutout > 0:
            cy = torch.randint(0, h, (n,), **kw)
            cx = torch.randint(0, w, (n,), **kw)
        dev = self.device
        perm = perm.to(dev)  # the draws move to the data's device once per epoch
        y = torch.full_like(perm, p) if shift is None else shift[:, 0].to(dev) + p
        x = torch.full_like(perm, p) if shift is None else shift[:, 1].to(dev) + p
        if flip is not None:
            # crop-then-mirror of a padded image at column x == crop of its mirror at 2p - x
            flip = flip.to(dev)
            x = torch.where(flip, 2 * p - x, x)
        draws = {"perm": perm, "flip": flip, "offset": y * (w + 2 * p) + x}
        if self.cutout > 0:
            half = self.cutout // 2
            y0, x0 = (cy.to(dev) - half)[:, None], (cx.to(dev) - half)[:, None]
            in_r = (self._rows >= y0) & (self._rows < y0 + self.cutout)  # (N, H)
            in_c = (self._cols >= x0) & (self._cols < x0 + self.cutout)  # (N, W)
            draws["keep"] = ~(in_r[:, :, None] & in_c[:, None, :])  # (N, H, W) bool
        return draws

    def _eval_batches(self):
        n = self.shape[0]
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            x = self.images[sl].to(self.dtype, memory_format=fmt)
            yield x.mul_(self._scale).add_(self._bias), self.labels[sl]

    def _train_batches(self, draws: dict):
        n, c, h, w = self.shape
        p = self.crop_padding
        hp, wp = h + 2 * p, w + 2 * p
        row_offsets = self._rows * wp
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        keep = draws.get("keep")
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = draws["perm"][sl]
            b = len(idx)
            windows = self._padded_windows(self.images.index_select(0, idx),
                                           None if draws["flip"] is None else draws["flip"][sl])
            base = torch.arange(b, device=self.device) * (hp * wp) + draws["offset"][sl]
            starts = base[:, None] + row_offsets  # (B, H) first pixel of each row
            crops = windows.index_select(0, starts.view(-1)).view(b, h, w, c)
            x = crops.permute(0, 3, 1, 2).to(self.dtype, memory_format=fmt)
            x.mul_(self._scale).add_(self._bias)
            if keep is not None:
                x.mul_(keep[sl, None])
            yield x, self.labels[idx]

    def _padded_windows(self, images: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
        """Pad a batch's ``images`` (and mirror those where ``flip``); return a view of its
        crop rows. Called once per training batch.

        The padded batch is ``(B, H + 2p, W + 2p, C)`` uint8, channels last. Every output row
        of every crop is then one contiguous run of ``W * C`` bytes of it, so the batch's
        crops (and flips) are one ``index_select`` of ``B * H`` such runs from ``unfold``'s
        window view, with no per-pixel index arithmetic.
        """
        _, c, h, w = self.shape
        p = self.crop_padding
        x = images.permute(0, 2, 3, 1)  # NHWC view
        if p and self.pad_mode == "reflect":
            # F.pad(mode="reflect") index maps; index_select works on uint8 on every device
            hp, wp = h + 2 * p, w + 2 * p
            ridx = (h - 1) - ((h - 1) - (torch.arange(hp, device=self.device) - p).abs()).abs()
            cidx = (w - 1) - ((w - 1) - (torch.arange(wp, device=self.device) - p).abs()).abs()
            out = x.index_select(1, ridx).index_select(2, cidx)
        else:
            out = torch.zeros((len(x), h + 2 * p, w + 2 * p, c), dtype=torch.uint8,
                              device=self.device)
            out[:, p:p + h, p:p + w] = x
        if flip is not None:
            out = torch.where(flip[:, None, None, None], out.flip(2), out)
        return out.contiguous().view(-1).unfold(0, w * c, c)  # row start pixel -> W*C bytes
