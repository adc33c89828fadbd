"""advfeatures: reproduce "Adversarial Examples Are Not Bugs, They Are Features" (Ilyas et al., 2019)."""

from .data import load_dataset, load_dataset_file, save_dataset_file
from .errors import BadInputError, CorruptFileError
from .models import build_model, load_model, save_model

__version__ = "0.1.0"
