"""Preset `restricted_imagenet`: the paper's 9-superclass ImageNet subset (arXiv 1905.02175), for a GPU.

Needs `--data-root` with an ImageNet folder in the standard train/val layout. Note: `reproduce` holds each
training set as one tensor in memory; at 224x224 that is far beyond a typical machine, so pass
`--image-size 64` (or 128) unless the host has the memory (see README, "Running the paper at full scale").
"""

from ..training import AdversarialConfig, ModelSpec, TrainConfig
from . import EvalConfig, InversionConfig, Preset, RelabelConfig, ThreatModel

PAPER_RESTRICTED_IMAGENET = {
    "D": {"clean": 0.966, "robust": None},
    "D_rand": {"clean": 0.879, "robust": None},
    "D_det": {"clean": 0.644, "robust": None},
    "threat": "Restricted ImageNet, ResNet-50, L2 eps 0.5",
}


def _train(**changes) -> TrainConfig:
    base = dict(
        epochs=150, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,  # authors' library defaults
        schedule="step", lr_drop_at=2 / 3, crop_padding=0, flip=True,
    )
    return TrainConfig(**{**base, **changes})


def preset() -> Preset:
    return Preset(
        name="restricted_imagenet",
        dataset="restricted_imagenet",
        description="Restricted ImageNet (9 superclasses), ResNet-50",
        threat=ThreatModel("l2", 0.5),  # evaluation eps in the paper's figures
        model=ModelSpec("resnet50", {"stem": "imagenet"}),
        train=_train(),
        adversarial_train=_train(adversarial=AdversarialConfig("l2", 3.0, steps=7)),  # C.3: eps 3.0
        constructed_train={
            "D_R": _train(lr=0.01, schedule="constant"),  # Table 3: lr 0.01, batch 128, no drop, augmentation
            "D_NR": _train(lr=0.01, schedule="constant"),
            "D_rand": _train(lr=0.01, batch_size=256, schedule="constant", flip=False),  # Table 3
            "D_det": _train(lr=0.05, batch_size=256, schedule="constant", flip=False),  # Table 3
            "D_det_unleaked": _train(lr=0.05, batch_size=256, schedule="constant", flip=False),
        },
        inversion=InversionConfig(steps=2000, step_size=1.0, start="image"),  # C.4 / Table 5
        relabel=RelabelConfig(eps=3.0, steps=100, step_size=0.1),  # C.5 / Table 6
        evaluation=EvalConfig(curve_eps=[0.5, 1.0, 2.0], curve_limit=1000, check_limit=1000),
        transfer_models=[ModelSpec("resnet18", {"stem": "imagenet"}), ModelSpec("resnet50", {"stem": "imagenet"})],
        transfer_models_full=[ModelSpec("resnet18", {"stem": "imagenet"}), ModelSpec("resnet50", {"stem": "imagenet"})],
        dataset_options={"size": 224},
        paper=PAPER_RESTRICTED_IMAGENET,
    )
