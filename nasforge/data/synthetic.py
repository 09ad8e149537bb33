"""A deterministic synthetic image classification set for smoke runs and tests.

Each class has its own tint (a mean colour) and its own grating orientation; each image adds a
random phase, a random per-image colour offset, a random brightness and pixel noise. Colour
alone separates the classes only partly, the orientation needs spatial filters, so a small
network learns it quickly to well above chance but not instantly to 100%. The signal survives
random crops and horizontal flips (a flip mirrors the orientation, which another class does
not use: orientations are spread over 0..90 degrees).
"""
from __future__ import annotations

import numpy as np

N_TRAIN = 10_000
N_TEST = 2_000
NUM_CLASSES = 10
SIZE = 32
CLASSES = tuple(f"class{i}" for i in range(NUM_CLASSES))


def make_images(n: int, *, num_classes: int = NUM_CLASSES, size: int = SIZE,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (n, 3, size, size), labels int64 (n,))``, a pure function of its args.

    Labels cycle through the classes (balanced) in a seeded shuffled order.
    """
    rng = np.random.default_rng(seed)
    class_rng = np.random.default_rng(12345)  # class prototypes do not depend on ``seed``
    tints = class_rng.uniform(0.3, 0.7, size=(num_classes, 3)).astype(np.float32)
    angles = np.linspace(0.0, np.pi / 2, num_classes, endpoint=False)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = np.empty((n, 3, size, size), np.uint8)
    for start in range(0, n, 1024):  # chunks keep the float temporaries small
        lab = labels[start:start + 1024]
        m = len(lab)
        theta = angles[lab][:, None, None]
        phase = rng.uniform(0, 2 * np.pi, size=(m, 1, 1))
        grating = np.sin(2 * np.pi / 8.0 * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
        colour = tints[lab] + 0.08 * rng.standard_normal((m, 3), dtype=np.float32)
        bright = rng.uniform(0.8, 1.2, size=(m, 1, 1, 1)).astype(np.float32)
        img = colour[:, :, None, None] * bright + 0.18 * grating[:, None].astype(np.float32)
        img += 0.08 * rng.standard_normal(img.shape, dtype=np.float32)
        images[start:start + m] = np.clip(np.rint(img * 255), 0, 255)
    return images, labels


def make_synthetic(n_train: int = N_TRAIN, n_test: int = N_TEST, *,
                   num_classes: int = NUM_CLASSES, size: int = SIZE):
    """``((x_train, y_train), (x_test, y_test), classes)`` with disjoint seeds per split."""
    classes = tuple(f"class{i}" for i in range(num_classes))
    return (make_images(n_train, num_classes=num_classes, size=size, seed=1),
            make_images(n_test, num_classes=num_classes, size=size, seed=2), classes)
