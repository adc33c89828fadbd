"""Preset `cifar10_cpu`: every stage of the paper on real CIFAR-10 on 2 CPU cores, in 47 minutes per seed with the
follow-ups (measured alone on 2 AMD EPYC cores with AVX512-BF16, two one-thread worker processes; benchmarks/RESULTS.md,
"cifar10_cpu").

Run with `--data-root` pointing at a folder holding `cifar-10-batches-py/` (or `--download` when online). The
paper's threat model is kept (L2 eps 0.5 for adversarial training and D_R / D_NR, 0.25 for evaluation) except for
D_rand / D_det, built at eps 1.0 because eps 0.5 fools this weaker network too rarely (measured, see `relabel`); what
shrinks is the scale, each choice below with its reason. Costs are in image-steps (one forward and backward of
one image). On a CPU with native bf16 (AVX512-BF16 or AMX) a width-16 ResNet-9 in channels_last runs ~1,600
training and ~2,200 input-gradient image-steps per second under bf16 autocast, and ~900 input-gradient steps in
the float32 evaluation (2 cores, benchmarks/speed/cpu_networks.py --layouts --bf16); without native bf16 everything
runs in float32 at about half the speed.

Measured on a JPEG re-encoding of CIFAR-10 (benchmarks/RESULTS.md, "cifar10_cpu"): the numbers are this scale's,
not the paper's (5,000 training images, a 0.4M-parameter network), and the report prints the paper's beside them.
"""

from ..training import AdversarialConfig, ModelSpec, TrainConfig
from . import PAPER_CIFAR10, EvalConfig, FollowupsConfig, InversionConfig, Preset, RelabelConfig, ThreatModel

N_TRAIN = 5_000  # a construction costs steps x N_TRAIN: 5,000 keeps an inversion at 500k image-steps (~4.5 min on
# one of two worker processes, ~3 min on both cores) and a relabelling at 250k
N_TEST = 1_000  # +-1.5 points standard error at 50%; the APGD cascade on a robust model costs ~400 steps/point
# Attack batches of 128 (inversion, relabelling, evaluation): measured 1.2-1.3x the image-steps per second of 512 on
# 2 cores, 256 in between (benchmarks/speed/cifar_stages.py --attack-batch; benchmarks/RESULTS.md, "cifar10_cpu")
CPU_BATCH = 128


def _train(**changes) -> TrainConfig:
    # One-cycle SGD (fast convergence in few epochs, no schedule tuning), crops and flips as in the paper's
    # training. 30 epochs, not 15: the standard model reached 72.6% instead of 62% (seed 0), so it underfits less
    # and carries more of the non-robust features the relabelled sets are made of; 150k image-steps (~1.5 min).
    base = dict(epochs=30, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                crop_padding=4, flip=True)
    return TrainConfig(**{**base, **changes})


