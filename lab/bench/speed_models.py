#!/usr/bin/env python3
"""Full-width models for the speed suite (random weights: timing only), as
PyTorch users build and export them: torchvision's resnet18 in its CIFAR
form (3×3 stem, no max-pool) and mobilenet_v2, 10 classes on 3×32×32,
exported with torch.onnx.export in eval mode (BatchNorm folded), a dynamic
batch axis. Writes target/speed/models/{resnet18,mobilenetv2}.onnx.

Usage: torchenv/bin/python lab/bench/speed_models.py
"""
import os

import torch
import torchvision

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "target", "speed", "models")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=10)
    resnet.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    resnet.maxpool = torch.nn.Identity()
    mobilenet = torchvision.models.mobilenet_v2(num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    for name, model in (("resnet18", resnet), ("mobilenetv2", mobilenet)):
        path = os.path.join(OUT, f"{name}.onnx")
        torch.onnx.export(model.eval(), x, path, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        print(path, sum(p.numel() for p in model.parameters()), "parameters")


if __name__ == "__main__":
    main()
