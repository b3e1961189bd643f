"""Train a network: float pre-training, then quantization-aware training, then export.

    python -m model.train --arch resnet14 --dataset fashion-mnist --out runs/resnet14_fmnist
    python -m model.train --recipe long --device cuda --out runs/r14_long   # the long recipe

Writes into ``--out``: ``checkpoint.pt`` (after every epoch; ``--resume`` continues from it,
and re-running a finished run only redoes the final evaluation and export), ``model.npz`` (the
exported integer model), ``weights.pt`` (the trained PyTorch parameters and network spec) and
``metrics.json`` (float, fake-quant, PyTorch-integer and golden integer accuracy on the test
split, and the float-to-integer gap).

Devices. ``--device auto`` (the default) trains on CUDA when PyTorch sees a GPU, else on the
CPU. The whole data set is moved to the device once; batches are indexed and augmented there.
The random numbers (batch order, shifts, flips, erased boxes) are drawn on the CPU from the
seeded generator either way, so a CPU run gives the same results as before this option
existed, and a GPU run differs from it only by floating-point summation order.

Precision rule. Mixed precision (``--amp bf16|fp16``) and TF32 are allowed in the *float*
phase only. The QAT phase runs in full fp32 (autocast off, TF32 off), because its fake-quant
rounding, the learned clipping values and the BatchNorm statistics it collects are what the
exported integers are computed from; export and the final evaluation (float64 integer mode and
the golden model) run on the CPU. The exported file's integer semantics therefore never depend
on the device or the precision used for training.

Recipes (``--recipe``) set the schedule and the regularisers at once; any option given
explicitly overrides the recipe:

``default``
    the schedule of :data:`ARCH_DEFAULTS` (ResNet14: 12 float + 6 QAT epochs), cross-entropy,
    shifts and flips; the recipe of the shipped models.
``long``
    60 float + 30 QAT epochs, label smoothing 0.1, random erasing, and distillation during QAT
    from the float network (KL divergence to its logits at temperature 4, weight 0.5).
"""

from __future__ import annotations

import argparse
import dataclasses
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
DEVICES = ("auto", "cpu", "cuda")
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AUGMENTS = ("basic", "erase")

# Per-architecture defaults: input size the images are padded to, training schedule.
ARCH_DEFAULTS = {
    "resnet14": dict(image_size=32, float_epochs=12, qat_epochs=6, batch_size=128, lr=0.1),
    "digits_cnn": dict(image_size=8, float_epochs=30, qat_epochs=30, batch_size=64, lr=0.05),
}

# Named recipes (see the module docstring). None leaves the architecture's default.
RECIPES = {
    "default": dict(float_epochs=None, qat_epochs=None, label_smoothing=0.0,
                    distill_weight=0.0, distill_temperature=4.0, augment="basic"),
    "long": dict(float_epochs=60, qat_epochs=30, label_smoothing=0.1,
                 distill_weight=0.5, distill_temperature=4.0, augment="erase"),
}

