"""Shared fixtures: tiny, seeded, CPU-only."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class StandInClassifier(nn.Module):
    """A frozen 2-class classifier on brightness of the left vs right half, with `features` like SmallCNN."""

    num_classes = 2
    has_features = True

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.c2 = nn.Conv2d(8, 8, 3, 2, 1)
        self.fc = nn.Linear(8, 2)
        self.requires_grad_(False)
        self.eval()

    def features(self, x):
        a = torch.relu(self.c1(x))
        return [a, torch.relu(self.c2(a))]

    def forward(self, x):
        return self.fc(self.features(x)[1].mean((2, 3))) * 3


@pytest.fixture
def stand_in_classifier():
    return StandInClassifier()


@pytest.fixture
def tiny_images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(40, 3, 16, 16, generator=g) * 2 - 1
