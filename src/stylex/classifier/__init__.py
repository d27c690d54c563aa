"""The classifier C that StylEx explains: the built-in SmallCNN, its training, and loading a user's model.

Only this package knows a classifier's input convention. Everything else hands it stylex images
(float [N, 3, H, W] in [-1, 1]) through a `ClassifierAdapter` and gets float32 logits [N, K] back.
"""

from stylex.classifier.adapter import ClassifierAdapter, ClassifierSource, as_classifier, weights_fingerprint
from stylex.classifier.load import load_classifier, load_classifier_from_dict
from stylex.classifier.small_cnn import SmallCNN
from stylex.classifier.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from stylex.classifier.train import ClassifierTrainConfig, train_classifier

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClassifierAdapter",
    "ClassifierSource",
    "ClassifierTrainConfig",
    "InputSpec",
    "SmallCNN",
    "as_classifier",
    "load_classifier",
    "load_classifier_from_dict",
    "train_classifier",
    "weights_fingerprint",
]