# The options a recipe sets, recorded in metrics.json with the rest of the schedule.
TRAINING_OPTIONS = ("recipe", "float_epochs", "qat_epochs", "batch_size", "lr",
                    "label_smoothing", "distill_weight", "distill_temperature", "augment",
                    "amp", "limit", "seed", "init_float")


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
    p.add_argument("--recipe", choices=RECIPES, default="default",
                   help="schedule and regularisers (see above); explicit options override it")
    p.add_argument("--float-epochs", type=int, default=None)
    p.add_argument("--qat-epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (float phase)")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="label smoothing of the cross-entropy, 0 <= e < 1 (both phases)")
    p.add_argument("--distill-weight", type=float, default=None,
                   help="weight w of the distillation loss during QAT, 0..1: the loss is "
                        "(1-w) CE + w T^2 KL(teacher || student) at temperature T, the "
                        "teacher being the float network the QAT phase starts from "
                        "(0: no distillation)")
    p.add_argument("--distill-temperature", type=float, default=None,
                   help="softmax temperature T of the distillation loss")
    p.add_argument("--augment", choices=AUGMENTS, default=None,
                   help="basic: random shifts (and flips for Fashion-MNIST/CIFAR-10); "
                        "erase: basic plus a zeroed square of 1/4 the image side on half "
                        "the images (random erasing)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="training device; auto: cuda when available (export stays on CPU)")
    p.add_argument("--amp", choices=AMP_DTYPES, default="none",
                   help="mixed precision in the float phase only (QAT and export are fp32)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train images")
    p.add_argument("--test-limit", type=int, default=None, help="use only the first N test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init-float", default=None, metavar="CHECKPOINT",
                   help="skip the float phase: start QAT from the float network of another "
                        "run's checkpoint.pt (same network up to its bit widths, float phase "
                        "finished), e.g. one float run shared by a bit-width sweep")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    for k, v in RECIPES[args.recipe].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    d = ARCH_DEFAULTS[args.arch]
    for k in ("float_epochs", "qat_epochs", "batch_size", "lr"):
        if getattr(args, k) is None:
            setattr(args, k, d[k])
    if args.float_epochs < 0 or args.qat_epochs < 0:
        p.error("epoch counts must not be negative")
    if not 0.0 <= args.label_smoothing < 1.0:
        p.error(f"--label-smoothing must be in [0, 1), not {args.label_smoothing}")
    if not 0.0 <= args.distill_weight <= 1.0:
        p.error(f"--distill-weight must be in [0, 1], not {args.distill_weight}")
    if args.distill_temperature <= 0:
        p.error(f"--distill-temperature must be positive, not {args.distill_temperature}")
    try:
        args.blocks = tuple(int(b) for b in args.blocks.split(","))
    except ValueError:
        p.error(f"--blocks must be comma-separated integers, not {args.blocks!r}")
    return args


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device``; ValueError when CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = (f"CUDA {torch.version.cuda}" if torch.version.cuda
                 else "a CPU-only build")
        raise ValueError(f"--device cuda: PyTorch {torch.__version__} ({build}) sees no CUDA "
                         "device; use --device cpu or auto, or install a CUDA build of torch")
    return torch.device(name)


def set_fp32_matmul(device: torch.device, allow_tf32: bool) -> None:
    """TF32 convolutions and matmuls on CUDA in the float phase only (the precision rule)."""
    if device.type == "cuda":
        precision = "tf32" if allow_tf32 else "ieee"
        torch.backends.cudnn.conv.fp32_precision = precision
        torch.backends.cuda.matmul.fp32_precision = precision


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int, flip: bool,
            erase: int = 0) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero fill), optional horizontal flip and,
    with ``erase`` > 0, a zeroed ``erase+1``-pixel square (clipped at the border) at a random
    centre on half the images; on integer pixels (the network always sees raw integer pixels).

    ``x`` may live on any device: the random numbers come from the CPU generator ``gen`` (so
    CPU and GPU runs draw the same ones) and only the gathers run where ``x`` is."""
    n, _, h, w = x.shape
    dev = x.device
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev)
        rows = (dy.view(n, 1) + torch.arange(h, device=dev).view(1, h)).view(n, 1, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w, device=dev).view(1, w)).view(n, 1, 1, w)
        idx_n = torch.arange(n, device=dev).view(n, 1, 1, 1)
        idx_c = torch.arange(x.shape[1], device=dev).view(1, -1, 1, 1)
        x = xp[idx_n, idx_c, rows, cols]
    if flip:
        m = (torch.rand(n, generator=gen) < 0.5).to(dev)
        x = torch.where(m.view(n, 1, 1, 1), x.flip(3), x)
    if erase:
        on = (torch.rand(n, generator=gen) < 0.5).to(dev)
        cy = torch.randint(0, h, (n,), generator=gen).to(dev)
        cx = torch.randint(0, w, (n,), generator=gen).to(dev)
        half = erase // 2
        r = (torch.arange(h, device=dev).view(1, h, 1) - cy.view(n, 1, 1)).abs() <= half
        c = (torch.arange(w, device=dev).view(1, 1, w) - cx.view(n, 1, 1)).abs() <= half
        x = x.masked_fill((r & c & on.view(n, 1, 1)).unsqueeze(1), 0)
    return x


def training_loss(logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None,
                  label_smoothing: float, weight: float, temperature: float) -> torch.Tensor:
    """Cross-entropy (with label smoothing), blended with the distillation loss
    ``T**2 * KL(softmax(teacher/T) || softmax(student/T))`` (Hinton et al.; the T**2 keeps
    its gradients on the cross-entropy's scale) when ``teacher`` logits are given."""
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    if teacher is None or weight == 0:
        return loss
    t = temperature
    kd = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
                  reduction="batchmean", log_target=True) * (t * t)
    return (1 - weight) * loss + weight * kd


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


