"""Grid launchers: steps in parallel worker processes or submitit jobs give the same tables as one
process; a failed or killed step fails only itself and is redone by the next run; bad input is one line."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from clirkit.cli import app
from clirkit.launch import Call, Done, LocalPool, Task, run_graph

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the scheduler itself


def _meet(folder: str, name: str) -> int:
    """Arrive at a two-party barrier: returns only once the other party has arrived too, so two
    calls complete only if they run at the same time."""
    Path(folder, name).touch()
    deadline = time.time() + 120
    while len(list(Path(folder).iterdir())) < 2:
        if time.time() > deadline:
            raise TimeoutError("the other task never ran alongside")
        time.sleep(0.05)
    return os.getpid()


def _boom() -> None:
    raise ValueError("boom")


def _pair(a: int, b: int) -> list[int]:
    return [a, b]


def test_pool_runs_ready_tasks_together_and_a_failure_stops_only_its_dependents(tmp_path):
    (tmp_path / "barrier").mkdir()
    barrier = str(tmp_path / "barrier")
    tasks = [
        Task("a", lambda _: Call(_meet, (barrier, "a"))),
        Task("b", lambda _: Call(_meet, (barrier, "b"))),
        Task("both", lambda done: Call(_pair, (done["a"], done["b"])), after=("a", "b")),
        Task("bad", lambda _: Call(_boom)),
        Task("after-bad", lambda _: Done("never"), after=("bad",)),
        Task("reused", lambda _: Done("old run")),
    ]
    out = run_graph(tasks, LocalPool(2))
    assert out.results["a"] != out.results["b"]  # two worker processes, at the same time
    assert out.results["both"] == [out.results["a"], out.results["b"]]  # ran after both, with their results
    assert out.failed == {"bad": "ValueError: boom"}
    assert out.skipped == {"after-bad": "bad"} and out.results["reused"] == "old run"


def _meet_then_work(folder: str, name: str, seconds: float) -> int:
    """Meet the other task, then go on working: still running when the other dies."""
    _meet(folder, name)
    time.sleep(seconds)
    return os.getpid()


def _meet_then_die(folder: str, name: str) -> None:
    """Meet the other task, then kill this worker outright (as the out-of-memory killer would)."""
    _meet(folder, name)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_fails_only_its_own_step(tmp_path):
    """A real SIGKILL of a worker while another step runs beside it: only the killed step fails
    (and the step waiting for it is skipped); the other finishes with its result, and a step
    launched afterwards gets a worker of its own."""
    (tmp_path / "barrier").mkdir()
    barrier = str(tmp_path / "barrier")
    tasks = [
        Task("alive", lambda _: Call(_meet_then_work, (barrier, "alive", 3.0))),
        Task("killed", lambda _: Call(_meet_then_die, (barrier, "killed"))),
        Task("after-killed", lambda _: Done("never"), after=("killed",)),
        Task("after-alive", lambda done: Call(_pair, (done["alive"], os.getpid())), after=("alive",)),
    ]
    out = run_graph(tasks, LocalPool(2))
    assert out.failed == {"killed": "its worker process died (killed by SIGKILL (signal 9)); run the grid "
                                    "again to redo it"}
    assert isinstance(out.results["alive"], int) and out.results["alive"] != os.getpid()
    assert out.results["after-alive"] == [out.results["alive"], os.getpid()]
    assert out.skipped == {"after-killed": "killed"}


def _chained_error() -> None:
    try:
        {}["key"]
    except KeyError as e:
        raise ValueError("the step's own error") from e


def _user_error() -> None:
    from clirkit.errors import ClirkitError

    raise ClirkitError("model not found", path="/nowhere/model", fix="pass a model folder")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_submitit_job_errors_are_their_last_line(tmp_path):
    """Real submitit jobs (the LocalExecutor: each a subprocess run by submitit's job runner): the
    message is the error the job ended with, not its traceback nor the exception it came from."""
    from clirkit.launch import SlurmOptions, Submitit

    tasks = [Task("chained", lambda _: Call(_chained_error)), Task("user", lambda _: Call(_user_error)),
             Task("killed", lambda _: Call(_die)), Task("fine", lambda _: Call(_pair, (1, 2)))]
    out = run_graph(tasks, Submitit(tmp_path / "jobs", SlurmOptions(), jobs=None, cluster="local", poll_s=0.2))
    assert out.results == {"fine": [1, 2]}
    assert out.failed["chained"] == "ValueError: the step's own error"
    assert out.failed["user"] == "/nowhere/model: model not found -- pass a model folder"
    assert re.fullmatch(r"its job \d+ ended without a result \(state \w+\)", out.failed["killed"]), out.failed


def test_a_refused_slurm_submission_fails_its_step_not_the_grid(tmp_path, tiny_model, beir5, runs_dir, monkeypatch):
    """sbatch refuses every job (as for a bad account): each step fails with sbatch's line, the grid
    ends failed with one error line, no traceback. Real submitit, with an sbatch that says no."""
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid account "
                                    "or account/partition combination specified' >&2\nexit 1\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks that it is on a cluster
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    exp = tmp_path / "grid.toml"
    exp.write_text(f"""
name = "refused"
launcher = "slurm"
[[systems]]
name = "zero-shot"
model = "{tiny_model}"
[eval]
datasets = ["{beir5}"]
measures = ["nDCG@10"]
""", encoding="utf-8")
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp)])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr
    assert not any(line.startswith("sbatch:") for line in r.stderr.splitlines())  # not dumped on its own
    line = " ".join(r.stderr.split())
    assert (f"step eval zero-shot seed 0 {beir5} dense failed: the job was not submitted: sbatch: error: Batch job "
            "submission failed: Invalid account or account/partition combination specified") in line
    grid = next(p for p in runs_dir.iterdir() if "-run-" in p.name)
    assert json.loads((grid / "status.json").read_text())["status"] == "failed"
    (failed,) = json.loads((grid / "children.json").read_text())["failed"]
    assert failed["step"] == f"eval zero-shot seed 0 {beir5} dense" and "Invalid account" in failed["error"]


# --------------------------------------------------------------------------- grids


def _grid(tmp_path, tiny_model, beir5, body: str = "", epochs: int = 1, seeds: str = "[0, 1]") -> Path:
    """Zero-shot (the tiny model) and a static student distilled per seed."""
    from tests.test_distill import write_bitext

    bitext = tmp_path / "bitext"
    if not bitext.exists():
        write_bitext(bitext)
    path = tmp_path / "grid.toml"
    path.write_text(f"""
name = "launch"
seeds = {seeds}
{body}
[[systems]]
name = "zero-shot"
model = "{tiny_model}"
seeded = false
[[systems]]
name = "student"
[systems.distill]
bitext = "{bitext}"
teacher = "{tiny_model}"
student = "static"
loss = "mse"
epochs = {epochs}
vocab_size = 300
batch_size = 32
[eval]
datasets = ["{beir5}"]
measures = ["nDCG@10", "RR@10"]
""", encoding="utf-8")
    return path


def _run(runs_dir: Path, *args: str) -> Path:
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", *args])
    assert r.exit_code == 0, r.stderr
    return runs_dir / r.stdout.strip().splitlines()[-1].split("/")[-1]


def _child_configs(grid: Path) -> list[dict]:
    """Every child's config, the distilled model's (per-run) path replaced by its system and seed."""
    children = json.loads((grid / "children.json").read_text())
    names = {c["run"]: f"{c['system']}@{c['seed']}" for c in children.get("distill", [])}
    out = []
    for command in ("distill", "eval"):
        for c in children[command]:
            cfg = json.loads((Path(c["run"]) / "config.json").read_text())
            cfg["model"] = names.get(cfg.get("model"), cfg.get("model"))
            out.append(cfg)
    return out


@pytest.mark.slow
def test_parallel_launchers_match_one_process(tmp_path, tiny_model, beir5, runs_dir, monkeypatch):
    monkeypatch.setenv("CLIRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    exp = _grid(tmp_path, tiny_model, beir5)
    one = _run(runs_dir, str(exp))
    pool = _run(runs_dir, str(exp), "--jobs", "2", "reuse=false")
    slurm_like = _grid(tmp_path, tiny_model, beir5, body='launcher = "submitit-local"\njobs = 2')
    jobs = _run(runs_dir, str(slurm_like), "reuse=false")

    def table(grid: Path) -> pd.DataFrame:
        return pd.read_csv(grid / "metrics" / "aggregate.csv").drop(columns="train_s")  # wall-clock seconds

    agg = table(one)
    assert list(agg.system) == ["zero-shot", "student"] and list(agg.seeds) == [1, 2]
    assert agg.loc[1, "nDCG@10"] != agg.loc[0, "nDCG@10"]  # two different systems: a mix-up would show
    for other in (pool, jobs):
        # the project's reproduction tolerance: worker processes may use fewer CPU threads
        pd.testing.assert_frame_equal(table(other), agg, rtol=0, atol=1e-6)
        assert _child_configs(other) == _child_configs(one)  # the same steps, configured alike
        runs = [c["run"] for c in json.loads((other / "children.json").read_text())["eval"]]
        assert not set(runs) & {c["run"] for c in json.loads((one / "children.json").read_text())["eval"]}
    manifest = json.loads((jobs / "manifest.json").read_text())
    assert json.loads((jobs / "config.json").read_text())["launcher"] == "submitit-local"
    logs = list(Path(manifest["jobs_folder"]).glob("*/*_result.pkl"))
    assert len(logs) == 5  # 2 distillations + 3 evaluations, each its own submitit job


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _holder(folder: Path, parent: int) -> int | None:
    """The child process of ``parent`` with a file open under ``folder`` (a worker running that run)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            if any(os.readlink(fd).startswith(str(folder)) for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_step_fails_alone_and_is_redone_by_the_next_run(tmp_path, tiny_model, beir5, runs_dir, sig):
    """SIGTERM: the step's run ends failed, renamed; SIGKILL (no chance to clean up): its worker
    dies, the step fails alone all the same and the grid ends its run as failed; the next run of
    the grid redoes it."""
    env = {**_subprocess_env(), "CLIRKIT_CACHE": str(tmp_path / "cache")}
    exp = _grid(tmp_path, tiny_model, beir5, epochs=3, seeds="[0]")
    proc = subprocess.Popen([sys.executable, "-m", "clirkit", "--runs-dir", str(runs_dir), "run", str(exp),
                             "--jobs", "2"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline, pid = time.time() + 300, None
        while pid is None and time.time() < deadline and proc.poll() is None:
            running = list(runs_dir.glob(".*-distill-*.tmp")) if runs_dir.exists() else []
            pid = _holder(running[0], proc.pid) if running else None
            time.sleep(0.02)
        assert pid is not None, "never saw the distillation running"
        os.kill(pid, sig)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 2
    line = " ".join(stderr.split())
    why = "interrupted" if sig == signal.SIGTERM else "its worker process died (killed by SIGKILL (signal 9))"
    assert f"step distill student seed 0 failed: {why}" in line and "1 step(s) not run" in line

    grid = next(p for p in runs_dir.iterdir() if "-run-" in p.name)
    assert json.loads((grid / "status.json").read_text())["status"] == "failed"
    children = json.loads((grid / "children.json").read_text())
    # SIGTERM: the run ends itself; SIGKILL: the grid ends it for its dead worker. Failed, in place, either way
    killed = Path(children["failed"][0]["run"])
    status = json.loads((killed / "status.json").read_text())
    assert "-distill-" in killed.name and killed.parent == runs_dir and status["status"] == "failed"
    assert not list(runs_dir.glob(".*.tmp"))
    assert json.loads((killed / "manifest.json").read_text())["ended"] is not None
    if sig == signal.SIGKILL:
        assert status["error"] == children["failed"][0]["error"] and "SIGKILL" in status["error"]
    assert [c["system"] for c in children["eval"]] == ["zero-shot"]  # the step that did not wait for it
    assert json.loads((Path(children["eval"][0]["run"]) / "status.json").read_text())["status"] == "completed"
    assert children["skipped"] == [{"step": f"eval student seed 0 {beir5} dense", "waits_for":
                                    "distill student seed 0"}]

    before = {p.name for p in runs_dir.iterdir()}
    again = _run(runs_dir, str(exp), "--jobs", "2")
    redone = json.loads((again / "children.json").read_text())
    assert redone["eval"][0]["run"] == children["eval"][0]["run"]  # the completed step reused
    new = sorted(p.name.split("-")[2] for p in runs_dir.iterdir() if p.name not in before and p != again)
    assert new == ["distill", "eval"]  # only the killed step and the one waiting for it ran


def test_failed_step_fails_the_grid_and_the_rerun_redoes_only_it(tmp_path, tiny_model, beir5, runs_dir):
    import shutil

    later = tmp_path / "later-model"  # not there yet: its evaluation fails
    exp = tmp_path / "grid.toml"
    exp.write_text(f"""
name = "resume"
[[systems]]
name = "zero-shot"
model = "{tiny_model}"
[[systems]]
name = "later"
model = "{later}"
[eval]
datasets = ["{beir5}"]
measures = ["nDCG@10"]
""", encoding="utf-8")
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp), "--jobs", "2"])
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]  # after the progress logs
    assert r.exit_code == 2 and len(errors) == 1
    assert f"step eval later seed 0 {beir5} dense failed: {later}: model not found" in errors[0]
    grid = next(p for p in runs_dir.iterdir() if "-run-" in p.name)
    children = json.loads((grid / "children.json").read_text())
    assert [c["system"] for c in children["eval"]] == ["zero-shot"]
    assert children["failed"][0]["step"].startswith("eval later") and children["failed"][0]["run"] is None

    shutil.copytree(tiny_model, later)
    again = _run(runs_dir, str(exp), "--jobs", "2")
    evals = json.loads((again / "children.json").read_text())["eval"]
    assert [c["system"] for c in evals] == ["zero-shot", "later"]
    assert evals[0]["run"] == children["eval"][0]["run"]  # reused, not redone
    assert len([p for p in runs_dir.iterdir() if "-eval-" in p.name]) == 2


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("args", "body", "installed", "message"), [
    (["--jobs", "0"], "", True, "invalid jobs: Input should be greater than or equal to 1"),
    (["--launcher", "cloud"], "", True, "invalid launcher: Input should be 'local', 'slurm' or 'submitit-local'"),
    ([], "launcher = 'slurm'\n[slurm]\npartiton = 'gpu'\n", True, "invalid slurm.partiton: Extra inputs"),
    (["--launcher", "slurm"], "", True, "the slurm launcher needs sbatch, which is not on the PATH"),
    (["--launcher", "slurm"], "", False, "the slurm launcher needs submitit, which is not installed -- pip install "
                                         "submitit"),
    ([], "launcher = 'submitit-local'\n", False, "the submitit-local launcher needs submitit, which is not installed"),
])
def test_bad_launch_input_is_one_line_and_writes_nothing(tmp_path, tiny_model, beir5, runs_dir, monkeypatch,
                                                         args, body, installed, message):
    if not installed:
        monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` fails as if not installed
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    exp = tmp_path / "grid.toml"
    exp.write_text(f"""name = "bad"
{body}
[[systems]]
name = "zero-shot"
model = "{tiny_model}"
[eval]
datasets = ["{beir5}"]
""", encoding="utf-8")
    r = runner.invoke(app, ["--runs-dir", str(runs_dir), "run", str(exp), *args])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert message in " ".join(r.stderr.split())
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
