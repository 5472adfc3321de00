"""The training loop: for each batch, the student's outputs, the cached teacher targets, the loss, an
optimizer step, and (rank 0) logging, dev evaluation and checkpoints.

AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019) with a linear
warmup and linear decay, gradient clipping by total norm; a static student's embedding table
uses Adam without decay. Batches come from a :class:`torch.utils.data.DistributedSampler`
seeded by (seed, epoch), and the state saved in ``last/`` (optimizer, scheduler, RNG, position)
makes a resumed run bit-identical to an uninterrupted one.

With ``--precision bf16``/``fp16`` the forward passes and the loss run under
:func:`clirkit.device.autocast` (the weights, optimizer state and the loss that is
backpropagated stay float32), and fp16 steps through a gradient scaler (Micikevicius et al.,
"Mixed Precision Training", ICLR 2018, arXiv:1710.03740) whose state is part of ``last/``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from clirkit.config import BEST_BY, DistillConfig, dev_column
from clirkit.device import Precision, autocast, grad_scaler
from clirkit.distill import checkpoint
from clirkit.distill.cache import Prepared
from clirkit.distill.curves import write_training
from clirkit.distill.ddp import DistEnv
from clirkit.distill.dev import evaluate_dev
from clirkit.distill.objective import IdfTables, distill_batch, make_loss
from clirkit.distill.pairs import augmented, parse_augment
from clirkit.distill.students import StaticStudent, Student
from clirkit.progress import progress

log = logging.getLogger("clirkit")


class Trainer:
    """The training loop of one process (rank 0 also evaluates and writes the run directory)."""

    def __init__(self, cfg: DistillConfig, env: DistEnv, device: torch.device, precision: Precision, data: Prepared,
                 student: Student, run=None, resume_state: dict[str, Any] | None = None) -> None:
        self.cfg, self.env, self.device, self.precision, self.data, self.run = cfg, env, device, precision, data, run
        self.student = student.to(device)
        self.loss_fn = make_loss(cfg).to(device)
        self.static = isinstance(student, StaticStudent)
        self.augment = parse_augment(cfg)
        self.local_bs = cfg.batch_size // env.world
        from torch.utils.data import DistributedSampler

        # DistributedSampler shuffles with its own torch.Generator seeded by seed + epoch, so the
        # order is a pure function of (seed, epoch): a resumed run sees the same batches.
        self.sampler = DistributedSampler(range(len(data.bitext.train_en)), num_replicas=env.world, rank=env.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=False)
        self.steps_per_epoch = math.ceil(len(self.sampler) / self.local_bs)
        self.total = cfg.epochs * self.steps_per_epoch
        self.warmup = int(cfg.warmup * self.total)
        self.opt = self._optimizer()
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self.lr_factor)
        self.scaler = grad_scaler(device, precision)  # a pass-through unless fp16 on CUDA
        self.model = self._wrap_ddp()
        self.train_ids = None
        if self.static:  # tokenise the foreign side once; it is a rust call, but per batch it adds up
            self.train_ids = [e.ids for e in student.tokenizer.encode_batch(data.bitext.train_fx,
                                                                              add_special_tokens=False)]
        # Document frequencies over each side of the training bitext (idf OT marginals), counted once.
        self.idf = self._idf() if cfg.token_weights == "idf" and cfg.loss != "mse" else None
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best = -math.inf
        self.best_step: int | None = None
        self.rows: list[dict[str, Any]] = []
        self.elapsed = 0.0
        if resume_state is not None:
            self._restore(resume_state)

    # -- the loop

    def train(self) -> None:
        """Train to the end (or until killed); rank 0 logs, evaluates and saves."""
        if self.env.main and self.step == 0 and self.data.dev is not None:
            self.rows.append(self._evaluated({"step": 0, "epoch": 0}))
        self.student.train()
        with self._meter() as meter:
            for epoch in range(self.epoch, self.cfg.epochs):
                batches = self.batches(epoch)
                first = self.batch_in_epoch if epoch == self.epoch else 0
                self.epoch = epoch
                for bi in range(first, len(batches)):
                    t0 = time.perf_counter()
                    rows = batches[bi]
                    feats = self.train_features(rows, epoch)
                    with autocast(self.device, self.precision):  # a no-op for fp32
                        student = self.model(feats)  # tokens, mask, sentence
                        teacher = self.data.train.batch(rows)  # tokens, mask, ids, sentence (from the cache)
                        out = self.loss_fn(distill_batch(*student, feats["input_ids"], *teacher, self.idf))
                    lr = self.optimizer_step(out.loss.float())
                    end_of_epoch = self.advance(epoch, bi + 1, len(batches))
                    self.elapsed += time.perf_counter() - t0
                    meter.add(len(rows) * self.env.world)
                    log_row, evaluate, save = self.due(end_of_epoch)
                    if log_row:
                        self.log_row(out, lr, epoch + (bi + 1) / len(batches), evaluate, meter)
                    if save:
                        self.save()
                    if evaluate or save:  # pairs/s measures training, not evaluation or saving
                        meter.restart()

    # -- one step

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This process's training rows of ``epoch``, in batches."""
        self.sampler.set_epoch(epoch)
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        return [order[i:i + self.local_bs] for i in range(0, len(order), self.local_bs)]

    def features(self, rows: np.ndarray, texts: list[str], ids: list[list[int]] | None) -> dict:
        if ids is not None:
            return StaticStudent.pad([ids[r] for r in rows])
        return self.student.tokenize([texts[r] for r in rows])

    def train_features(self, rows: np.ndarray, epoch: int) -> dict:
        """Student features of training rows; with ``augment`` the foreign side is perturbed on the fly."""
        texts = self.data.bitext.train_fx
        if self.augment is None:
            return self.features(rows, texts, self.train_ids)
        return self.student.tokenize(augmented(self.augment, texts, rows, self.cfg.seed, epoch))

    def optimizer_step(self, loss: torch.Tensor) -> float:
        """Backpropagate, clip, step the optimizer and the schedule (:func:`scaled_step`); return the learning rate."""
        return scaled_step(loss, self.opt, self.sched, self.scaler, self.student.parameters(), self.cfg.max_grad_norm)

    def advance(self, epoch: int, done: int, n_batches: int) -> bool:
        """Count a step (``done`` batches of ``n_batches`` done in ``epoch``); return whether the epoch ended."""
        self.step += 1
        self.batch_in_epoch = done
        if done == n_batches:
            self.epoch, self.batch_in_epoch = epoch + 1, 0
        return done == n_batches

    def due(self, end_of_epoch: bool) -> tuple[bool, bool, bool]:
        """After this step: write a row (rank 0), evaluate on dev (rank 0), save the resumable state."""
        cfg = self.cfg
        last = self.step == self.total
        evaluate = (self.step % cfg.eval_every == 0 if cfg.eval_every else end_of_epoch) or last
        save = ((self.step % cfg.save_every == 0) if cfg.save_every else evaluate) or last
        log_row = self.env.main and (self.step % cfg.log_every == 0 or evaluate)
        return log_row, evaluate, save

    # -- rank 0: rows, dev evaluation, checkpoints

    def log_row(self, out, lr: float, epoch: float, evaluate: bool, meter: _Meter) -> None:
        """A row of metrics/training.csv; with ``evaluate``, the dev measures (and the best checkpoint)."""
        pps = meter.rate()
        loss = float(out.loss.detach())
        row = {"step": self.step, "epoch": epoch, "loss": loss, **{k: float(v) for k, v in out.parts.items()},
               "lr": lr, "pairs_per_s": pps}
        self.rows.append(self._evaluated(row) if evaluate else row)
        info = f"loss {loss:.4f} · {pps:,.0f} pairs/s"
        if self.best > -math.inf:
            info += f" · dev {BEST_BY} {self.best:.3f}"
        meter.show(self.step, info)

    def evaluate(self) -> dict[str, float]:
        """Dev loss and dev mate retrieval (rank 0, unwrapped student, no gradients)."""
        b, dev = self.data.bitext, self.data.dev
        if dev is None or not b.dev_fx:
            return {}
        with autocast(self.device, self.precision):
            return evaluate_dev(self.cfg, self.student, self.loss_fn, b.dev_fx, dev, self.idf, max(self.local_bs, 64))

    def _evaluated(self, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` with the dev measures; the student goes to checkpoint/ when it is the best so far."""
        assert self.run is not None
        metrics = self.evaluate()
        row.update(metrics)
        score = metrics.get(dev_column(BEST_BY))
        if score is not None and score > self.best:
            self.best, self.best_step = score, self.step
            checkpoint.save_model(self.student, self.run.path / "checkpoint")
        if metrics:
            log.info("step %d: dev loss %.4f, dev %s %.4f, R@1 %.4f", self.step, metrics["dev_loss"], BEST_BY,
                     metrics.get(dev_column(BEST_BY), float("nan")), metrics.get("dev_R@1", float("nan")))
        return row

    # -- state

    def save(self) -> None:
        """The resumable state in last/ (and the rows so far); every rank calls it, rank 0 writes."""
        if self.env.main:
            assert self.run is not None
            write_training(self.rows, self.run.sub("metrics"))
        state = self.state()
        if self.env.main:
            checkpoint.save_state(self.run.path, self.student, state)

    def state(self) -> dict[str, Any]:
        """Everything a bit-identical resume needs; collective (the RNG states of every rank)."""
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), **checkpoint.rng_state(self.env, self.device), "best": self.best,
                "best_step": self.best_step, "rows": json.dumps(self.rows), "elapsed": self.elapsed,
                "world": self.env.world}

    def _restore(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # empty for a disabled scaler (and absent from older states)
            self.scaler.load_state_dict(state["scaler"])
        checkpoint.restore_rng(state, self.env, self.device)
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best, self.best_step = state["best"], state["best_step"]
        self.rows = json.loads(state["rows"])
        self.elapsed = state["elapsed"]

    # -- set-up

    def lr_factor(self, step: int) -> float:
        """Linear warmup to the peak over ``warmup`` steps, then linear decay to 0 at the last step."""
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.student.parameters() if p.requires_grad]
        # The fused kernel is 3x faster on CPU for a 16k x 384 table (one pass instead of one per
        # operation) and just as deterministic.
        if self.static:
            # Adam without decay for an embedding table: rows of rare tokens must not shrink to 0 between updates.
            return torch.optim.Adam(params, lr=self.cfg.lr, fused=True)
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, fused=True)

    def _wrap_ddp(self) -> torch.nn.Module:
        if not self.env.distributed:
            return self.student
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(self.student, find_unused_parameters=not self.static)

    def _idf(self) -> IdfTables:
        """Document frequencies over the training bitext: English side (teacher ids), foreign side (student ids)."""
        t = self.data.train
        assert t is not None
        chunks = [np.arange(i, min(i + 512, len(t))) for i in range(0, len(t), 512)]
        fx = self.data.bitext.train_fx

        def student_batches():
            for rows in chunks:
                feats = self.features(rows, fx, self.train_ids)
                yield feats["input_ids"], self.student.token_mask(feats)

        return IdfTables.count(student_batches(), self.student.vocab_size,
                               (t.id_batch(rows) for rows in chunks), len(self.data.teacher.model.tokenizer))

    @contextmanager
    def _meter(self):
        """Rank 0's progress bar and pairs/s; the other ranks get a silent meter."""
        if not self.env.main:
            yield _Meter()
            return
        with progress() as bar:
            yield _Meter(bar, bar.add_task("distilling", total=self.total, completed=self.step, info=""))


def scaled_step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                scaler: torch.amp.GradScaler, params, max_norm: float) -> float:
    """Backpropagate ``loss``, clip the gradients of ``params`` to ``max_norm``, step ``opt`` and
    ``sched``; return the learning rate of this step.

    The gradient scaler (fp16) scales the loss, unscales the gradients before clipping so the
    norm is the true one, and skips the optimizer step when they overflowed (then lowers its
    scale); the schedule then stays where it is, so the skipped step does not eat a step of
    warmup or decay (torch warns "lr_scheduler.step() before optimizer.step()" otherwise).
    Disabled (fp32, bf16), the scaler changes nothing and every step counts.
    """
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    before = scaler.get_scale()
    scaler.step(opt)
    scaler.update()
    lr = sched.get_last_lr()[0]
    if optimizer_stepped(before, scaler.get_scale()):
        sched.step()
    return lr


def optimizer_stepped(scale_before: float, scale_after: float) -> bool:
    """Whether the scaler let the optimizer step, from its scale before and after ``update()``:
    it lowers the scale exactly when the gradients overflowed and the step was skipped (it
    keeps or raises it otherwise; a disabled scaler's scale is always 1)."""
    return not scale_after < scale_before


class _Meter:
    """Training throughput (pairs/s over a window) and the progress bar that shows it."""

    def __init__(self, bar=None, task=None) -> None:
        self.bar, self.task = bar, task
        self.pairs, self.start = 0, time.perf_counter()

    def add(self, pairs: int) -> None:
        self.pairs += pairs

    def rate(self) -> float:
        """Pairs/s since the last call (or :meth:`restart`); starts a new window."""
        now = time.perf_counter()
        pps = self.pairs / max(now - self.start, 1e-9)
        self.pairs, self.start = 0, now
        return pps

    def restart(self) -> None:
        self.start = time.perf_counter()

    def show(self, step: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)
