"""Checkpoints and resume: the best student, the latest resumable state, and the resumed configuration.

Every write goes to a temporary folder renamed into place, so a kill (SIGTERM, out of memory,
preemption) never leaves a half-written ``checkpoint/`` or ``last/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from clirkit.config import DistillConfig
from clirkit.distill.ddp import DistEnv, all_gather
from clirkit.distill.students import Student
from clirkit.errors import ClirkitError


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``, replacing it, so a kill never leaves ``final`` half-written."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def save_model(student: Student, final: Path) -> None:
    """Write ``student`` as a sentence-transformers folder at ``final`` atomically."""
    tmp = final.with_name(f".{final.name}.new")
    shutil.rmtree(tmp, ignore_errors=True)
    student.save(tmp)
    _replace_dir(tmp, final)


def save_state(run_path: Path, student: Student, state: dict[str, Any]) -> None:
    """Write ``last/`` (model folder + ``state.pt``) atomically."""

    tmp = run_path / ".last.new"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    student.save(tmp / "model")
    torch.save(state, tmp / "state.pt")
    _replace_dir(tmp, run_path / "last")


def rng_state(env: DistEnv, device: torch.device) -> dict[str, Any]:
    """The random generators training draws from, of every rank (collective: every rank calls it).

    ``torch_rng``: torch's CPU generator (initialisation, CPU dropout); ``cuda_rng``: on CUDA, the
    generator of this rank's GPU (dropout there), else None. Shuffling and ``--augment`` noise
    come from generators seeded by (seed, epoch, row), and numpy's and Python's global generators
    are not drawn from, so these two make a resumed run continue the same random streams.
    """
    cuda = all_gather(env, torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
    return {"torch_rng": all_gather(env, torch.get_rng_state()), "cuda_rng": cuda}


def restore_rng(state: dict[str, Any], env: DistEnv, device: torch.device) -> None:
    """Set this rank's generators from :func:`rng_state`'s ``state``; a CUDA state is used on CUDA only."""
    torch.set_rng_state(state["torch_rng"][env.rank])
    if device.type == "cuda" and state.get("cuda_rng") is not None:  # absent from states saved before it was kept
        torch.cuda.set_rng_state(state["cuda_rng"][env.rank], device)


def load_state(run: Path) -> tuple[Path, dict[str, Any]]:
    """The ``last/`` folder of ``run`` and its state (also from a ``.tmp`` run left by a hard kill)."""

    last = run / "last"
    if not (last / "state.pt").is_file():
        old = run / ".last.old"  # killed between the two renames of _replace_dir
        if (old / "state.pt").is_file():
            last = old
        else:
            raise ClirkitError("no saved state (last/state.pt) to resume from", path=run,
                               fix="resume a distill run that saved at least once (see --save-every)")
    return last, torch.load(last / "state.pt", map_location="cpu", weights_only=True)


def check_resumable(run: Path, state: dict[str, Any], env: DistEnv, device: torch.device) -> None:
    """Reject a resume this job cannot continue, before anything is written.

    Raises:
        ClirkitError: the state was saved by a job of another world size (the batches of each
            rank, the RNG states and the step count depend on it), or it holds a gradient
            scaler's state (fp16, which a resume keeps) and ``device`` is not CUDA.
    """
    saved = state["world"]
    if saved != env.world:
        raise ClirkitError(f"the run was trained by {saved} process(es), this job has {env.world}", path=run,
                           fix="resume without torchrun" if saved == 1
                           else f"resume under torchrun with {saved} processes in all (e.g. --nproc_per_node {saved})")
    if state.get("scaler") and device.type != "cuda":  # empty for a disabled scaler (fp32, bf16)
        raise ClirkitError(f"the run was trained in fp16 with a gradient scaler, which needs a CUDA device, "
                           f"not {str(device)!r}", path=run,
                           fix="resume it where torch sees a GPU (--device cuda); a resume keeps the run's precision")


def resumed_config(cfg: DistillConfig) -> DistillConfig:
    """The configuration of the run being resumed, with this invocation's runs_dir, device and resume."""
    from clirkit.rundir import read_json

    assert cfg.resume is not None
    run = Path(cfg.resume)
    if not run.is_dir():
        raise ClirkitError("run to resume not found", path=run, fix="pass a distill experiment directory")
    old = read_json(run / "config.json")
    if old.get("command") != "distill":
        raise ClirkitError(f"not a distill run (command {old.get('command')!r})", path=run,
                           fix="pass a directory made by `clirkit distill`")
    values = {k: v for k, v in old.items() if k in DistillConfig.model_fields}
    values.update(resume=run, runs_dir=cfg.runs_dir, device=cfg.device)
    return DistillConfig(**values)
