"""Run the independent steps of an experiment grid at once: in this process, in local worker
processes, or as Slurm jobs (``clirkit run grid.toml --launcher local|slurm --jobs N``).

A grid is a graph of :class:`Task` s (each names the tasks it waits for); :func:`run_graph`
submits every task whose predecessors have completed, as many at a time as the launcher
allows, and collects results until none is left. A failed task fails only itself and the
tasks that wait for it; the others still run, so a re-run of the grid has only those to redo.

Launchers (one :class:`Launch` interface, so the scheduling is written once):

* ``local`` with 1 job: :class:`Inline`, every task in this process in grid order (the
  behaviour of a grid before launchers existed, same runs and numbers).
* ``local`` with N jobs: :class:`LocalPool`, N steps at once, each in its own one-worker
  ``concurrent.futures.ProcessPoolExecutor`` ("spawn": a fresh interpreter, no forked torch or
  CUDA state) with its share of the CPU threads, so a worker killed outright fails only its step.
* ``slurm``: :class:`Submitit`, one Slurm job per task through submitit's ``AutoExecutor``
  (the task and its config are pickled to a shared folder and run by ``sbatch``), with the
  ``[slurm]`` table's resources.
* ``submitit-local``: the same :class:`Submitit` path with ``cluster="local"``: each task is
  pickled and run in its own subprocess exactly as a Slurm job would be, so a Slurm grid can
  be tried on a laptop (and is tested) without a cluster.

References: submitit, the ``AutoExecutor``
and ``LocalExecutor``; Python's ``concurrent.futures.ProcessPoolExecutor``.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from clirkit.config import Config
from clirkit.errors import ClirkitError

log = logging.getLogger("clirkit")

LauncherName = Literal["local", "slurm", "submitit-local"]


class SlurmOptions(Config):
    """Resources of every Slurm job of a grid (the experiment file's ``[slurm]`` table)."""

    partition: str | None = Field(None, description="Slurm partition (default: the cluster's)")
    time: int = Field(24 * 60, ge=1, description="time limit of one step, in minutes")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per step")
    cpus_per_task: int | None = Field(None, ge=1, description="CPU cores per step (default: the cluster's)")
    mem_gb: float | None = Field(None, gt=0, description="memory per step in GB (default: the cluster's)")
    setup: list[str] = Field(default_factory=list, description="shell lines run before each step, e.g. "
                                                               "'source .venv/bin/activate'")
    additional_parameters: dict[str, Any] = Field(
        default_factory=dict, description="further sbatch options, e.g. {account = 'x', qos = 'y'}")


class LaunchOptions(Config):
    """Where and how many of an experiment grid's steps run at once."""

    launcher: LauncherName = Field(
        "local", description="local (this machine), slurm (one Slurm job per step, through submitit) or "
                             "submitit-local (the slurm path run in local subprocesses, to try a grid)")
    jobs: int | None = Field(None, ge=1, description="steps run at once: local worker processes (default 1: "
                                                     "every step in this process) or jobs in flight (default: "
                                                     "all that are ready)")
    slurm: SlurmOptions = Field(default_factory=SlurmOptions, description="resources of each job ([slurm] table)")


# --------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class Call:
    """Run ``fn(*args)`` on the launcher (``fn`` and ``args`` must pickle: a module-level function)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Done:
    """A task that needs no work (e.g. a completed run reused): its result is ``value``."""

    value: Any


@dataclass
class Task:
    """One step of a grid.

    Attributes:
        key: unique label, used in logs and in the message naming a failed step.
        plan: given the results of the tasks it waits for (``{key: result}``), what to do: a
            :class:`Call` to launch, or :class:`Done`. Called in this process just before launch.
        after: keys of the tasks that must complete first.
    """

    key: str
    plan: Callable[[dict[str, Any]], Call | Done]
    after: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What :func:`run_graph` did: results of completed tasks, errors of failed ones (one line
    each), and tasks not run because a task they wait for failed."""

    results: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _message(e: BaseException) -> str:
    """One line for a task's error, whichever launcher carried it back."""
    if isinstance(e, ClirkitError):
        return e.one_line()
    if isinstance(e, WorkerDied):
        return str(e)
    if isinstance(e, KeyboardInterrupt):
        return f"interrupted ({e})" if str(e) else "interrupted"
    if type(e).__module__.startswith("submitit"):
        return job_error(str(e))
    return f"{type(e).__name__}: {e}"


def job_error(text: str) -> str:
    """One line for the error of a submitit job (``str`` of the exception ``job.result()`` raised).

    A job that raised hands back its traceback as text: the line is the error it ended with
    (the last exception of the traceback, as ``Type: message`` without the module path; a
    ClirkitError as its own line), not the frames above it nor the exception it was raised
    from. A job that ended without a result (killed, out of time) gives its state and the last
    line of its error stream, if any.
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if starts:
        error: list[str] = []
        for line in lines[starts[-1] + 1:]:
            if not error and (line.startswith(" ") or not line.strip()):
                continue  # the frames of the traceback
            if not line.strip() or line.startswith("-" * 5):
                break  # the end of the error (a message may go on over several lines)
            error.append(line.strip())
        if error:
            first = re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=\w+(?::|$))", "", error[0])  # clirkit.errors.X -> X
            first = first.removeprefix("ClirkitError: ")
            if first.startswith("KeyboardInterrupt"):
                first = "interrupted" + (f" ({first.partition(': ')[2]})" if ": " in first else "")
            return " ".join([first, *error[1:]])
    state = re.search(r"has not produced any output \(state: ([^)]*)\)", text)
    if state:
        job = re.match(r"Job (\S+)", text)
        stream = text.split("Error stream produced:", 1)
        last = [x.strip() for x in stream[1].splitlines() if x.strip() and not x.startswith("-" * 5)][-1:] \
            if len(stream) > 1 else []
        return (f"its job {job.group(1) if job else ''} ended without a result (state {state.group(1)})"
                + (f": {last[0]}" if last else ""))
    rest = [x.strip() for x in lines if x.strip() and not x.startswith("-" * 5)]
    return rest[-1] if rest else "the job failed"


def run_graph(tasks: list[Task], launch: Launch) -> Outcome:
    """Run ``tasks`` on ``launch`` respecting their order constraints.

    Ready tasks are launched in list order, at most ``launch.capacity`` at a time, so with
    capacity 1 the tasks run exactly in list order (put every task after those it waits for).
    An exception of a task fails that task; the tasks that wait for it are skipped; the
    others run on. An interrupt of this process (Ctrl-C, SIGTERM) cancels what is in flight
    and propagates.

    Args:
        tasks: the graph; keys unique, ``after`` naming earlier tasks.
        launch: where the calls run.

    Returns:
        The :class:`Outcome`.
    """
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate task keys: {keys}")
    for t in tasks:
        unknown = [a for a in t.after if a not in keys]
        if unknown:
            raise ValueError(f"task {t.key!r} waits for unknown tasks {unknown}")
    out = Outcome()
    pending = list(tasks)
    running: dict[Any, Task] = {}
    try:
        while pending or running:
            for task in list(pending):
                broken = [a for a in task.after if a in out.failed or a in out.skipped]
                if broken:
                    pending.remove(task)
                    out.skipped[task.key] = broken[0]
                    log.warning("%s: skipped (waits for %s, which did not complete)", task.key, broken[0])
                    continue
                if len(running) >= launch.capacity:
                    break
                if any(a not in out.results for a in task.after):
                    continue
                pending.remove(task)
                try:
                    plan = task.plan({a: out.results[a] for a in task.after})
                except Exception as e:  # noqa: BLE001 - planning errors fail the task, like running ones
                    out.failed[task.key] = _message(e)
                    log.error("%s: failed: %s", task.key, out.failed[task.key])
                    continue
                if isinstance(plan, Done):
                    handle: Any = cf.Future()
                    handle.set_result(plan.value)
                else:
                    log.info("%s: started", task.key)
                    try:
                        handle = launch.submit(task.key, plan.fn, *plan.args)
                    except Exception as e:  # noqa: BLE001 - e.g. sbatch refused the job: this task fails
                        out.failed[task.key] = _message(e)
                        log.error("%s: failed: %s", task.key, out.failed[task.key])
                        continue
                running[handle] = task
            if not running:
                if pending and not any(all(a in out.results for a in t.after) for t in pending):
                    raise ValueError(f"tasks wait for each other in a cycle: {[t.key for t in pending]}")
                continue
            finished = [h for h in running if h.done()] or launch.wait(list(running))
            for handle in finished:
                task = running.pop(handle)
                try:
                    out.results[task.key] = handle.result()
                except (Exception, KeyboardInterrupt) as e:  # a worker's SIGTERM comes back as KeyboardInterrupt
                    out.failed[task.key] = _message(e)
                    log.error("%s: failed: %s", task.key, out.failed[task.key])
                else:
                    log.info("%s: done (%s)", task.key, out.results[task.key])
    except BaseException:
        launch.cancel(list(running))
        raise
    finally:
        launch.close()
    return out


# --------------------------------------------------------------------------- launchers


class Launch:
    """Where a grid's calls run. ``submit`` returns a handle with ``done()`` and ``result()``
    (a ``concurrent.futures.Future`` or a submitit ``Job``)."""

    #: calls in flight at most
    capacity: int | float = 1

    def submit(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def wait(self, handles: list[Any]) -> list[Any]:
        """Block until at least one of ``handles`` is done; return the done ones."""
        raise NotImplementedError

    def cancel(self, handles: list[Any]) -> None:
        """Stop the calls in flight (this process is being interrupted)."""

    def close(self) -> None:
        """Release workers."""


class Inline(Launch):
    """Every call in this process, one after the other, at submission."""

    capacity = 1

    def submit(self, name: str, fn: Callable[..., Any], *args: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args))
        except Exception as e:  # noqa: BLE001 - the task fails; an interrupt (BaseException) stops the grid
            future.set_exception(e)
        return future

    def wait(self, handles: list[Any]) -> list[Any]:
        return [h for h in handles if h.done()]


def _init_worker(threads: int, level: int) -> None:
    """A pool worker: its share of the CPU threads (unless the user set them) and the parent's log level."""
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
    logging.getLogger("clirkit").setLevel(level)


class WorkerDied(RuntimeError):
    """The worker process of a step died without a result (killed outright, out of memory)."""


def _death(exitcode: int | None) -> str:
    import signal

    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name} (signal {-exitcode})"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}" if exitcode is not None else "no exit code"


