"""hpctrain's reference DDP trainer for image classification: run it with torchrun, or import it.

    torchrun --nproc-per-node 4 -m hpctrain.trainer --data /scratch/her2 --epochs 50
    hpctrain submit torchrun hpctrain.trainer --gpus-per-node 4 -- --data /scratch/her2

The data folder holds `train/CLASS/*.png` and `val/CLASS/*.png` (any image PIL reads). It does
what the hand-written medical trainers do: DistributedSampler with set_epoch, AMP (bf16, or fp16
with a GradScaler), gradient accumulation, clipping, class weights and focal loss, early stopping,
a checkpoint every N epochs and resume (rank 0 writes, every rank loads), the best model by
validation AUC, sensitivity / specificity and the Youden threshold per class; seeded. Without
GPUs it trains on CPU with gloo.

Rank 0 prints one metrics line per epoch that hpctrain's runner turns into events:

    ##hpctrain {"event": "metrics", "epoch": 3, "total": 50, "val_auc": 0.91, ...}

This file imports nothing from hpctrain, so it also runs as a plain script copied anywhere.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

MARKER = "##hpctrain "
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
LAST, BEST = "last.pt", "best.pt"


# -- metrics (pure functions of scores and labels) ----------------------------------------
def roc_auc(scores: torch.Tensor, positives: torch.Tensor) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None without both classes."""
    scores, positives = scores.double(), positives.bool()
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    # Average rank of each distinct score (1-based), so that ties get the mean of their ranks.
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    rank_sum = mean_rank[inverse][positives].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def youden(scores: torch.Tensor, positives: torch.Tensor) -> tuple[float, float, float] | None:
    """(threshold, sensitivity, specificity) maximising J = sensitivity + specificity - 1."""
    positives = positives.bool()
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    best = None
    for threshold in torch.unique(scores).tolist():
        predicted = scores >= threshold
        sensitivity = int((predicted & positives).sum()) / n_pos
        specificity = int((~predicted & ~positives).sum()) / n_neg
        if best is None or sensitivity + specificity > best[1] + best[2]:
            best = (threshold, sensitivity, specificity)
    return best


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """Flat metrics: val_accuracy, val_auc (macro, one-vs-rest) and per class auc, sensitivity,
    specificity (at the arg-max decision) and the Youden threshold with its
    sensitivity/specificity."""
    predicted = probs.argmax(1)
    metrics = {"val_accuracy": float((predicted == labels).double().mean())}
    aucs = []
    for index, name in enumerate(classes):
        key = metric_key(name)
        positives = labels == index
        scores = probs[:, index] if len(classes) > 2 or index == 1 else 1 - probs[:, 1]
        auc = roc_auc(scores, positives)
        if auc is not None:
            aucs.append(auc)
            metrics[f"val_auc_{key}"] = auc
        if positives.any():
            metrics[f"val_sensitivity_{key}"] = int((predicted[positives] == index).sum()) / int(
                positives.sum()
            )
        if (~positives).any():
            metrics[f"val_specificity_{key}"] = int((predicted[~positives] != index).sum()) / int(
                (~positives).sum()
            )
        point = youden(scores, positives)
        if point:
            (
                metrics[f"val_youden_threshold_{key}"],
                metrics[f"val_youden_sensitivity_{key}"],
                metrics[f"val_youden_specificity_{key}"],
            ) = point
    if aucs:
        metrics["val_auc"] = sum(aucs) / len(aucs) if len(classes) > 2 else aucs[-1]
    return {k: round(v, 6) for k, v in metrics.items()}


def metric_key(class_name: str) -> str:
    return re.sub(r"\W+", "_", class_name).strip("_").lower() or "class"


