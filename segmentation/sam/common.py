"""Small building blocks shared by SAM's image encoder, prompt encoder and mask decoder."""

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map.

    nn.LayerNorm normalises the trailing axes; SAM's convolutional parts keep channels first, so the
    statistics are taken over dim 1 here. Parameter names (`weight`, `bias`) match the checkpoints.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        mean = x.mean(1, keepdim=True)
        # Biased variance, as in the reference implementation, written out so the ONNX export is
        # plain arithmetic rather than a channels-first LayerNormalization.
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Transformer feed-forward block: Linear -> activation -> Linear (keys `lin1`, `lin2`)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., embedding_dim) -> (..., embedding_dim)."""
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """A stack of `num_layers` Linear layers with ReLU between them (none after the last).

    Used by the mask decoder for the hypernetwork heads and the IoU head (keys `layers.<i>`).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., input_dim) -> (..., output_dim)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x
