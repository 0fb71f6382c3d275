"""ODE-Net classifier pieces: accuracy, time-conditioned layers, augmentation (ANODE), the digits
data module, random shifts, argument errors, and checkpoint reload."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from datamodules.classification import class_cycling_order, random_shift
from datamodules.digits import DigitsDataModule
from framework.checkpoint import load_datamodule, load_model
from models.components.ode_block import ODEBlock
from models.components.ode_solver import ODESolver
from models.components.odenet_layers import ConcatConv2d, ConvODEFunc, norm_groups
from models.odenet import ODENetModule, accuracy

RK4 = {"method": "rk4", "step_size": 0.5}


def tiny_model(**kwargs) -> ODENetModule:
    settings = dict(
        input_shape=[1, 8, 8], n_classes=10, channels=4, n_downsample=1, max_groups=2, solver=RK4
    )
    settings.update(kwargs)
    return ODENetModule(**settings)


# ------------------------------------------------------------------------------------- metrics
def test_accuracy_on_a_toy_batch():
    logits = torch.tensor(
        [[2.0, 0.1, 0.0], [0.0, 1.0, 3.0], [0.5, 0.4, 0.1], [0.0, 2.0, 1.0], [1.0, 0.0, 5.0]]
    )
    labels = torch.tensor([0, 1, 2, 1, 2])  # right: rows 0, 3, 4
    assert accuracy(logits, labels).item() == pytest.approx(3 / 5)
    assert accuracy(logits, logits.argmax(dim=1)).item() == 1.0
    with pytest.raises(ValueError, match=r"logits \[B, K\] and labels \[B\], got \(5, 3\) and"):
        accuracy(logits, labels[:4])


@pytest.mark.slow
def test_logged_epoch_accuracy_is_the_exact_fraction():
    """Validation accuracy is logged per batch with its batch size: Lightning's weighted epoch
    mean then equals the fraction of correct predictions over all examples."""
    model = tiny_model()
    dm = DigitsDataModule(batch_size=100)
    trainer = L.Trainer(
        max_epochs=1,
        # node caches its tableau tensors per dtype and device; made first under inference mode
        # (trainer.validate's default) they could not be used by a later training step
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(model, datamodule=dm, verbose=False)
    val = dm.parts["val"]
    with torch.no_grad():
        expected = (model(val.inputs).argmax(1) == val.labels).float().mean().item()
    assert trainer.callback_metrics["val/acc"].item() == pytest.approx(expected, abs=1e-6)
    assert trainer.callback_metrics["val/error"].item() == pytest.approx(1 - expected, abs=1e-6)


# -------------------------------------------------------------------------------------- layers
def test_norm_groups_divide_the_channel_count():
    assert [norm_groups(c) for c in (64, 65, 3, 96)] == [32, 13, 3, 32]
    assert norm_groups(64, max_groups=8) == 8


def test_time_enters_the_convolution():
    torch.manual_seed(0)
    conv = ConcatConv2d(3, 5)
    h = torch.randn(2, 3, 6, 6)
    assert conv.conv.in_channels == 4
    assert not torch.allclose(conv(torch.tensor(0.0), h), conv(torch.tensor(1.0), h))
    func = ConvODEFunc(4, max_groups=2)
    assert func(torch.tensor(0.3), torch.randn(2, 4, 5, 5)).shape == (2, 4, 5, 5)


@pytest.mark.parametrize("architecture", ["conv", "mlp"])
def test_augmented_dimensions_change_the_state_size(architecture):
    x = torch.randn(3, 1, 8, 8)
    plain = tiny_model(architecture=architecture)
    augmented = tiny_model(architecture=architecture, augment_dim=3)
    states = plain.ode_trajectory(x, 4)
    aug_states = augmented.ode_trajectory(x, 4)
    assert states.shape[:2] == aug_states.shape[:2] == (4, 3)
    assert aug_states.shape[2] == states.shape[2] + 3
    assert aug_states.shape[3:] == states.shape[3:]
    assert torch.all(aug_states[0, :, -3:] == 0)  # h(0) = [x; 0]
    assert not torch.all(aug_states[-1, :, -3:] == 0)  # the flow uses the extra dimensions
    assert augmented(x).shape == plain(x).shape == (3, 10)


def test_mlp_without_stem_solves_on_the_input():
    model = tiny_model(architecture="mlp", channels=None, augment_dim=2)
    assert model.ode_trajectory(torch.randn(5, 1, 8, 8), 3).shape == (3, 5, 66)


def test_ode_block_counts_and_spans_zero_to_t_end():
    block = ODEBlock(ConvODEFunc(4, 2), ODESolver(**RK4), augment_dim=0, t_end=2.0)
    assert block.times(5).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    block(torch.randn(2, 4, 3, 3))
    assert block.solver.counts().nfe == 4 * 4  # rk4 with step 0.5 over [0, 2]: 4 steps


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(architecture="resnet"), "model.architecture must be one of ['conv', 'mlp'], got"),
        (dict(input_shape=[64]), "needs image inputs, input_shape [C, H, W]; got [64]"),
        (dict(n_downsample=4), "model.n_downsample=4 halves an input of 8 pixels below 1 pixel"),
        (dict(augment_dim=-1), "model.augment_dim must be an integer >= 0, got -1"),
        (dict(optimizer="rmsprop"), "model.optimizer must be one of ['sgd', 'adam'], got"),
        (dict(lr=0), "model.lr must be a number > 0, got 0"),
        (dict(t_end=-1.0), "model.t_end must be a number > 0, got -1.0"),
        (dict(n_classes=1), "model.n_classes must be an integer >= 2, got 1"),
    ],
)
def test_bad_hyperparameters_are_named(kwargs, message):
    with pytest.raises(ValueError) as info:
        tiny_model(**kwargs)
    assert message in str(info.value)


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r"expects inputs \[B, 1, 8, 8\], got \(2, 1, 6, 6\)"):
        tiny_model()(torch.randn(2, 1, 6, 6))


# ---------------------------------------------------------------------------------------- data
def test_digits_split_is_seeded_and_normalised():
    dm = DigitsDataModule(split=[0.6, 0.2, 0.2], seed=3)
    dm.setup()
    sizes = [len(dm.parts[s]) for s in ("train", "val", "test")]
    assert sizes == [1078, 359, 360]
    train = dm.parts["train"].inputs
    assert train.shape[1:] == (1, 8, 8)
    assert abs(float(train.mean())) < 1e-5 and abs(float(train.std()) - 1) < 1e-4
    again, other = DigitsDataModule(seed=3), DigitsDataModule(seed=4)
    again.setup()
    other.setup()
    assert torch.equal(again.parts["test"].inputs, dm.parts["test"].inputs)
    assert not torch.equal(other.parts["test"].labels, dm.parts["test"].labels)
    batch = dm.example_batch("test", 12)
    assert batch["labels"][:10].tolist() == list(range(10))  # one example of each class first
    with pytest.raises(ValueError, match="datamodule.split must be three positive fractions"):
        DigitsDataModule(split=[0.5, 0.5])


def test_random_shift_crops_the_padded_image():
    torch.manual_seed(0)
    images = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5) + 1
    assert torch.equal(random_shift(images, 0), images)
    shifted = random_shift(images, 2, fill=-1.0)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), value=-1.0)
    for i in range(2):
        crops = [padded[i, :, y : y + 5, x : x + 5] for y in range(5) for x in range(5)]
        assert any(torch.equal(shifted[i], crop) for crop in crops)


def test_class_cycling_order():
    labels = torch.tensor([2, 0, 0, 1, 2, 0])
    assert labels[class_cycling_order(labels)].tolist() == [0, 1, 2, 0, 2, 0]


# --------------------------------------------------------------------------------- checkpoints
@pytest.mark.slow
def test_checkpoint_reload_gives_identical_predictions(tmp_path, fit_and_save):
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=128)
    model = tiny_model(augment_dim=2, optimizer="adam", lr=0.01)
    path = fit_and_save(model, dm, max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    batch = dm.example_batch("test", 16)
    model.eval()
    with torch.no_grad():
        expected = model(batch["inputs"])
        reloaded = ODENetModule.load_from_checkpoint(path).eval()  # no config needed
        generic = load_model(path)  # class found from the checkpoint itself
        assert type(generic) is ODENetModule
        for other in (reloaded, generic):
            assert torch.equal(other(batch["inputs"]), expected)
    assert generic.hparams.augment_dim == 2 and generic.hparams.solver["method"] == "rk4"
    rebuilt = load_datamodule(path)
    assert torch.equal(rebuilt.example_batch("test", 16)["inputs"], batch["inputs"])
