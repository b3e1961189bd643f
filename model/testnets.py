"""Random quantized networks with non-trivial parameters: what the tests and the RTL benches run
beside the shipped models (``CIM_SIM_MODEL=random:...``)."""

import torch

from . import nets

__all__ = ["random_net", "small_specs"]


def random_net(spec: nets.NetSpec, seed: int, batch: int = 8) -> tuple[nets.QuantNet, torch.Tensor]:
    """A network with randomised BatchNorm statistics and calibrated activation clips, in eval
    mode, and a batch of random integer pixels for it."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nets.build(spec)
    x = torch.randint(0, spec.pixel_max + 1, (batch, spec.in_channels, spec.image_size,
                                              spec.image_size), generator=gen)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(c, generator=gen) * 0.4 - 0.2)
            if isinstance(m, torch.nn.Linear):
                m.bias.copy_(torch.rand(m.out_features, generator=gen) - 0.5)
    net.calibrate(x)
    return net.eval(), x


def small_specs(w_bits: int, a_bits: int) -> list[nets.NetSpec]:
    """Three small networks at the given bit widths: a ResNet14, a ResNet14 with a 3-channel
    input, one block per stage and 1x1 shortcuts, and a digits CNN."""
    bits = dict(w_bits=w_bits, a_bits=a_bits)
    return [
        nets.NetSpec(arch="resnet14", width=0.125, **bits),
        nets.NetSpec(arch="resnet14", in_channels=3, width=0.0625, blocks=(1, 1, 1),
                     first_bits=6, last_bits=4, res_bits=4, **bits),
        nets.NetSpec(arch="digits_cnn", image_size=8, pixel_max=16, width=0.5, **bits),
    ]
