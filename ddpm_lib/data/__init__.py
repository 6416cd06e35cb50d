"""Data sets of the book: 2-D toy sets with known densities (:mod:`ddpm_lib.data.toy`) and images in [-1, 1]
(:mod:`ddpm_lib.data.images`: 8×8 digits, Fashion-MNIST, and MNIST/CIFAR-10 through torchvision in Colab).

Every name is importable from ``ddpm_lib.data`` directly.
"""

from .images import (
    DIGITS_LEVELS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    image_to_model_range,
    load_digits,
    load_fashion_mnist,
    load_torchvision,
    read_idx,
)
from .toy import (
    GAUSSIAN_MIXTURE_PRESETS,
    MIXTURE,
    TOY_DATASETS,
    GaussianMixture,
    make_gaussian_mixture,
    make_moons,
    make_swiss_roll,
    toy_sampler,
)