# -- losses -------------------------------------------------------------------------------
class FocalLoss(nn.Module):
    """Focal loss (Lin et al.) with optional per-class weights: (1 - p_t)^gamma * weighted CE."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        log_pt = log_p.gather(1, target[:, None]).squeeze(1)
        loss = -((1 - log_pt.exp()) ** self.gamma) * log_pt
        if self.weight is not None:
            w = self.weight[target]
            return (loss * w).sum() / w.sum()
        return loss.mean()


def class_weights(labels: list[int], n_classes: int) -> torch.Tensor:
    """Inverse class frequency, normalised to mean 1 (a missing class weighs 0)."""
    counts = torch.bincount(torch.tensor(labels), minlength=n_classes).double()
    weights = torch.where(
        counts > 0, counts.sum() / (n_classes * counts.clamp(min=1)), torch.zeros_like(counts)
    )
    return weights.float()


# -- data ---------------------------------------------------------------------------------
class ImageFolder(torch.utils.data.Dataset):
    """`root/CLASS/*.png`; yields (image tensor, label, index)."""

    def __init__(self, root: Path, classes: list[str], size: int, augment: bool):
        self.items = [
            (p, i)
            for i, c in enumerate(classes)
            for p in sorted((root / c).iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.items:
            raise SystemExit(
                f"error: no images under {root}/CLASS/ (expected e.g. {root}/{classes[0]}/a.png)"
            )
        self.size, self.augment = size, augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.items[index]
        with Image.open(path) as image:
            image = image.convert("RGB").resize((self.size, self.size))
            data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        x = data.view(self.size, self.size, 3).permute(2, 0, 1).float() / 255.0
        if self.augment and random.random() < 0.5:
            x = x.flip(2)
        return (x - 0.5) / 0.25, label, index


def find_classes(data: Path) -> list[str]:
    train = data / "train"
    if not train.is_dir() or not (data / "val").is_dir():
        raise SystemExit(f"error: {data} needs train/CLASS/ and val/CLASS/ folders of images")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise SystemExit(
            f"error: {train} has {len(classes)} class folder(s); a classifier needs at least 2"
        )
    return classes


# -- model --------------------------------------------------------------------------------
def build_model(arch: str, n_classes: int) -> nn.Module:
    if arch == "small":

        def block(i, o):
            return nn.Sequential(
                nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)
            )

        return nn.Sequential(
            block(3, 16),
            nn.MaxPool2d(2),
            block(16, 32),
            nn.MaxPool2d(2),
            block(32, 64),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, n_classes),
        )
    try:
        import torchvision
    except ImportError:
        raise SystemExit(
            f"error: --arch {arch} needs torchvision; install it or use --arch small"
        ) from None
    return torchvision.models.get_model(arch, num_classes=n_classes)


# -- distributed helpers ------------------------------------------------------------------
class Dist:
    """Rank, world size and device of this process, from torchrun's environment."""

    def __init__(self, backend: str):
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if backend == "auto":
            backend = os.environ.get("HPCTRAIN_DIST_BACKEND") or (
                "nccl" if torch.cuda.is_available() else "gloo"
            )
        self.backend = backend
        if backend == "nccl":
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            dist.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.world

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows of every rank (DistributedSampler gives each rank the same count)."""
        if self.world == 1:
            return rows
        parts = [torch.empty_like(rows) for _ in range(self.world)]
        dist.all_gather(parts, rows)
        return torch.cat(parts)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            dist.destroy_process_group()


def emit(event: str, **fields) -> None:
    print(MARKER + json.dumps({"event": event, **fields}), flush=True)


def seed_everything(seed: int, rank: int) -> None:
    random.seed(seed + rank)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed + rank)
    except ImportError:
        pass


def save_atomic(state: dict, path: Path) -> None:
    """Write under a temporary name, then rename: a cut never leaves a partial checkpoint."""
    tmp = path.with_name(f".{path.name}.hpctrain-part")  # core.files style (standalone here)
    torch.save(state, tmp)
    os.replace(tmp, path)


def resume_path(args, out: Path) -> Path | None:
    """The job's own last checkpoint (a requeued job), else --resume, else $HPCTRAIN_RESUME_FROM."""
    own = out / LAST
    if own.is_file():
        return own
    given = args.resume or os.environ.get("HPCTRAIN_RESUME_FROM")
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"error: checkpoint to resume from not found: {path}")
        return path
    return None


