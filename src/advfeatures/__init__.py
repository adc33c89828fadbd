"""advfeatures: reproduce "Adversarial Examples Are Not Bugs, They Are Features" (Ilyas et al., 2019)."""

__version__ = "0.1.0"

from .construct import (  # noqa: E402
    build_non_robust_dataset,
    build_relabelled_dataset,
    build_robust_dataset,
)
from .data import PlantedFeatures, load_dataset, load_dataset_file, save_dataset_file  # noqa: E402
from .errors import BadInputError, CorruptFileError  # noqa: E402
from .evaluation import clean_accuracy, robust_accuracy, robust_accuracy_curve, transfer_rate  # noqa: E402
from .models import build_model, load_model, save_model  # noqa: E402
from .training import AdversarialConfig, ModelSpec, TrainConfig, train_model, train_new_model  # noqa: E402

__all__ = [
    "AdversarialConfig", "BadInputError", "CorruptFileError", "ModelSpec", "PlantedFeatures", "TrainConfig",
    "build_model", "build_non_robust_dataset", "build_relabelled_dataset", "build_robust_dataset", "clean_accuracy",
    "load_dataset", "load_dataset_file", "load_model", "robust_accuracy", "robust_accuracy_curve", "save_dataset_file",
    "save_model", "train_model", "train_new_model", "transfer_rate",
]
