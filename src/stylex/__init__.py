"""StylEx: explain an image classifier by training a GAN whose StyleSpace holds what the classifier uses.

Lang et al., "Explaining in Style: Training a GAN to explain a classifier in StyleSpace", ICCV 2021.
Nothing heavy happens at import: submodules are imported where they are used.
"""

__version__ = "0.1.0"