class LocalPool(Launch):
    """``jobs`` steps at once on this machine, each in its own one-worker process pool
    (``ProcessPoolExecutor``, "spawn" context: a fresh interpreter, no forked torch or CUDA state).

    One pool per step isolates the steps: a worker killed outright (SIGKILL, the out-of-memory
    killer) breaks only its own pool, so only its step fails (:class:`WorkerDied`, and the steps
    that wait for it are skipped) and the steps running beside it finish with their results; the
    next run of the grid redoes the failed one. A shared pool would fail every step in flight
    with ``BrokenProcessPool``.
    """

    def __init__(self, jobs: int) -> None:
        self.capacity = jobs
        self.jobs = jobs
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.pools: dict[cf.Future, cf.ProcessPoolExecutor] = {}  # by the handle submit returned

    def _reap(self) -> None:
        """Shut down the pools whose step is over (their worker has exited or died)."""
        for handle in [h for h in self.pools if h.done()]:
            self.pools.pop(handle).shutdown(wait=True)

    def submit(self, name: str, fn: Callable[..., Any], *args: Any) -> cf.Future:
        import multiprocessing

        self._reap()
        pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker, initargs=(self.threads, log.getEffectiveLevel()))
        inner = pool.submit(fn, *args)
        workers = list(getattr(pool, "_processes", {}).values())  # started by submit ("spawn" starts them there)
        handle: cf.Future = cf.Future()

        def relay(done: cf.Future) -> None:
            if done.cancelled():
                handle.cancel()
                return
            error = done.exception()
            if isinstance(error, cf.process.BrokenProcessPool):
                if workers:
                    workers[0].join(timeout=5)  # dead already: this only collects its exit status
                code = workers[0].exitcode if workers else None
                error = WorkerDied(f"its worker process died ({_death(code)}); run the grid again to redo it")
            if error is not None:
                handle.set_exception(error)
            else:
                handle.set_result(done.result())

        inner.add_done_callback(relay)
        self.pools[handle] = pool
        return handle

    def wait(self, handles: list[Any]) -> list[Any]:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        self._reap()
        return list(done)

    def cancel(self, handles: list[Any]) -> None:
        # SIGTERM to the workers: the runs they hold end "failed" and renamed into place
        # (clirkit.rundir.start_run), ready to be redone by the next run of the grid
        for pool in self.pools.values():
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self.pools.clear()


