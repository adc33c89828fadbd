"""Command line: a thin layer over the library. Exit codes: 0 success, 2 bad usage or input, 1 anything else."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from .errors import BadInputError
from .validation import (
    check_compile_backend,
    check_device_name,
    check_eps,
    check_int,
    check_labels,
    check_norm,
    check_output_file,
    check_output_folder,
    check_presets,
    check_real,
    check_seed,
    check_step_size,
)

EPILOG = "Errors print one line; exit code 2 means bad usage or input, 1 anything else."


def _add_data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--dataset", help="registered dataset name (digits, synthetic, cifar10, ...)")
    g.add_argument("--dataset-file", type=Path, help="a .safetensors file written by advfeatures, or a released folder")
    p.add_argument("--data-root", help="folder with the dataset files (default: $ADVFEATURES_DATA or ~/data)")
    p.add_argument("--download", action="store_true", help="download the dataset into --data-root if missing")
    p.add_argument("--limit", type=int, help="use only the first N images")


def build_parser() -> argparse.ArgumentParser:
    from .evaluation import EVAL_RESTARTS, EVAL_STEPS, EVAL_TARGETS
    from .presets import DEFAULT_PRESETS, PRESETS

    parser = argparse.ArgumentParser(
        prog="advfeatures", epilog=EPILOG,
        description="Reproduce 'Adversarial Examples Are Not Bugs, They Are Features' (Ilyas et al., 2019).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "reproduce", help="run the paper's experiments and write results + report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG + "\n\nMany GPUs (or CPU processes, gloo): torchrun --nproc-per-node N -m advfeatures reproduce "
        "...\ntrains with DistributedDataParallel and shards every construction; the constructed datasets are the "
        "same\nwhatever N (each chunk of examples is seeded by its index); only rank 0 writes.",
    )
    r.add_argument("--preset", default=",".join(DEFAULT_PRESETS),
                   help=f"comma-separated presets from {', '.join(PRESETS)} (default: %(default)s)")
    r.add_argument("--out", type=Path, default=Path("runs/default"), help="run directory (default: %(default)s)")
    r.add_argument("--seeds", type=int, default=1, help="repeat the whole pipeline with N seeds (default: 1)")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    r.add_argument("--jobs", type=_jobs, default=None, metavar="N",
                   help="on a CPU, N worker processes sharing the cores, each taking the next stage of any (preset, "
                        "seed) run whose inputs are ready, so one run's independent stages share them too (default: "
                        "one per run, at least 2, at most the cores; 1 on a GPU). Two one-thread processes do more "
                        "work than one on two cores; each gets cores/N threads, which (like "
                        "another machine) can change a seed's floating-point results; the count is recorded in "
                        "results.json")
    r.add_argument("--data-root", help="folder with real datasets (cifar10, restricted_imagenet)")
    r.add_argument("--download", action="store_true", help="download missing real datasets into --data-root")
    r.add_argument("--released", type=Path,
                   help="folder of the authors' released CIFAR-10 datasets: train on them instead of constructing")
    r.add_argument("--standard-model", type=Path, metavar="MODEL.safetensors",
                   help="use this advfeatures checkpoint as D (the standard source) instead of training it: it is "
                   "evaluated, and D_NR, D_rand, D_det and the transfer study are built from it; same for every seed")
    r.add_argument("--robust-model", type=Path, metavar="MODEL.safetensors",
                   help="use this checkpoint as D_adv (the robust source: D_R, Table 9) instead of training it; "
                   "other libraries' files: convert with `advfeatures import-model` first")
    r.add_argument("--full", action="store_true", help="every transfer architecture (slower)")
    r.add_argument("--no-theory", action="store_true", help="skip the Section 4 theory stage")
    r.add_argument("--no-followups", action="store_true",
                   help="skip the Distill discussion's experiments (Nakkiran's D_det_bugs and adversarial squares, "
                        "Goh's robust-feature leakage, Wallace's mislabelled-data control)")
    r.add_argument("--controls", action="store_true",
                   help="also run the controls: D_rand / D_det built from fixed class patterns without any model "
                        "(Keller Jordan's shortcuts), D_rand without correctly labelled images, D_R / D_NR from noise")
    r.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast for training and construction (CUDA, or a CPU with AVX512-BF16/AMX); robust "
                        "accuracy is always measured in float32. Default: the preset's choice (on for synthetic, "
                        "digits, cifar10_cpu and cifar10_fast)")
    r.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC (channels_last) memory format for convolutions: faster on GPUs and on CPUs with oneDNN; "
                        "default: the preset's choice (on for synthetic, digits, cifar10_cpu and cifar10_fast). On a "
                        "CPU it changes a seed's numbers slightly, as the thread count does")
    r.add_argument("--compile", nargs="?", const="inductor", default=False, metavar="BACKEND",
                   help="torch.compile every model (default backend inductor; pays off on GPU and long runs)")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress bars (one line per stage remains, and a status line each minute of a long "
                        "stage); the default when stderr is not a terminal (a log file, CI, nohup)")
    r.add_argument("--autoattack", action="store_true",
                   help="check the evaluation with AutoAttack on the whole test set and record it beside ours "
                   "(needs: pip install 'advfeatures[autoattack]')")
    q = r.add_argument_group("quick-run overrides (change results; changed ones re-run the stages they reach)")
    q.add_argument("--quick", action="store_true", help="tiny everything: checks the pipeline, not the paper")
    q.add_argument("--limit", type=int, help="first N training images (N/2 test images)")
    q.add_argument("--epochs", type=int, help="epochs for every training")
    q.add_argument("--steps", type=int, help="cap on inversion, relabelling and evaluation steps")
    q.add_argument("--eval-restarts", type=int, help="APGD-CE runs per example in evaluation")
    q.add_argument("--eval-targets", type=int, help="APGD-T target classes per example in evaluation (0: none)")
    q.add_argument("--width", type=int, help="width option for every architecture that has one")

    t = sub.add_parser("train", help="train one model (standard or adversarial)", epilog=EPILOG)
    _add_data_args(t)
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--standard", action="store_true", help="standard training (default)")
    mode.add_argument("--adversarial", action="store_true", help="PGD adversarial training")
    t.add_argument("--arch", default="small_cnn", help="model architecture (default: %(default)s)")
    t.add_argument("--width", type=int, help="architecture width option")
    t.add_argument("--num-classes", type=int,
                   help="classes of the model (default: the dataset's; for --dataset-file, the largest label + 1, "
                   "which must leave no class without an example)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--schedule", default="onecycle", help="step, cosine, onecycle or constant")
    t.add_argument("--crop-padding", type=int, default=0)
    t.add_argument("--flip", action="store_true")
    t.add_argument("--norm", default="l2", help="l2 or linf (adversarial training)")
    t.add_argument("--eps", type=float, default=0.5, help="adversarial training radius")
    t.add_argument("--attack-steps", type=int, default=7, help="PGD steps per batch (paper: 7)")
    t.add_argument("--step-size", type=float, help="PGD step size (default eps/5, paper C.3)")
    t.add_argument("--random-start", action="store_true", help="start PGD from a random point in the ball")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", type=Path, required=True, help="where to write the .safetensors model")

    e = sub.add_parser("evaluate", help="clean and robust accuracy of a saved model", epilog=EPILOG)
    e.add_argument("model", type=Path, help="a .safetensors model written by advfeatures")
    _add_data_args(e)
    e.add_argument("--split", default="test", choices=("train", "test"), help="train or test (default: test)")
    e.add_argument("--norm", default="l2", help="l2 or linf")
    e.add_argument("--eps", type=float, nargs="+", default=[0.5], help="one or more radii (a curve)")
    e.add_argument("--steps", type=int, default=EVAL_STEPS, help="APGD steps per run (default: %(default)s)")
    e.add_argument("--restarts", type=int, default=EVAL_RESTARTS, help="APGD-CE runs (default: %(default)s)")
    e.add_argument("--targets", type=int, default=EVAL_TARGETS,
                   help="APGD-T runs, one per top-ranked other class (default: %(default)s)")
    e.add_argument("--autoattack", action="store_true",
                   help="also run AutoAttack standard and print it beside ours "
                   "(needs: pip install 'advfeatures[autoattack]')")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print JSON")

    th = sub.add_parser("theory", help="Section 4: Gaussian model, Theorems 1-3, Figure 4", epilog=EPILOG)
    th.add_argument("--out", type=Path, default=Path("runs/theory"))
    th.add_argument("--seed", type=int, default=0)

    im = sub.add_parser(
        "import-model", epilog=EPILOG,
        help="turn a MadryLab robustness or RobustBench checkpoint into an advfeatures one, without running it",
        description="Read SRC with torch.load(weights_only=True) only (a pickle that needs code is refused, unrun), "
        "match it key for key to one of our architectures, and write an ordinary advfeatures checkpoint, "
        "normalisation included, that load_model and every command accept.",
    )
    im.add_argument("src", type=Path, help="the checkpoint: robustness's checkpoint.pt(.best) or a RobustBench .pt")
    im.add_argument("--out", type=Path, required=True, help="where to write the .safetensors model")
    im.add_argument("--from", dest="library", choices=("robustness", "robustbench"),
                    help="the library that wrote SRC (default: detected from its keys)")
    im.add_argument("--arch", choices=("resnet18", "resnet50", "wide_resnet"),
                    help="our architecture for it (default: detected from its keys)")
    im.add_argument("--dataset", choices=("cifar10", "restricted_imagenet"),
                    help="what it classifies: input size and classes (default: cifar10, or restricted_imagenet "
                    "for a 7x7-stem ImageNet ResNet)")
    return parser


def _load_data(args, split: str = "train"):
    import torch

    from .data import as_tensors, load_dataset, load_dataset_file

    if args.limit is not None and args.limit < 1:
        raise BadInputError(f"--limit must be positive, got {args.limit}")
    if args.dataset_file:
        data = load_dataset_file(args.dataset_file)
        images, labels = data["images"], data["labels"]
    else:
        options = {"download": True} if args.download else {}
        ds = as_tensors(load_dataset(args.dataset, split, args.data_root, **options))
        images, labels = ds.images, ds.labels
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    if images.shape[0] == 0:
        raise BadInputError("the dataset is empty")
    return images, labels.to(torch.int64)


def _num_classes_for_training(args, labels) -> int:
    """The model's class count: --num-classes, else the dataset's, else (a file) the largest label + 1, refused
    when some class below it has no example (one stray label 99 on digits would build a 100-class model)."""
    import torch

    if args.num_classes is not None:
        num_classes = check_int("--num-classes", args.num_classes, low=2)
    elif args.dataset:
        from .data import load_dataset

        num_classes = getattr(load_dataset(args.dataset, "test", args.data_root), "num_classes", None)
        num_classes = num_classes or int(labels.max()) + 1
    else:
        check_labels(labels, None, None, str(args.dataset_file))  # >= 0 before they are counted
        num_classes = int(labels.max()) + 1
        present = int(torch.unique(labels).numel())  # not bincount: a hostile label 2**40 would allocate per class
        if present < num_classes:
            raise BadInputError(
                f"{args.dataset_file}: labels reach {num_classes - 1} but only {present} of the classes "
                f"0..{num_classes - 1} have an example; fix the stray labels, or pass --num-classes {num_classes} "
                "if a model with classes it never sees is what you want"
            )
        if num_classes < 2:
            raise BadInputError(f"{args.dataset_file}: every label is {num_classes - 1}; training needs two classes")
    check_labels(labels, None, num_classes, str(args.dataset_file or args.dataset))
    return num_classes


def cmd_train(args) -> None:
    from .device import resolve_device
    from .models import check_architecture, save_model
    from .training import AdversarialConfig, ModelSpec, TrainConfig, channel_stats, train_new_model

    check_output_file(args.out, suffix=".safetensors")  # before any work: an unwritable --out used to fail after it
    if args.width is not None:
        check_int("--width", args.width, low=1)
    if not args.adversarial:  # given without --adversarial they would be ignored silently
        given = [f for f, v, d in (("--eps", args.eps, 0.5), ("--step-size", args.step_size, None),
                                   ("--attack-steps", args.attack_steps, 7), ("--norm", args.norm, "l2"),
                                   ("--random-start", args.random_start, False)) if v != d]
        if given:
            raise BadInputError(f"{', '.join(given)} only apply to --adversarial training; add --adversarial or "
                                "drop them")
    adv = None
    if args.adversarial:
        adv = AdversarialConfig(check_norm(args.norm, "--norm"), check_eps(args.eps, "--eps", positive=True),
                                check_int("--attack-steps", args.attack_steps, low=1),
                                check_step_size(args.step_size, "--step-size"), args.random_start)
    config = TrainConfig(epochs=check_int("--epochs", args.epochs, low=0),
                         batch_size=check_int("--batch-size", args.batch_size, low=1),
                         lr=check_real("--lr", args.lr, low=0.0, low_open=True), schedule=args.schedule,
                         crop_padding=check_int("--crop-padding", args.crop_padding, low=0), flip=args.flip,
                         adversarial=adv, seed=check_seed(args.seed, "--seed"))
    device = resolve_device(args.device)
    images, labels = _load_data(args, "train")
    if images.shape[-1] != images.shape[-2]:
        raise BadInputError(f"images are {images.shape[-2]}x{images.shape[-1]}; the models take square images")
    num_classes = _num_classes_for_training(args, labels)
    options = {"width": args.width} if args.width is not None else {}
    check_architecture(args.arch, in_channels=images.shape[1], num_classes=num_classes, image_size=images.shape[-1],
                       **options)
    mean, std = channel_stats(images)
    spec = ModelSpec(args.arch, options)
    model, history = train_new_model(spec, images.to(device), labels.to(device), num_classes, config,
                                     mean=mean, std=std, desc="adversarial" if adv else "standard")
    save_model(model, args.out, train=config.as_dict())
    final = f"{history['train_accuracy'][-1]:.3f}" if history["train_accuracy"] else "n/a (0 epochs)"
    print(f"trained {args.arch} ({'adversarial' if adv else 'standard'}) in {history['seconds']:.1f}s; "
          f"final train accuracy {final}; saved {args.out}")


def cmd_evaluate(args) -> None:
    from .device import resolve_device
    from .evaluation import clean_accuracy, robust_accuracy
    from .models import load_model

    if args.steps < 1 or args.restarts < 0 or args.targets < 0 or args.restarts + args.targets == 0:
        raise BadInputError("--steps must be at least 1, --restarts and --targets non-negative and not both 0")
    check_norm(args.norm, "--norm")  # also at --eps 0, where no attack runs
    eps_values = [check_eps(e, "--eps") for e in args.eps]
    if args.autoattack:
        from .autoattack import require_autoattack

        require_autoattack()
    device = resolve_device(args.device)
    model = load_model(args.model, device)
    images, labels = _load_data(args, args.split)
    images, labels = images.to(device), labels.to(device)
    n_classes = model.head.out_features
    c = model.config
    expected = (c["in_channels"], c["image_size"], c["image_size"])
    if tuple(images.shape[1:]) != expected:
        raise BadInputError(f"images are {tuple(images.shape[1:])} but {args.model} expects {expected}; wrong dataset?")
    check_labels(labels, None, n_classes, f"labels for {args.model} ({n_classes} classes)")
    targets = min(args.targets, n_classes - 1)  # APGD-T has at most classes - 1 other classes to aim at
    attack = f"APGD-CE x{args.restarts} + APGD-T x{targets}, {args.steps} steps"
    result = {"clean": clean_accuracy(model, images, labels), "norm": args.norm, "attack": attack, "robust": {}}
    if args.autoattack:
        result["autoattack"] = {}
    for eps in eps_values:
        key = f"{eps:g}"
        result["robust"][key] = robust_accuracy(model, images, labels, args.norm, eps, steps=args.steps,
                                                restarts=args.restarts, targets=args.targets)
        if args.autoattack:
            from .autoattack import autoattack_accuracy

            result["autoattack"][key] = autoattack_accuracy(model, images, labels, args.norm, eps)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"clean accuracy {result['clean']:.4f} on {len(labels)} images")
    for key, acc in result["robust"].items():
        line = f"robust accuracy at {args.norm} eps {key}: ours {acc:.4f} ({attack})"
        if args.autoattack:
            aa = result["autoattack"][key]
            line += f"; AutoAttack standard {aa:.4f} (ours - AutoAttack: {100 * (acc - aa):+.1f} points)"
        print(line, flush=True)


def cmd_theory(args) -> None:
    from .runlock import run_folder_lock
    from .theory import run_theory

    check_output_folder(args.out)
    check_seed(args.seed, "--seed")
    # one run per folder here too (two runs would interleave their figures); no clean-up: --out may be any folder
    with run_folder_lock(args.out, clean=False):
        result = run_theory(args.out, seed=args.seed)
    print(f"theory figures in {args.out}: {', '.join(result.get('figures', []))}")


def cmd_import_model(args) -> None:
    from .interop import import_checkpoint

    if args.out.exists() and args.src.exists() and args.out.resolve() == args.src.resolve():
        raise BadInputError(f"{args.out}: --out is the source file itself; write to another name "
                            f"(e.g. {args.src.stem}.safetensors)")
    check_output_file(args.out, suffix=".safetensors")  # before reading what may be a large checkpoint
    imported = import_checkpoint(args.src, args.out, library=args.library, arch=args.arch, dataset=args.dataset)
    print(f"imported {imported.summary()}; saved {args.out}")


def _jobs(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number or 'auto', got {text!r}")
    return n


def cmd_reproduce(args) -> None:
    from .distributed import init_from_environment, shutdown
    from .pipeline import Overrides, RunOptions, reproduce

    presets = check_presets(tuple(p.strip() for p in args.preset.split(",") if p.strip()))
    for n in ("seeds", "limit", "epochs", "steps", "eval_restarts", "eval_targets", "width"):
        v = getattr(args, n)
        if v is not None and v < (0 if n in ("epochs", "steps", "eval_targets") else 1):
            raise BadInputError(f"--{n.replace('_', '-')} must be positive, got {v}")
    if args.device != "auto":
        check_device_name(args.device)
    check_compile_backend(args.compile)
    check_output_folder(args.out)  # the cheap part of the --out checks, before data is loaded
    options = RunOptions(
        out=args.out, presets=presets, seeds=args.seeds, device=args.device, data_root=args.data_root,
        download=args.download, released=args.released, full=args.full, theory=not args.no_theory,
        followups=not args.no_followups, controls=args.controls, amp=args.amp,
        progress=not args.no_progress and sys.stderr.isatty(), compile=args.compile, channels_last=args.channels_last,
        autoattack=args.autoattack, standard_model=args.standard_model, robust_model=args.robust_model, jobs=args.jobs,
        overrides=Overrides(limit=args.limit, epochs=args.epochs, steps=args.steps, eval_restarts=args.eval_restarts,
                            eval_targets=args.eval_targets, width=args.width, quick=args.quick),
    )
    group = init_from_environment()  # torchrun: one process per GPU (or gloo processes on CPU)
    try:
        reproduce(dataclasses.replace(options, group=group))
    finally:
        shutdown(group)


class _PipeSafe(io.TextIOBase):
    """A text stream that stops writing, silently, once its reader has gone (`| head`, a closed terminal).

    A long run's results go to files; its printed lines are a courtesy. A reader that closes early must not kill
    the run with a BrokenPipeError, so the first EPIPE points the file descriptor at /dev/null (so that Python's
    own flush at exit does not fail either) and every later write is dropped.
    """

    def __init__(self, stream):
        self._stream, self.broken = stream, False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):  # not a real file (captured output in tests)
            pass

    def isatty(self) -> bool:
        return not self.broken and self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")


@contextmanager
def _pipe_safe_output():
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _PipeSafe(sys.stdout), _PipeSafe(sys.stderr)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (torch's are often several)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(err).__name__


COMMANDS = {"reproduce": cmd_reproduce, "train": cmd_train, "evaluate": cmd_evaluate, "theory": cmd_theory,
            "import-model": cmd_import_model}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _pipe_safe_output():
        try:
            COMMANDS[args.command](args)
        except BadInputError as err:
            print(f"advfeatures: error: {_one_line(err)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("advfeatures: interrupted; re-run the same command to resume", file=sys.stderr)
            return 1
        except Exception as err:  # anything else: one line, exit 1
            print(f"advfeatures: failed: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    sys.exit(main())
