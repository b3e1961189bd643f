"""Train a small CNN with Brevitas and export it as QONNX, the way a user of this accelerator
brings a network of their own (the import is :mod:`model.qonnx_import`).

    python -m model.train_brevitas --out models/fmnist_brevitas_w4a4.onnx

The quantizers are chosen so the network maps onto the hardware without approximation beyond
the requantization's fixed point: the input is quantized to its 8-bit pixel codes (a constant
scale of 1/255), conv1 (on the MCU) has 8-bit per-channel weights, the middle convs (on the
accelerator) 4-bit per-channel narrow-range weights and 4-bit unsigned activations after
ReLU, the residual is added to the conv's unquantized output before its ReLU and quantizer
(the hardware's single rounding), and the classifier has 8-bit per-tensor weights (one scale
for all logits). Writes the .onnx file and, beside it, a .json with the training record and
Brevitas's own accuracy on the full test split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data


def build_net(c1: int = 16, c2: int = 32) -> nn.Module:
    """The network: conv1 + maxpool (MCU), four 3x3 convs with one residual block
    (accelerator), global average pooling and a linear classifier (MCU)."""
    import brevitas.nn as qnn
    from brevitas.core.scaling import ScalingImplType
    from brevitas.quant import (
        Int8WeightPerChannelFloat,
        Int8WeightPerTensorFloat,
        Uint8ActPerTensorFloat,
    )

    class PixelQuant(Uint8ActPerTensorFloat):
        """The input's 8-bit pixel codes: a constant scale of 1/255 on inputs in [0, 1]."""

        scaling_impl_type = ScalingImplType.CONST
        scaling_const = 1.0
        max_val = 1.0

    def conv(cin, cout, stride=1, bits=4):
        return qnn.QuantConv2d(cin, cout, 3, stride=stride, padding=1, bias=False,
                               weight_quant=Int8WeightPerChannelFloat, weight_bit_width=bits)

    def relu():
        return qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantIdentity(act_quant=PixelQuant)
            self.conv1, self.bn1, self.relu1 = conv(1, c1, bits=8), nn.BatchNorm2d(c1), relu()
            self.pool = nn.MaxPool2d(2)
            self.conv2, self.bn2, self.relu2 = conv(c1, c2), nn.BatchNorm2d(c2), relu()
            self.conv3, self.bn3, self.relu3 = conv(c2, c2, 2), nn.BatchNorm2d(c2), relu()
            self.conv4, self.bn4, self.relu4 = conv(c2, c2), nn.BatchNorm2d(c2), relu()
            self.conv5, self.bn5, self.relu5 = conv(c2, c2), nn.BatchNorm2d(c2), relu()
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = qnn.QuantLinear(c2, 10, bias=True, weight_quant=Int8WeightPerTensorFloat,
                                      weight_bit_width=8)

        def forward(self, x):
            x = self.inp(x)
            x = self.pool(self.relu1(self.bn1(self.conv1(x))))
            x = self.relu2(self.bn2(self.conv2(x)))
            x = self.relu3(self.bn3(self.conv3(x)))
            h = self.relu4(self.bn4(self.conv4(x)))
            # The residual joins the conv's unquantized output: one rounding, as in hardware.
            x = self.relu5(self.bn5(self.conv5(h)) + x)
            return self.fc(torch.flatten(self.gap(x), 1))

    return Net()


def to_float(x: np.ndarray) -> torch.Tensor:
    """Raw pixel codes -> the network's input in [0, 1] (the input quantizer recovers them)."""
    return torch.from_numpy(x.astype(np.float32) / 255.0)


@torch.no_grad()
def accuracy(net: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    net.eval()
    pred = np.concatenate([net(to_float(x[i:i + batch])).argmax(1).numpy()
                           for i in range(0, len(x), batch)])
    return float((pred == y).mean())


def export(net: nn.Module, path: Path, shape: tuple[int, ...]) -> None:
    import onnx
    from brevitas.export import export_qonnx
    net.eval()
    export_qonnx(net, input_t=torch.rand(1, *shape), export_path=str(path))
    # The exporter may write the weights to a side file; ship one self-contained file.
    side = path.with_name(path.name + ".data")
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=False)
    side.unlink(missing_ok=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.train_brevitas", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="QONNX file to write (.onnx)")
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--steps", type=int, default=450,
                   help="training steps (one-cycle schedule; 450 x 128 images is about one "
                        "epoch, a few CPU minutes)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", module="brevitas")
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    try:
        xtr, ytr, info = data.load_dataset(args.dataset, "train", args.data_dir)
        xte, yte, _ = data.load_dataset(args.dataset, "test", args.data_dir)
    except data.DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    net = build_net()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps)
    rng = np.random.default_rng(args.seed)
    order = np.zeros(0, dtype=np.int64)
    t0 = time.time()
    net.train()
    for step in range(1, args.steps + 1):
        if len(order) < args.batch_size:
            order = rng.permutation(len(xtr))
        idx, order = order[:args.batch_size], order[args.batch_size:]
        loss = F.cross_entropy(net(to_float(xtr[idx])), torch.from_numpy(ytr[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            print(f"step {step}/{args.steps} loss {loss.item():.3f} {time.time() - t0:.0f} s",
                  flush=True)
    train_s = time.time() - t0
    acc = accuracy(net, xte, yte)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    export(net, out, tuple(xte.shape[1:]))
    record = dict(dataset=args.dataset, classes=list(info.classes), pixel_max=255,
                  steps=args.steps, batch_size=args.batch_size,
                  train_seconds=round(train_s, 1), seed=args.seed,
                  test_images=len(xte), brevitas_acc=acc)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"Brevitas top-1 on {len(xte)} test images: {acc:.2%}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
