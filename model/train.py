"""Train a network: float pre-training, then quantization-aware training, then export.

    python -m model.train --arch resnet14 --dataset fashion-mnist --out runs/resnet14_fmnist

Writes into ``--out``: ``checkpoint.pt`` (after every epoch; ``--resume`` continues from it,
and re-running a finished run only redoes the final evaluation and export), ``model.npz`` (the
exported integer model), ``weights.pt`` (the trained PyTorch parameters and network spec) and
``metrics.json`` (float, fake-quant, PyTorch-integer and golden integer accuracy on the test
split).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import data, evaluate, nets

BITS = range(1, 9)

# Per-architecture defaults: input size the images are padded to, training schedule.
ARCH_DEFAULTS = {
    "resnet14": dict(image_size=32, float_epochs=12, qat_epochs=6, batch_size=128, lr=0.1),
    "digits_cnn": dict(image_size=8, float_epochs=30, qat_epochs=30, batch_size=64, lr=0.05),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=nets.ARCHS, default="resnet14")
    p.add_argument("--dataset", choices=data.DATASETS, default="fashion-mnist")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    p.add_argument("--out", required=True, help="run folder (checkpoint, model, metrics)")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    p.add_argument("--blocks", default="2,2,2", help="BasicBlocks per stage (resnet14)")
    p.add_argument("--w-bits", type=int, choices=BITS, metavar="1-8",
                   default=4, help="accelerator weight bits (1-8)")
    p.add_argument("--a-bits", type=int, choices=BITS, metavar="1-8",
                   default=4, help="activation bits (1-8)")
    p.add_argument("--first-bits", type=int, choices=BITS, metavar="1-8",
                   default=8, help="conv1 weight bits (MCU)")
    p.add_argument("--last-bits", type=int, choices=BITS, metavar="1-8",
                   default=8, help="classifier weight bits (MCU)")
    p.add_argument("--res-bits", type=int, choices=BITS, metavar="1-8",
                   default=8, help="downsampling shortcut bits")
    p.add_argument("--float-epochs", type=int, default=None)
    p.add_argument("--qat-epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (float phase)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train images")
    p.add_argument("--test-limit", type=int, default=None, help="use only the first N test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    d = ARCH_DEFAULTS[args.arch]
    for k in ("float_epochs", "qat_epochs", "batch_size", "lr"):
        if getattr(args, k) is None:
            setattr(args, k, d[k])
    if args.float_epochs < 0 or args.qat_epochs < 0:
        p.error("epoch counts must not be negative")
    try:
        args.blocks = tuple(int(b) for b in args.blocks.split(","))
    except ValueError:
        p.error(f"--blocks must be comma-separated integers, not {args.blocks!r}")
    return args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero fill) and optional horizontal flip,
    on integer pixels (the network always sees raw integer pixels)."""
    n, _, h, w = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w)
        idx_n = torch.arange(n).view(n, 1, 1, 1)
        idx_c = torch.arange(x.shape[1]).view(1, -1, 1, 1)
        x = xp[idx_n, idx_c, rows, cols]
    if flip:
        m = torch.rand(n, generator=gen) < 0.5
        x = torch.where(m.view(n, 1, 1, 1), x.flip(3), x)
    return x


@torch.no_grad()
def accuracy(net: nets.QuantNet, x: torch.Tensor, y: torch.Tensor, mode: str,
             batch: int = 500) -> float:
    net.eval().set_mode(mode)
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


