"""Training: learns, is repeatable from a seed, resumes from its epoch checkpoint, saves loadable models."""

import pytest
import torch

from advfeatures import BadInputError, CorruptFileError, build_model, load_dataset, load_model, save_model
from advfeatures.evaluation import clean_accuracy, robust_accuracy
from advfeatures.training import AdversarialConfig, ModelSpec, TrainConfig, augment, learning_rate, train_new_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _cfg(**kw):
    return TrainConfig(**{**dict(epochs=4, batch_size=64, lr=0.05, schedule="onecycle"), **kw})


def test_standard_training_learns_and_is_repeatable(digits):
    train, test = digits
    spec = ModelSpec("small_cnn", {"width": 16})
    a, _ = train_new_model(spec, train.images, train.labels, 10, _cfg(), progress=False)
    b, _ = train_new_model(spec, train.images, train.labels, 10, _cfg(), progress=False)
    assert clean_accuracy(a, test.images, test.labels) > 0.85
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_adversarial_training_buys_robustness(digits):
    train, test = digits
    spec, x, y = ModelSpec("small_cnn", {"width": 16}), test.images[:150], test.labels[:150]
    std, _ = train_new_model(spec, train.images, train.labels, 10, _cfg(epochs=6), progress=False)
    adv_cfg = _cfg(epochs=6, adversarial=AdversarialConfig("l2", 1.0, steps=3))
    rob, _ = train_new_model(spec, train.images, train.labels, 10, adv_cfg, progress=False)
    r_std = robust_accuracy(std, x, y, "l2", 1.0, steps=10, restarts=1)
    r_rob = robust_accuracy(rob, x, y, "l2", 1.0, steps=10, restarts=1)
    assert r_rob > r_std + 0.1, (r_std, r_rob)


@pytest.mark.parametrize("average", [None, 0.9])
def test_resume_from_checkpoint_matches_uninterrupted_run(digits, tmp_path, average):
    train, _ = digits
    x, y = train.images[:256], train.labels[:256]
    spec = ModelSpec("mlp", {"hidden": 32})
    full, _ = train_new_model(spec, x, y, 10, _cfg(epochs=4, weight_average=average), progress=False)
    ckpt = tmp_path / "ckpt.safetensors"
    # crash at the start of epoch 3 (learning_rate raises once progress reaches 2.0), after the epoch-2 checkpoint
    cfg = _cfg(epochs=4, weight_average=average)
    torch.manual_seed(cfg.seed)
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8, hidden=32)
    from advfeatures import training

    original = training.learning_rate
    def crash_after_two_epochs(config, progress):
        if progress >= 2.0:
            raise KeyboardInterrupt
        return original(config, progress)

    training.learning_rate = crash_after_two_epochs
    try:
        with pytest.raises(KeyboardInterrupt):
            training.train_model(model, x, y, cfg, progress=False, checkpoint=ckpt)
    finally:
        training.learning_rate = original
    assert ckpt.exists()
    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = build_model("mlp", in_channels=1, num_classes=10, image_size=8, hidden=32)
    training.train_model(resumed, x, y, cfg, progress=False, checkpoint=ckpt)
    assert not ckpt.exists()
    for pa, pb in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, width=8)
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    loaded = load_model(path)
    assert not loaded.training
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x))
    assert loaded.representation(x).shape == (3, 128)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptFileError):
        load_model(path)
    with pytest.raises(BadInputError, match="no such checkpoint"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(BadInputError, match="unknown model"):
        build_model("transformer", in_channels=1, num_classes=10, image_size=8)


@pytest.mark.parametrize("activation", ["softplus", "silu", "gelu"])
def test_small_cnn_activation_option_survives_a_checkpoint(activation, tmp_path):
    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, width=4, activation=activation)
    relu = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, width=4)
    relu.load_state_dict(model.state_dict())
    x = torch.rand(3, 1, 8, 8)
    assert not torch.allclose(model.eval()(x), relu.eval()(x))  # same weights, different nonlinearity
    save_model(model, tmp_path / "m.safetensors")
    assert torch.equal(load_model(tmp_path / "m.safetensors")(x), model(x))


def test_bad_small_cnn_options_are_bad_input():
    with pytest.raises(BadInputError, match="activation must be one of"):
        build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, activation="tanhh")
    with pytest.raises(BadInputError, match="pool must be"):
        build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, pool="max")


def test_augment_and_schedule():
    cfg = TrainConfig(epochs=10, crop_padding=2, flip=True)
    x = torch.rand(16, 3, 8, 8)
    out = augment(x, cfg, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    # a crop is a shift with zero fill: every output pixel is either 0 or some input pixel (or its mirror)
    assert set(out.unique().tolist()) <= set(x.unique().tolist()) | {0.0}
    step = TrainConfig(epochs=10, lr=0.1, schedule="step", lr_drop_at=0.5)
    assert learning_rate(step, 4.9) == 0.1 and abs(learning_rate(step, 5.0) - 0.01) < 1e-12
    with pytest.raises(BadInputError):
        TrainConfig(schedule="exponential")


def test_compiled_training_matches_eager_and_keeps_the_checkpoint_format(tmp_path):
    """`compile` (here the aot_eager backend: the torch.compile plumbing without code generation) must not change
    what is learned, and the compiled model saves and loads like any other."""
    from advfeatures.attacks import invert_representation

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    config = dict(epochs=2, batch_size=32, adversarial=AdversarialConfig("l2", 0.5, steps=2))
    eager, _ = train_new_model(ModelSpec("small_cnn", {"width": 4}), x, y, 10, TrainConfig(**config), progress=False)
    compiled, _ = train_new_model(ModelSpec("small_cnn", {"width": 4}), x, y, 10,
                                  TrainConfig(**config, compile="aot_eager"), progress=False)
    assert hasattr(compiled.representation, "_torchdynamo_orig_callable")  # inversion's entry point is compiled
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name
    inverted = invert_representation(compiled, x[:4], x[4:8], steps=3, step_size=0.1)
    assert torch.allclose(inverted, invert_representation(eager, x[:4], x[4:8], steps=3, step_size=0.1), atol=1e-5)
    save_model(compiled, tmp_path / "m.safetensors")
    assert torch.allclose(load_model(tmp_path / "m.safetensors")(x[:4]), eager(x[:4]), atol=1e-5)


def test_weight_average_is_the_exponential_moving_average_of_the_weights():
    from advfeatures.training import WeightAverage

    model = torch.nn.BatchNorm1d(3)  # a weight to average and running statistics (buffers) to follow the model
    average = WeightAverage(model, 0.5)
    expected = model.weight.detach().clone()
    for step in range(3):
        with torch.no_grad():
            model.weight.add_(float(step + 1))
            model.running_mean.add_(1.0)
        average.update(model)
        expected = 0.5 * expected + 0.5 * model.weight.detach()
    live_mean = model.running_mean.clone()
    average.apply_to(model)
    assert torch.allclose(model.weight, expected) and not torch.allclose(model.weight, expected + 1)
    assert torch.equal(model.running_mean, live_mean)
    with pytest.raises(BadInputError, match="weight_average"):
        TrainConfig(weight_average=1.5)
