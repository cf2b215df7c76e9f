"""Stand-in for torchvision, for the benchmark process only (put on sys.path by bench/speed.py).

denoising-diffusion-pytorch imports ``from torchvision import transforms as T, utils`` at
module import, for its Trainer's data pipeline and image saving. The benchmark builds its
``Unet`` alone and never calls those, and torchvision's wheels do not install beside the
CPU torch build here. These empty modules satisfy the import; any use of them fails loudly.
"""

from . import transforms, utils

__all__ = ["transforms", "utils"]
