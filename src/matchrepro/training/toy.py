"""A tiny regression task (the ``toy`` training model): exercises the training loop, DDP and
resume on any machine in seconds. Not a matcher."""

from __future__ import annotations

import torch


class ToyTask:
    """y = sin(x W) from a fixed random W; an MLP learns it with MSE."""

    val_metrics = {"mse": "min", "max_error": "min"}
    val_criterion = "mse"

    def __init__(self, num_samples: int = 256, dim: int = 8, seed: int = 123, val_samples: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(num_samples + val_samples, dim, generator=g)
        self.y = torch.sin(self.x @ torch.randn(dim, 2, generator=g))
        self.x, self.val_x = self.x[:num_samples], self.x[num_samples:]
        self.y, self.val_y = self.y[:num_samples], self.y[num_samples:]
        self.dim = dim
        self.has_validation = val_samples > 0

    def validate(self, model) -> dict:
        """Held-out samples (``params.val_samples``): mean squared and largest absolute error."""
        err = model(self.val_x) - self.val_y
        return {"mse": float(torch.mean(err ** 2)), "max_error": float(err.abs().max())}

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(self.dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))

    def num_samples(self) -> int:
        return len(self.x)

    def batch(self, idx: torch.Tensor) -> dict:
        return {"x": self.x[idx], "y": self.y[idx]}

    def loss(self, model, batch) -> torch.Tensor:
        return torch.mean((model(batch["x"]) - batch["y"]) ** 2)