def preset() -> Preset:
    net = ModelSpec("resnet9", {"width": 16})  # global average pooling before the head, as the paper's ResNets;
    # its arithmetic sits in few convolutions at low resolution, which the CPU runs faster than a thin ResNet-18.
    # FastNet at width 16 (models/fast.py) trains 2.8x faster here with a similar standard model (70.9 / 23.7 vs
    # 72.6 / 27.5 at eps 0.25, seed 0), but a partial tier run with it lowered D_det by 10 points and D_NR's clean
    # accuracy by 18, so the tier keeps ResNet-9 (benchmarks/RESULTS.md, "cifar10_cpu").
    return Preset(
        name="cifar10_cpu",
        dataset="cifar10",
        description=f"CIFAR-10 on a CPU: first {N_TRAIN} training / {N_TEST} test images, ResNet-9 width 16",
        threat=ThreatModel("l2", 0.25),  # evaluation eps of the paper's Figure 2 / Table 1
        model=net,
        train=_train(),
        # paper C.3: L2 PGD at eps 0.5, 7 steps of eps/5 from the clean image (8x a standard epoch's cost)
        adversarial_train=_train(adversarial=AdversarialConfig("l2", 0.5, steps=7)),
        constructed_train={
            "D_R": _train(),
            "D_NR": _train(),
            # Table 3: lr 0.01 for D_rand. It matters here: lr 0.1 left D_rand at chance (10.5%), lr 0.01 gave
            # 30.0% on the same D_rand (seed 0, benchmarks/RESULTS.md)
            "D_rand": _train(lr=0.01),
            "D_det": _train(crop_padding=0, flip=False),  # Table 3: lr 0.1, no augmentation for D_det
            "D_det_unleaked": _train(crop_padding=0, flip=False),
        },
        # paper C.4: normalised steps of 0.1 from another training image; 100 steps instead of 1000 (the
        # calibration in the issue saw D_R's robustness well above D_NR's already at 100)
        inversion=InversionConfig(steps=100, step_size=0.1, start="image", batch_size=CPU_BATCH),
        # paper C.5: targeted L2 PGD, 100 steps, but at eps 1.0 (steps of 0.2), not 0.5: a measured departure. At
        # eps 0.5 the targeted attack reached its target on only 61% of the training images against this 73%-clean
        # network (the paper's 95% ResNet-50 is fooled almost always), so 39% of D_det was original images under a
        # wrong label. At eps 1.0: 97% success, and the robust model still reads the original class as often (71%
        # vs 71%, target 4%), so no robust target features leak in. On held-out training images 5000..5999, seed 0:
        # D_rand 31.5 -> 35.4%, D_det 15.8 -> 25.6% (benchmarks/RESULTS.md, "cifar10_cpu").
        # 50 steps of 0.2, not 100: on the first 1,000 training images (seed 0) they reach the target as often
        # (D_det 97.6 vs 97.7%, D_rand 95.9 vs 96.1%, Nakkiran's D_det_bugs 97.5 vs 97.5% with its ensemble still
        # reading the original class on 100%), 0.14 from the 100-step images, in half the time
        # (benchmarks/records/relabel_steps.md). The transfer attacks (Figure 3) take the same steps.
        relabel=RelabelConfig(eps=1.0, steps=50, step_size=0.2, batch_size=CPU_BATCH),
        # The APGD cascade (100 steps, 1 APGD-CE run, APGD-T toward 3 classes, not AutoAttack's 9) on all N_TEST
        # test images: on D, D_adv, D_R and D_NR of seed 0 (bb75d37's run), 3 targets gave the 9-target cascade's
        # numbers within 0.1 point (27.5 / 50.8 / 32.7 / 3.9 against 27.4 / 50.8 / 32.7 / 3.9) in 42% of its time
        # (benchmarks/compare/apgd_targets.py). The 9-target cascade is AutoAttack's first two attacks; its other
        # two (FAB-T, Square) broke no further point in the checks so far (2 seeds x 200 images, FastNet-16 100).
        # AutoAttack on all 1,000 (`--autoattack`, ~1 h per seed here) has not been run for this preset. The curve's
        # other radii on the first 500 (its threat-model point is the full-strength result, not attacked twice);
        # the per-run AutoAttack check on 100 (its Square and FAB-T runs cost minutes per robust model on a CPU),
        # paired with our per-image results on the same images.
        evaluation=EvalConfig(targets=3, curve_eps=[0.25, 0.5, 1.0], curve_limit=500, check_limit=100,
                              batch_size=CPU_BATCH),
        # Figure 3 at small scale: the source and two other families, all at width 16
        transfer_models=[net, ModelSpec("resnet18", {"width": 16}), ModelSpec("vgg16_bn", {"width": 16})],
        transfer_models_full=[
            net, ModelSpec("resnet18", {"width": 16}), ModelSpec("vgg16_bn", {"width": 16}),
            ModelSpec("inception", {"width": 8}), ModelSpec("densenet121", {"width": 8}),
        ],
        limit_train=N_TRAIN,
        limit_test=N_TEST,
        # bf16 autocast for training and construction where the CPU has it (evaluation stays float32):
        # 2.3x the float32 rate of this network, in channels_last
        amp=True,
        channels_last=True,
        paper=PAPER_CIFAR10,
        # Wallace's weak teacher had 62.5% train accuracy. Measured on this data (teacher seed; train / test %):
        # 1, 2, 3, 5, 8, 11 epochs give 35/34, 40/40, 41/39, 49/45, 55/53, 64/59; 11 epochs is his teacher's
        # strength. Nakkiran's K = 2 as in the other presets (each member is one more 30-epoch D training).
        followups=FollowupsConfig(teacher_epochs=11),
    )