def make_optimizer(net, lr, steps, phase):
    alphas = [p for n, p in net.named_parameters() if n.endswith(".alpha")]
    bn = [p for n, p in net.named_parameters() if ".bn." in n or n.endswith(".bias")]
    taken = {id(p) for p in alphas + bn}
    weights = [p for p in net.parameters() if id(p) not in taken]
    groups = [dict(params=weights, weight_decay=5e-4), dict(params=bn, weight_decay=0.0)]
    if phase == "qat":
        groups.append(dict(params=alphas, weight_decay=1e-4))
    opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1),
                                                pct_start=0.15 if phase == "float" else 0.05)
    return opt, sched


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    seed_everything(args.seed)

    info = data.dataset_info(args.dataset)
    size = ARCH_DEFAULTS[args.arch]["image_size"]
    try:
        spec = nets.NetSpec(
            arch=args.arch, in_channels=info.channels, image_size=size,
            num_classes=info.num_classes, pixel_max=info.pixel_max, width=args.width,
            blocks=args.blocks, w_bits=args.w_bits, a_bits=args.a_bits,
            first_bits=args.first_bits, last_bits=args.last_bits, res_bits=args.res_bits,
            classes=info.classes,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        xtr, ytr, _ = data.load_dataset(args.dataset, "train", args.data_dir, limit=args.limit,
                                        seed=args.seed)
        xte, yte, _ = data.load_dataset(args.dataset, "test", args.data_dir,
                                        limit=args.test_limit, seed=args.seed)
    except data.DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        shape = (info.channels, size, size)
        xtr = torch.from_numpy(np.ascontiguousarray(evaluate.fit_images(xtr, shape)))
        xte = torch.from_numpy(np.ascontiguousarray(evaluate.fit_images(xte, shape)))
    except data.DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    aug_pad = 2 if size >= 16 else 1
    flip = args.dataset in ("fashion-mnist", "cifar10")

    net = nets.build(spec)
    state = dict(phase="float", epoch=0, history=[], float_acc=None)
    opt_state = None
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if nets.NetSpec.from_dict(ck["spec"]) != spec:
            print(f"error: {ckpt_path} was trained with a different network spec:\n"
                  f"  checkpoint {ck['spec']}\n  arguments  {spec.to_dict()}", file=sys.stderr)
            return 2
        net.load_state_dict(ck["model"])
        state = ck["state"]
        opt_state = ck["optimizer"]
        torch.set_rng_state(ck["rng"])
        print(f"resumed {ckpt_path}: phase {state['phase']}, epoch {state['epoch']}")

    gen = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    for phase, epochs, lr in (("float", args.float_epochs, args.lr),
                              ("qat", args.qat_epochs, args.lr / 10)):
        if state["phase"] == "done" or (phase == "float" and state["phase"] == "qat"):
            continue
        if state["phase"] != phase:
            continue
        mode = "float" if phase == "float" else "fakequant"
        if phase == "qat" and state["epoch"] == 0 and opt_state is None:
            net.calibrate(xtr[:512])
        opt, sched = make_optimizer(net, lr, epochs * steps_per_epoch, phase)
        if opt_state is not None:
            opt.load_state_dict(opt_state["opt"])
            sched.load_state_dict(opt_state["sched"])
            opt_state = None
        for epoch in range(state["epoch"], epochs):
            gen.manual_seed(args.seed * 1000 + epoch + (0 if phase == "float" else 500))
            perm = torch.randperm(len(xtr), generator=gen)
            net.train().set_mode(mode)
            t0, loss_sum, seen = time.time(), 0.0, 0
            bar = tqdm(range(steps_per_epoch), desc=f"{phase} {epoch + 1}/{epochs}",
                       disable=args.no_progress, file=sys.stdout, leave=False)
            for i in bar:
                idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
                xb = augment(xtr[idx], gen, aug_pad, flip)
                loss = F.cross_entropy(net(xb), ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.detach().item() * len(idx)
                seen += len(idx)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
            acc = accuracy(net, xte, yte, mode)
            rec = dict(phase=phase, epoch=epoch + 1, loss=loss_sum / seen, test_acc=acc,
                       seconds=round(time.time() - t0, 1))
            print(json.dumps(rec), flush=True)
            state["history"].append(rec)
            state["epoch"] = epoch + 1
            if phase == "float":
                state["float_acc"] = acc
            _save(ckpt_path, spec, net, state, opt, sched)
        state["phase"] = "qat" if phase == "float" else "done"
        state["epoch"] = 0
        _save(ckpt_path, spec, net, state, None, None)

    return finish(args, out, spec, net, state, xte, yte)


def _save(path, spec, net, state, opt, sched):
    tmp = path.with_suffix(".tmp")
    torch.save(dict(spec=spec.to_dict(), model=net.state_dict(), state=state,
                    optimizer=None if opt is None else dict(opt=opt.state_dict(),
                                                            sched=sched.state_dict()),
                    rng=torch.get_rng_state()), tmp)
    tmp.replace(path)


def finish(args, out, spec, net, state, xte, yte) -> int:
    from . import export, golden

    model_path = out / "model.npz"
    # The trained float parameters alone (no optimizer state): enough to rebuild the PyTorch
    # network and hold it against the exported file.
    torch.save(dict(spec=spec.to_dict(), model=net.state_dict()), out / "weights.pt")
    fq = accuracy(net, xte, yte, "fakequant")
    integer = accuracy(net, xte, yte, "integer")
    meta = dict(dataset=args.dataset, seed=args.seed, float_acc=state["float_acc"],
                fakequant_acc=fq, history=state["history"])
    export.export(net, model_path, meta=meta)
    model = golden.load(model_path)
    gold = golden.accuracy(model, xte.numpy(), yte.numpy())
    metrics = dict(arch=spec.arch, dataset=args.dataset, spec=spec.to_dict(),
                   test_images=len(xte), float_acc=state["float_acc"], fakequant_acc=fq,
                   torch_integer_acc=integer, golden_acc=gold,
                   float_to_integer_gap=None if state["float_acc"] is None
                   else state["float_acc"] - gold,
                   history=state["history"], model=str(model_path))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("history", "spec")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
