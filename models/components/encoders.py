r"""Encoders of the latent ODE: from observed values to :math:`q(z_0 \mid x)`.

Both read the observations backwards in time, from the last observation time to ``t_obs[0]``,
so that their final hidden state summarises the whole series at the time where :math:`z_0` lives.
Input at time :math:`t_i` is ``[x_i * m_i, m_i]`` (values and mask); a series with nothing
observed at :math:`t_i` keeps its hidden state there. Both return ``(mu, logvar)``, each ``[B, L]``.

* :class:`RecognitionRNN` (Chen et al., 2018): an Elman RNN
  :math:`h \leftarrow \tanh(W[x_i, m_i, \Delta_i, h] + b)`, where :math:`\Delta_i` is the time
  from :math:`t_i` to the series' previously read (later) observation, so irregular gaps are seen
  (``encoder="rnn"``); ``encoder="gru"`` reads the same inputs with a GRU cell.
* :class:`ODERNN` (Rubanova et al., 2019): between observation times the hidden state follows
  its own ODE :math:`dh/dt = g(h)` (solved backwards with the model's :class:`ODESolver`); at an
  observation a GRU cell updates it: :math:`h \leftarrow \mathrm{GRU}([x_i, m_i], h)`. With
  ``per_sample``, each series' hidden ODE is solved from one of its own observation times to
  the next (per-sample solves) instead of between all the batch's observation times.
"""

from __future__ import annotations

import torch
from torch import nn

from models.components.mlp import MLP, AutonomousField
from models.components.ode_solver import ODESolver
from models.components.time_grids import grid_of

ENCODERS = ("rnn", "gru", "odernn")


def _check_inputs(t: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> None:
    if values.dim() != 3 or mask.shape != values.shape:
        raise ValueError(
            "encoder expects values and mask of the same shape [B, T, D], got "
            f"{tuple(values.shape)} and {tuple(mask.shape)}"
        )
    if t.dim() != 1 or t.shape[0] != values.shape[1]:
        raise ValueError(
            f"encoder expects t of shape [T] = [{values.shape[1]}], got {tuple(t.shape)}"
        )


class RecognitionRNN(nn.Module):
    """Backward RNN encoder (module docstring): an Elman cell (``cell="elman"``, Chen et al.) or
    a GRU (``cell="gru"``), whose gates let it combine many observations instead of mostly the
    last ones it reads."""

    def __init__(self, obs_dim: int, latent_dim: int, hidden_dim: int, cell: str = "elman") -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        if cell == "gru":
            self.cell = nn.GRUCell(2 * obs_dim + 1, hidden_dim)
        else:
            self.cell = nn.RNNCell(2 * obs_dim + 1, hidden_dim, nonlinearity="tanh")
        self.out = nn.Linear(hidden_dim, 2 * latent_dim)

    def forward(
        self, t: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_inputs(t, values, mask)
        batch = values.shape[0]
        h = values.new_zeros(batch, self.hidden_dim)
        t = t.to(values.dtype)
        t_prev = t[-1].expand(batch)
        for i in range(values.shape[1] - 1, -1, -1):
            observed = mask[:, i].amax(dim=-1) > 0
            gap = (t_prev - t[i]).unsqueeze(-1)
            h_new = self.cell(torch.cat([values[:, i], mask[:, i], gap], dim=-1), h)
            h = torch.where(observed.unsqueeze(-1), h_new, h)
            t_prev = torch.where(observed, t[i], t_prev)
        mu, logvar = self.out(h).chunk(2, dim=-1)
        return mu, logvar


class ODERNN(nn.Module):
    """Backward ODE-RNN encoder (module docstring).

    Every series starts from :math:`h = 0` at the batch's last observation time. The hidden ODE
    is solved only between times at which some series of the batch has an observation (in
    between, nothing would change the hidden state but the flow itself). With ``per_sample``,
    between each series' own observation times instead (padded to equal counts with the batch's
    other observation times, where a series' update is masked; see
    :func:`~models.components.time_grids.grid_of`): fewer, longer solves, each series with its
    own steps; by the flow's composition the same encoding, to the solver's tolerance.
    """

    def __init__(self, obs_dim: int, latent_dim: int, hidden_dim: int, solver: ODESolver,
                 per_sample: bool = False) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.solver = solver
        self.per_sample = per_sample
        self.dynamics = AutonomousField(MLP(hidden_dim, hidden_dim, hidden_dim, 1, "tanh"))
        self.cell = nn.GRUCell(2 * obs_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, 2 * latent_dim)

    def forward(
        self, t: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_inputs(t, values, mask)
        batch = values.shape[0]
        h = values.new_zeros(batch, self.hidden_dim)
        observed = mask.amax(dim=-1) > 0
        if self.per_sample:
            h = self._per_sample(t, values, mask, observed, h)
            mu, logvar = self.out(h).chunk(2, dim=-1)
            return mu, logvar
        times = torch.nonzero(observed.any(dim=0)).flatten().tolist()
        t_h = None
        for i in reversed(times):
            if t_h is not None:
                h = self.solver(self.dynamics, h, torch.stack([t[t_h], t[i]]))[-1]
            h_new = self.cell(torch.cat([values[:, i], mask[:, i]], dim=-1), h)
            h = torch.where(observed[:, i].unsqueeze(-1), h_new, h)
            t_h = i
        if t_h is not None and t_h != 0:
            h = self.solver(self.dynamics, h, torch.stack([t[t_h], t[0]]))[-1]
        mu, logvar = self.out(h).chunk(2, dim=-1)
        return mu, logvar


    def _per_sample(self, t, values, mask, observed, h) -> torch.Tensor:
        """The final hidden state with per-sample solves between each series' own times."""
        union = observed.any(dim=0)
        if not bool(union.any()):
            return h
        needed = observed.clone()
        needed[:, 0] = True
        needed[:, int(torch.nonzero(union).max())] = True  # where every series starts
        index = grid_of(t, needed).index  # [B, n], increasing; read backwards
        rows = torch.arange(values.shape[0], device=values.device)
        for j in range(index.shape[1] - 1, -1, -1):
            i = index[:, j]
            if j < index.shape[1] - 1:
                h = self.solver(self.dynamics, h, torch.stack([t[index[:, j + 1]], t[i]], 1))[-1]
            h_new = self.cell(torch.cat([values[rows, i], mask[rows, i]], dim=-1), h)
            h = torch.where(observed[rows, i].unsqueeze(-1), h_new, h)
        return h


def build_encoder(
    kind: str, obs_dim: int, latent_dim: int, hidden_dim: int, solver: ODESolver,
    per_sample: bool = False,
) -> nn.Module:
    """``"rnn"`` -> :class:`RecognitionRNN`, ``"odernn"`` -> :class:`ODERNN` (``per_sample``:
    its solves per series)."""
    if kind in ("rnn", "gru"):
        return RecognitionRNN(obs_dim, latent_dim, hidden_dim, "gru" if kind == "gru" else "elman")
    if kind == "odernn":
        return ODERNN(obs_dim, latent_dim, hidden_dim, solver, per_sample)
    raise ValueError(f"encoder must be one of {list(ENCODERS)}, got {kind!r}")
