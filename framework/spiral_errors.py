"""Where a latent ODE's spiral extrapolation goes wrong: its error split by the series' turning
direction and by how far out the extrapolation ends.

    python -m framework.spiral_errors <run>/checkpoints/last.ckpt [...] [--split val]

For each checkpoint (of a :class:`~models.latent_ode.LatentODEModule` trained on
:class:`~datamodules.spirals.SpiralsDataModule`), on the split's series: the extrapolation RMSE
from the posterior mode (``model.refine_steps``) and from the encoder's mean (Chen et al.'s
protocol), overall, per turning direction, per tercile of the radius at the extrapolation's
end, and the share of the squared error carried by the worst tenth of the series. The terciles
separate series that stay within the radii the training windows reach from those that go
beyond: the error of the outer tercile is what varies from one training seed to another
(docs/training.md, "Experiments").
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch

GROUPS = ("all", "counter-clockwise", "clockwise", "inner third", "middle third", "outer third")


def turning_direction(path: torch.Tensor) -> torch.Tensor:
    """+1 for a counter-clockwise series, -1 for a clockwise one (``path``: ``[B, T, 2]``), from
    the sign of the mean cross product of consecutive points."""
    x, y = path[:, :-1, 0], path[:, :-1, 1]
    dx, dy = path[:, 1:, 0] - x, path[:, 1:, 1] - y
    return torch.sign((x * dy - y * dx).mean(dim=1))


def breakdown(per_series: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """RMSE over each group of :data:`GROUPS` from each series' mean squared error
    (``per_series``, ``[B]``) and its true extrapolation (``truth``, ``[B, E, 2]``); and
    ``worst tenth share``. Every series has the same number of points, so a group's RMSE is the
    root of its series' mean."""
    direction = turning_direction(truth)
    radius = truth[:, -1].norm(dim=-1)
    edges = torch.quantile(radius, torch.tensor([1 / 3, 2 / 3], dtype=radius.dtype))
    third = torch.bucketize(radius, edges, right=True)
    masks = {"all": torch.ones_like(radius, dtype=torch.bool),
             "counter-clockwise": direction > 0, "clockwise": direction < 0,
             "inner third": third == 0, "middle third": third == 1, "outer third": third == 2}
    out = {name: float(per_series[m].mean().sqrt()) if m.any() else float("nan")
           for name, m in masks.items()}
    ranked = per_series.sort(descending=True).values
    out["worst tenth share"] = float(ranked[: max(1, len(ranked) // 10)].sum() / ranked.sum())
    return out


@torch.no_grad()
def spiral_errors(model, batch: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """:func:`breakdown` of the extrapolation from the posterior mode (``refined``) and from the
    encoder's mean (``encoder``) for one batch of spirals."""
    model.eval()
    pred = model.predict(batch, refine=True)
    n_obs = batch["t_obs"].shape[0]
    truth = batch["extrap"]
    from_mean = model.decode(pred["mu"], pred["t"])[1]
    return {name: breakdown(((x[:, n_obs:] - truth) ** 2).mean(dim=(1, 2)), truth)
            for name, x in (("refined", pred["x"]), ("encoder", from_mean))}


def _whole_split(datamodule, split: str) -> dict[str, torch.Tensor]:
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    batches = list(loader)
    if len(batches) != 1:
        raise ValueError(f"the {split} split comes in {len(batches)} batches; pass "
                         "--batch-size at least its size")
    return batches[0]


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    from framework.checkpoint import load_datamodule, load_model

    parser = argparse.ArgumentParser(prog="python -m framework.spiral_errors",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="loader batch size: the split must fit in one batch")
    args = parser.parse_args(argv)
    results = {}
    for path in args.checkpoints:
        model = load_model(path)
        batch = _whole_split(load_datamodule(path, batch_size=args.batch_size), args.split)
        results[str(path)] = errors = spiral_errors(model, batch)
        print(f"{path} ({args.split}, {len(batch['extrap'])} series), extrapolation RMSE")
        print(f"  {'':20s}{'refined':>10s}{'encoder':>10s}")
        for name in (*GROUPS, "worst tenth share"):
            print(f"  {name:20s}{errors['refined'][name]:10.4f}{errors['encoder'][name]:10.4f}")
    return results


if __name__ == "__main__":
    main()
