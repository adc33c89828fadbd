"""Preset `cifar10`: the paper's CIFAR-10 setting (arXiv 1905.02175, Appendix C), for a GPU and real data.

Run with `--data-root` pointing at a folder holding `cifar-10-batches-py/` (or `--download` when online).
On a CPU use `--quick` (a few hundred images, tiny widths, one epoch): it checks the pipeline, not the paper.
"""

from ..training import AdversarialConfig, ModelSpec, TrainConfig
from . import PAPER_CIFAR10, EvalConfig, InversionConfig, Preset, RelabelConfig, ThreatModel


def _train(**changes) -> TrainConfig:
    base = dict(
        epochs=150,  # the authors' library default (paper: curves run to ~200)
        batch_size=128,  # Table 3
        lr=0.1,  # Table 3 (D, D_R, D_NR, D_det)
        momentum=0.9, weight_decay=5e-4,  # Table 3
        schedule="step", lr_drop_at=2 / 3,  # Table 3: one 10x drop (here at epoch 100)
        crop_padding=4, flip=True,  # authors' augmentation (their colour jitter and 2-degree rotation omitted)
        warmup_epochs=0,
    )
    return TrainConfig(**{**base, **changes})


def preset() -> Preset:
    return Preset(
        name="cifar10",
        dataset="cifar10",
        description="CIFAR-10, ResNet-50 (CIFAR variant), the paper's Table 3 / C.3-C.5 settings",
        threat=ThreatModel("l2", 0.25),  # evaluation eps in the paper's figures
        model=ModelSpec("resnet50"),  # paper: ResNet-50, CIFAR variant
        train=_train(),
        # C.3: L2 PGD, eps 0.5, 7 steps of eps/5 from the clean image
        adversarial_train=_train(adversarial=AdversarialConfig("l2", 0.5, steps=7)),
        constructed_train={
            "D_R": _train(),  # Table 3: lr 0.1, batch 128, drop, augmentation
            "D_NR": _train(),
            "D_rand": _train(lr=0.01),  # Table 3: lr 0.01, augmentation
            "D_det": _train(crop_padding=0, flip=False),  # Table 3: lr 0.1, no augmentation
            "D_det_unleaked": _train(crop_padding=0, flip=False),
        },
        inversion=InversionConfig(steps=1000, step_size=0.1, start="image"),  # C.4 / Table 5
        relabel=RelabelConfig(eps=0.5, steps=100, step_size=0.1),  # C.5 / Table 6
        # The authors advise more than 7 steps for evaluation; Appendix D.2 goes to 2500 with <= 2 points change.
        evaluation=EvalConfig(curve_eps=[0.25, 0.5, 1.0], curve_limit=1000, check_limit=1000),
        transfer_models=[ModelSpec("resnet18"), ModelSpec("resnet50"), ModelSpec("vgg16_bn")],
        transfer_models_full=[
            ModelSpec("vgg16_bn"), ModelSpec("inception"), ModelSpec("resnet18"), ModelSpec("densenet121"),
            ModelSpec("resnet50"),
        ],  # Figure 3's five architectures
        paper=PAPER_CIFAR10,
    )