# -- training -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="hpctrain.trainer",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data", type=Path, required=True, help="folder with train/CLASS/ and val/CLASS/ images"
    )
    p.add_argument("--out", type=Path, default=Path("checkpoints"), help="checkpoints folder")
    p.add_argument(
        "--arch", default="small", help="'small' (a 3-layer CNN) or a torchvision model name"
    )
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--accumulation-steps", type=int, default=1)
    p.add_argument("--grad-clip-norm", type=float, default=1.0, help="0 turns clipping off")
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off")
    p.add_argument("--loss", choices=("ce", "focal"), default="ce")
    p.add_argument("--focal-gamma", type=float, default=2.0)
    p.add_argument("--class-weights", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument(
        "--early-stop-patience", type=int, default=10, help="epochs without a better val AUC"
    )
    p.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints")
    p.add_argument("--resume", help="checkpoint to start from (default: OUT/last.pt if present)")
    p.add_argument("--workers", type=int, default=2, help="data-loader workers per process")
    p.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.accumulation_steps < 1 or args.checkpoint_every < 1 or args.epochs < 1:
        p.error("--epochs, --accumulation-steps and --checkpoint-every must be at least 1")
    return args


class Trainer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dist = Dist(args.backend)
        seed_everything(args.seed, self.dist.rank)
        self.classes = find_classes(args.data)
        self.train_set = ImageFolder(
            args.data / "train", self.classes, args.image_size, augment=True
        )
        self.val_set = ImageFolder(args.data / "val", self.classes, args.image_size, augment=False)
        self.train_sampler = torch.utils.data.DistributedSampler(
            self.train_set, self.dist.world, self.dist.rank, shuffle=True, seed=args.seed
        )
        self.val_sampler = torch.utils.data.DistributedSampler(
            self.val_set, self.dist.world, self.dist.rank, shuffle=False
        )
        device = self.dist.device
        model = build_model(args.arch, len(self.classes)).to(device)
        if self.dist.world > 1:
            ids = [self.dist.local_rank] if device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.model = model
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=args.lr, weight_decay=args.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=args.epochs
        )
        weight = (
            class_weights([label for _, label in self.train_set.items], len(self.classes)).to(
                device
            )
            if args.class_weights
            else None
        )
        self.loss = (
            FocalLoss(args.focal_gamma, weight)
            if args.loss == "focal"
            else nn.CrossEntropyLoss(weight=weight)
        ).to(device)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
        self.start_epoch, self.best_auc, self.stale = 1, -math.inf, 0
        self.out = args.out
        self.stop_requested = False

    # -- state ----------------------------------------------------------------------------
    def state(self, epoch: int) -> dict:
        module = self.model.module if hasattr(self.model, "module") else self.model
        return {
            "model": module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "best_auc": self.best_auc,
            "stale": self.stale,
            "classes": self.classes,
            "args": {k: str(v) for k, v in vars(self.args).items()},
        }

    def load(self, path: Path) -> None:
        # Every rank reads the same file, so no broadcast is needed; map to CPU then move.
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("classes") != self.classes:
            raise SystemExit(
                f"error: {path} was trained on classes {state.get('classes')}, not {self.classes}"
            )
        module = self.model.module if hasattr(self.model, "module") else self.model
        module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.best_auc, self.stale = state["best_auc"], state["stale"]
        if self.dist.main:
            emit("resumed", path=str(path), epoch=state["epoch"])

    def save(self, epoch: int, name: str) -> Path:
        path = self.out / name
        save_atomic(self.state(epoch), path)
        return path

    # -- one epoch ------------------------------------------------------------------------
    def loader(self, dataset, sampler, shuffle_seed: int):
        generator = torch.Generator().manual_seed(shuffle_seed)
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.args.batch_size,
            sampler=sampler,
            num_workers=self.args.workers,
            generator=generator,
            pin_memory=self.dist.device.type == "cuda",
        )

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.amp_dtype)

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.train_sampler.set_epoch(epoch)
        steps, total, count = self.args.accumulation_steps, 0.0, 0
        batches = self.loader(self.train_set, self.train_sampler, self.args.seed + epoch)
        n_batches = len(batches)
        self.optimizer.zero_grad(set_to_none=True)
        for i, (x, y, _) in enumerate(batches):
            x, y = (
                x.to(self.dist.device, non_blocking=True),
                y.to(self.dist.device, non_blocking=True),
            )
            boundary = (i + 1) % steps == 0 or i + 1 == n_batches
            # Between accumulation boundaries DDP must not all-reduce gradients.
            sync = (
                nullcontext()
                if boundary or not hasattr(self.model, "no_sync")
                else self.model.no_sync()
            )
            with sync:
                with self.autocast():
                    loss = self.loss(self.model(x), y)
                self.scaler.scale(loss / steps).backward()
            if boundary:
                if self.args.grad_clip_norm > 0:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
            total += loss.item() * len(y)
            count += len(y)
        self.scheduler.step()
        return self.dist.mean(total / max(count, 1))

    @torch.no_grad()
    def evaluate(self) -> tuple[float, dict]:
        self.model.eval()
        rows, total, count = [], 0.0, 0
        for x, y, index in self.loader(self.val_set, self.val_sampler, 0):
            x, y = x.to(self.dist.device), y.to(self.dist.device)
            with self.autocast():
                logits = self.model(x)
            total += F.cross_entropy(logits.float(), y, reduction="sum").item()
            count += len(y)
            probs = logits.float().softmax(1)
            rows.append(torch.cat([index.to(probs)[:, None], y.to(probs)[:, None], probs], 1))
        gathered = self.dist.gather(torch.cat(rows)).cpu().double()
        # DistributedSampler pads the last ranks with repeated samples: count each sample once.
        gathered = gathered[torch.argsort(gathered[:, 0], stable=True)]
        first = torch.ones(len(gathered), dtype=torch.bool)
        first[1:] = gathered[1:, 0] != gathered[:-1, 0]
        gathered = gathered[first]
        metrics = classification_metrics(gathered[:, 2:], gathered[:, 1].long(), self.classes)
        return self.dist.mean(total / max(count, 1)), metrics

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> float:
        args, main = self.args, self.dist.main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()
        start = resume_path(args, self.out)
        if start:
            self.load(start)
        if main:
            emit(
                "setup",
                world_size=self.dist.world,
                backend=self.dist.backend,
                device=str(self.dist.device),
                classes=self.classes,
                train=len(self.train_set),
                val=len(self.val_set),
                start_epoch=self.start_epoch,
            )
        for epoch in range(self.start_epoch, args.epochs + 1):
            began = time.time()
            train_loss = self.train_epoch(epoch)
            val_loss, metrics = self.evaluate()
            auc = metrics.get("val_auc", -math.inf)
            improved = auc > self.best_auc
            self.best_auc, self.stale = (auc, 0) if improved else (self.best_auc, self.stale + 1)
            # A stop signal may reach some ranks only: they agree on it before acting.
            stop = self.dist.mean(float(self.stop_requested)) > 0
            if main:
                emit(
                    "metrics",
                    epoch=epoch,
                    total=args.epochs,
                    train_loss=round(train_loss, 6),
                    val_loss=round(val_loss, 6),
                    seconds=round(time.time() - began, 2),
                    **metrics,
                )
                if improved:
                    path = self.save(epoch, BEST)
                    emit("model", path=str(path), score=auc, metric="val_auc", epoch=epoch)
                if epoch % args.checkpoint_every == 0 or epoch == args.epochs or stop:
                    emit("checkpoint", path=str(self.save(epoch, LAST)), epoch=epoch)
            self.dist.barrier()
            if self.stale >= args.early_stop_patience:
                if main:
                    emit("early_stop", epoch=epoch, best_auc=self.best_auc)
                break
            if stop:
                if main:
                    emit("stopped", reason="signal", epoch=epoch)
                break
        self.dist.close()
        return self.best_auc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trainer = Trainer(args)

    def request_stop(signum, frame):  # finish the epoch, checkpoint, leave: the job is requeued
        trainer.stop_requested = True

    signal.signal(signal.SIGUSR2, request_stop)
    trainer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