def make_teacher(spec: nets.NetSpec, state_dict: dict, device: torch.device) -> nets.QuantNet:
    """The frozen float network the QAT phase distils from."""
    teacher = nets.build(spec).to(device)
    teacher.load_state_dict(state_dict)
    teacher.eval().set_mode("float").requires_grad_(False)
    return teacher


BIT_FIELDS = ("w_bits", "a_bits", "first_bits", "last_bits", "res_bits")


def load_float_init(path: str | Path, spec: nets.NetSpec) -> tuple[dict, dict]:
    """``(float weights, training state at the start of QAT)`` from a checkpoint whose float
    phase is done and whose network is ``spec`` up to the bit widths (which the float phase
    never uses). ValueError names what does not fit."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        other = nets.NetSpec.from_dict(ck["spec"])
        state = ck["state"]
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"--init-float {path}: not a training checkpoint ({e})") from e
    bits = {k: getattr(spec, k) for k in BIT_FIELDS}
    if dataclasses.replace(other, **bits) != spec:
        raise ValueError(f"--init-float {path}: its network differs beyond the bit widths:\n"
                         f"  checkpoint {other.to_dict()}\n  arguments  {spec.to_dict()}")
    if state["phase"] == "float" or state["float_acc"] is None:
        raise ValueError(f"--init-float {path}: its float phase is not finished "
                         f"(phase {state['phase']}, epoch {state['epoch']})")
    if any(h["phase"] == "qat" for h in state["history"]):
        raise ValueError(f"--init-float {path}: its weights have been through QAT already; "
                         "use a run stopped after its float phase (--qat-epochs 0)")
    history = [h for h in state["history"] if h["phase"] == "float"]
    return ck["model"], dict(phase="qat", epoch=0, history=history,
                             float_acc=state["float_acc"])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    # The whole data set moves to the device once (Fashion-MNIST: 61 MB of uint8 pixels).
    xtr, ytr, xte_dev, yte_dev = (t.to(device) for t in (xtr, ytr, xte, yte))
    aug_pad = 2 if size >= 16 else 1
    flip = args.dataset in ("fashion-mnist", "cifar10")
    erase = size // 4 if args.augment == "erase" else 0
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    net = nets.build(spec).to(device)
    state = dict(phase="float", epoch=0, history=[], float_acc=None)
    opt_state, teacher_state = None, None
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if nets.NetSpec.from_dict(ck["spec"]) != spec:
            print(f"error: {ckpt_path} was trained with a different network spec:\n"
                  f"  checkpoint {ck['spec']}\n  arguments  {spec.to_dict()}", file=sys.stderr)
            return 2
        net.load_state_dict(ck["model"])
        state = ck["state"]
        opt_state = ck["optimizer"]
        teacher_state = ck.get("teacher")
        torch.set_rng_state(ck["rng"])
        if (state["phase"] == "qat" and state["epoch"] > 0 and args.distill_weight > 0
                and teacher_state is None):
            print(f"error: {ckpt_path} is in its QAT phase without the float network to "
                  "distil from (it was started without --distill-weight); resume it without "
                  "distillation or start a new run", file=sys.stderr)
            return 2
        print(f"resumed {ckpt_path}: phase {state['phase']}, epoch {state['epoch']}")
    elif args.init_float:
        try:
            weights, state = load_float_init(args.init_float, spec)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        net.load_state_dict(weights)
        args.float_epochs = len(state["history"])
        print(f"float network from {args.init_float}: float accuracy {state['float_acc']:.2%}")

    gen = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    for phase, epochs, lr in (("float", args.float_epochs, args.lr),
                              ("qat", args.qat_epochs, args.lr / 10)):
        if state["phase"] == "done" or (phase == "float" and state["phase"] == "qat"):
            continue
        if state["phase"] != phase:
            continue
        mode = "float" if phase == "float" else "fakequant"
        # The precision rule of the module docstring: reduced precision in the float phase only.
        amp_dtype = AMP_DTYPES[args.amp] if phase == "float" else None
        set_fp32_matmul(device, allow_tf32=phase == "float")
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
        teacher = None
        if phase == "qat" and state["epoch"] == 0 and opt_state is None:
            net.calibrate(xtr[:512])
        if phase == "qat" and args.distill_weight > 0:
            if teacher_state is None:
                # The float network as the float phase left it (calibration only touched the
                # activation clips, which float mode ignores).
                teacher_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            teacher = make_teacher(spec, teacher_state, device)
        opt, sched = make_optimizer(net, lr, epochs * steps_per_epoch, phase)
        if opt_state is not None:
            opt.load_state_dict(opt_state["opt"])
            sched.load_state_dict(opt_state["sched"])
            opt_state = None
        for epoch in range(state["epoch"], epochs):
            gen.manual_seed(args.seed * 1000 + epoch + (0 if phase == "float" else 500))
            perm = torch.randperm(len(xtr), generator=gen).to(device)
            net.train().set_mode(mode)
            t0, seen = time.time(), 0
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            bar = tqdm(range(steps_per_epoch), desc=f"{phase} {epoch + 1}/{epochs}",
                       disable=args.no_progress, file=sys.stdout, leave=False)
            for i in bar:
                idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
                xb = augment(xtr[idx], gen, aug_pad, flip, erase)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                    enabled=amp_dtype is not None):
                    tlogits = None
                    if teacher is not None:
                        with torch.no_grad():
                            tlogits = teacher(xb)
                    loss = training_loss(net(xb), ytr[idx], tlogits, args.label_smoothing,
                                         args.distill_weight, args.distill_temperature)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                loss_sum += loss.detach().double() * len(idx)
                seen += len(idx)
                # Reading the loss back synchronises a GPU, so the bar shows it now and then.
                if not args.no_progress and (i % 20 == 0 or i == steps_per_epoch - 1):
                    bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}")
            acc = accuracy(net, xte_dev, yte_dev, mode)
            rec = dict(phase=phase, epoch=epoch + 1, loss=float(loss_sum) / seen, test_acc=acc,
                       seconds=round(time.time() - t0, 1))
            print(json.dumps(rec), flush=True)
            state["history"].append(rec)
            state["epoch"] = epoch + 1
            if phase == "float":
                state["float_acc"] = acc
            _save(ckpt_path, spec, net, state, opt, sched, teacher_state)
        state["phase"] = "qat" if phase == "float" else "done"
        state["epoch"] = 0
        _save(ckpt_path, spec, net, state, None, None, teacher_state)

    # Export and the final evaluation run on the CPU in fp32/float64 whatever the device.
    net.cpu()
    return finish(args, out, spec, net, state, xte, yte, device)


def _save(path, spec, net, state, opt, sched, teacher_state=None):
    tmp = path.with_suffix(".tmp")
    ck = dict(spec=spec.to_dict(), model=net.state_dict(), state=state,
              optimizer=None if opt is None else dict(opt=opt.state_dict(),
                                                      sched=sched.state_dict()),
              rng=torch.get_rng_state())
    if teacher_state is not None:
        ck["teacher"] = teacher_state
    torch.save(ck, tmp)
    tmp.replace(path)


def finish(args, out, spec, net, state, xte, yte, device=None) -> int:
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
    training = {k: getattr(args, k) for k in TRAINING_OPTIONS}
    training["device"] = None if device is None else str(device)
    metrics = dict(arch=spec.arch, dataset=args.dataset, spec=spec.to_dict(),
                   test_images=len(xte), float_acc=state["float_acc"], fakequant_acc=fq,
                   torch_integer_acc=integer, golden_acc=gold,
                   float_to_integer_gap=None if state["float_acc"] is None
                   else state["float_acc"] - gold,
                   training=training, history=state["history"], model=str(model_path))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in metrics.items()
                      if k not in ("history", "spec", "training")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
