"""``clirkit distill``: the command, from a configuration to a run directory holding the trained student."""

from __future__ import annotations

import logging
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from clirkit.config import BEST_BY, DistillConfig, dev_column
from clirkit.device import Precision, autocast, resolve_device, resolve_precision
from clirkit.distill.cache import Prepared, prepare_teacher
from clirkit.distill.checkpoint import check_resumable, load_state, resumed_config, save_model
from clirkit.distill.curves import write_training
from clirkit.distill.ddp import DistEnv, check_job, dist_env, init_distributed, share_from_main
from clirkit.distill.dev import content_tokens, dev_scores
from clirkit.distill.objective import ZERO_SHOT, check_loss, make_loss
from clirkit.distill.pairs import Bitext, load_bitext, parse_augment
from clirkit.distill.students import (
    Student,
    TransformerStudent,
    build_student,
    load_student,
    prepare_student,
    truncated_fraction,
)
from clirkit.distill.trainer import Trainer

log = logging.getLogger("clirkit")


def run_distill(cfg: DistillConfig) -> Path | None:
    """``clirkit distill``: one experiment directory holding the trained student.

    References:
        Huang, Yu, Allan. Improving Cross-lingual Information Retrieval on Low-Resource Languages
        via Optimal Transport Distillation. WSDM 2023 (arXiv:2301.12566);
        Reimers & Gurevych. Making Monolingual Sentence Embeddings Multilingual using Knowledge
        Distillation. EMNLP 2020 (arXiv:2004.09813);
        Loshchilov & Hutter. Decoupled Weight Decay Regularization. ICLR 2019 (AdamW).

    Returns:
        The run directory (on every process of a torchrun job).
    """
    from clirkit.models import load_encoder
    from clirkit.rundir import cache_root, start_run, terminate_as_interrupt
    from clirkit.seeding import set_seed

    resume_from = last_dir = state = None
    if cfg.resume is not None:
        cfg = resumed_config(cfg)
        resume_from = Path(cfg.resume)  # type: ignore[arg-type]
        last_dir, state = load_state(resume_from)
    check_loss(cfg)
    parse_augment(cfg)  # fail on a bad spec before any work
    env = dist_env()
    if not env.main:
        log.setLevel(logging.WARNING)  # one process talks
    device = resolve_device(cfg.device)
    check_job(env, device, trains=cfg.loss != ZERO_SHOT, batch_size=cfg.batch_size)
    if state is not None:
        check_resumable(resume_from, state, env, device)  # type: ignore[arg-type]
        log.info("resuming %s with its own configuration (other options are ignored)", resume_from)
    prec = resolve_precision(cfg.precision, device)
    device = init_distributed(env, device)  # cuda:LOCAL_RANK for a torchrun worker
    set_seed(cfg.seed, torch_global=True)
    bitext = load_bitext(cfg)
    teacher = load_encoder(cfg.teacher, device, prec)
    model_student = prepare_student(cfg, teacher, device)
    root = cache_root()

    ctx = start_run(cfg.runs_dir, "distill", cfg, cfg.seed) if env.main else nullcontext()
    with terminate_as_interrupt(), ctx as run:
        if run is not None:
            inputs = {**bitext.files, "teacher": teacher.folder}
            if model_student is not None:
                inputs["student"] = model_student.folder
            run.add_inputs(**inputs)
            run.record_device(device, prec)
            run.record(world_size=env.world, teacher={"spec": cfg.teacher, "fingerprint": teacher.fingerprint},
                       # the resolved folder under the key `clirkit attack` looks for its test collection
                       bitext=str(bitext.folder), pair=bitext.pair,
                       pairs={"train": len(bitext.train_en), "dev": len(bitext.dev_en)},
                       loss=make_loss(cfg).as_config() if cfg.loss != ZERO_SHOT else {"name": ZERO_SHOT},
                       resumed_from=str(resume_from) if resume_from else None)
        if cfg.loss == ZERO_SHOT:
            if run is not None:
                zero_shot(cfg, env, device, prec, teacher, bitext, root, run)
        else:
            data = prepare_teacher(cfg, env, teacher, bitext, root, need_train=True)
            if last_dir is not None:
                student = load_student(last_dir / "model", cfg, device)
            else:
                student = build_student(cfg, teacher, model_student, bitext, root, device)
            if run is not None:
                _record_student(cfg, run, student, bitext, data)
                if resume_from is not None and (resume_from / "checkpoint").is_dir():
                    shutil.copytree(resume_from / "checkpoint", run.path / "checkpoint")
            trainer = Trainer(cfg, env, device, prec, data, student, run, state)
            t0 = time.perf_counter()
            trainer.train()
            if run is not None:
                if not (run.path / "checkpoint").is_dir():  # no dev set: the last model is the result
                    save_model(student, run.path / "checkpoint")
                write_training(trainer.rows, run.sub("metrics"), run.sub("plots"))
                run.record(training={"steps": trainer.step, "seconds": round(time.perf_counter() - t0, 2),
                                     "train_seconds_total": round(trainer.elapsed, 2),
                                     "best_step": trainer.best_step, f"best_{dev_column(BEST_BY)}": trainer.best
                                     if trainer.best > -math.inf else None})
                log.info("trained %d steps in %.1f s; best dev %s %.4f at step %s", trainer.step,
                         time.perf_counter() - t0, BEST_BY, trainer.best, trainer.best_step)
    path = share_from_main(env, str(run.path) if run is not None else None)
    return Path(path) if path else None