class Submitit(Launch):
    """One submitit job per call, on ``cluster`` "slurm" or "local" (subprocesses); both pickle
    the call to ``folder`` and run it with the same submitit job runner."""

    def __init__(self, folder: Path, slurm: SlurmOptions, jobs: int | None, cluster: str | None,
                 poll_s: float = 1.0) -> None:
        import submitit

        self.capacity = jobs if jobs is not None else math.inf
        self.poll_s = poll_s
        folder.mkdir(parents=True, exist_ok=True)
        self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        params: dict[str, Any] = {"timeout_min": slurm.time, "gpus_per_node": slurm.gpus_per_node,
                                  "cpus_per_task": slurm.cpus_per_task, "mem_gb": slurm.mem_gb,
                                  "slurm_partition": slurm.partition,
                                  "slurm_additional_parameters": slurm.additional_parameters or None,
                                  "slurm_setup": slurm.setup or None, "local_setup": slurm.setup or None}
        self.executor.update_parameters(**{k: v for k, v in params.items() if v is not None})

    def submit(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Submit one job; a refused submission (sbatch's error: a bad partition, account or time
        limit) is a ClirkitError with sbatch's last line, which fails this step only."""
        import contextlib
        import io

        self.executor.update_parameters(name=f"clirkit {name}")
        said = io.StringIO()  # submitit also prints sbatch's error: it goes into the one line instead
        try:
            with contextlib.redirect_stderr(said):
                job = self.executor.submit(fn, *args)
        except Exception as e:  # noqa: BLE001 - submitit raises its job error (or OSError) for sbatch's
            lines = [x.strip() for x in f"{said.getvalue()}\n{e}".splitlines() if x.strip()]
            raise ClirkitError(f"the job was not submitted: {lines[-1] if lines else type(e).__name__}",
                               fix="check the [slurm] table (partition, time, resources, additional_parameters "
                                   "such as the account)") from e
        log.info("%s: job %s (logs %s)", name, job.job_id, job.paths.stderr)
        return job

    def wait(self, handles: list[Any]) -> list[Any]:
        while True:
            done = [h for h in handles if h.done()]
            if done:
                return done
            time.sleep(self.poll_s)

    def cancel(self, handles: list[Any]) -> None:
        for job in handles:
            if hasattr(job, "cancel") and not job.done():
                job.cancel(check=False)


def submitit_folder(runs_dir: Path, run_id: str) -> Path:
    """Where a grid's submitit jobs keep their pickles and logs (hidden: not an experiment directory)."""
    return Path(runs_dir) / ".submitit" / run_id


def check_launcher(opts: LaunchOptions) -> None:
    """Fail before any work if ``opts`` cannot launch here: submitit missing for a submitit
    launcher, or no ``sbatch`` for slurm (submitit would otherwise fail at the first job)."""
    if opts.launcher in ("slurm", "submitit-local"):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ClirkitError(f"the {opts.launcher} launcher needs submitit, which is not installed",
                               fix="pip install submitit (clirkit's slurm extra), or use --launcher local") from None
    if opts.launcher == "slurm" and shutil.which("sbatch") is None:
        raise ClirkitError("the slurm launcher needs sbatch, which is not on the PATH",
                           fix="run the grid on a Slurm login node (or try it with --launcher submitit-local)")


def make_launch(opts: LaunchOptions, folder: Path) -> Launch:
    """The :class:`Launch` for ``opts`` (``folder``: where submitit jobs keep their files)."""
    check_launcher(opts)
    if opts.launcher == "local":
        jobs = opts.jobs or 1
        return Inline() if jobs == 1 else LocalPool(jobs)
    return Submitit(folder, opts.slurm, opts.jobs, cluster="local" if opts.launcher == "submitit-local" else "slurm")
