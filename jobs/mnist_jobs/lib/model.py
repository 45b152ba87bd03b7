"""The seed's LeNet-style network (the classic Caffe/TensorRT MNIST LeNet).

conv 1->20 5x5, maxpool 2, conv 20->50 5x5, maxpool 2, fc 800->500, ReLU,
fc 500->10 (logits; softmax is left to the consumer). Input: normalized
digits ``[N, 1, 28, 28]`` float32 (see :func:`mnist_jobs.lib.data.normalize`).
"""
from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        x = torch.flatten(x, 1)
        return self.fc2(self.relu(self.fc1(x)))