def _record_student(cfg: DistillConfig, run, student: Student, bitext: Bitext, data: Prepared) -> None:
    info: dict[str, Any] = {"student": cfg.student, "kind": student.kind,
                            "parameters": sum(p.numel() for p in student.parameters()),
                            "foreign_truncated": truncated_fraction(student, bitext.train_fx, cfg.max_length),
                            "english_truncated": data.train.truncated if data.train else None}
    info.update(student.record(run))
    log.info("student %s (%s, %d parameters); foreign side truncated at %d tokens: %.2f%% of sentences",
             cfg.student, student.kind, info["parameters"], cfg.max_length, 100 * info["foreign_truncated"])
    run.record(student=info, teacher_cache=data.cache)


def zero_shot(cfg: DistillConfig, env: DistEnv, device: torch.device, prec: Precision, teacher, bitext: Bitext,
              root: Path, run) -> None:
    """The baseline: the checkpoint is the teacher itself (same files, so indexes are shared)."""
    shutil.copytree(teacher.folder, run.path / "checkpoint", ignore=shutil.ignore_patterns(".*", "README.md"))
    rows: list[dict[str, Any]] = [{"step": 0, "epoch": 0}]
    if bitext.dev_en:
        data = prepare_teacher(cfg, env, teacher, bitext, root, need_train=False)
        assert data.dev is not None
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(run.path / "checkpoint"), device=device)
        st.max_seq_length = cfg.max_length
        student = TransformerStudent(st).to(device)
        s_sent, s_tok = [], []
        with torch.no_grad(), autocast(device, prec):
            for start in range(0, len(bitext.dev_fx), cfg.teacher_batch_size):
                tok, mask, sent = student(student.tokenize(bitext.dev_fx[start:start + cfg.teacher_batch_size]))
                s_sent.append(sent.float().cpu().numpy())
                if cfg.scoring == "maxsim":
                    s_tok.extend(content_tokens(tok, mask))
        scores = dev_scores(cfg, s_sent, s_tok, data.dev)
        rows[0].update({dev_column(k): v for k, v in scores.items()})
        log.info("zero-shot dev %s %.4f, R@1 %.4f", BEST_BY, scores[BEST_BY], scores["R@1"])
    write_training(rows, run.sub("metrics"), run.sub("plots"))
