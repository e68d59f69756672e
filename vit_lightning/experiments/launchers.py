"""How multirun's runs are started: one after another, one per GPU, or as a SLURM job array.

Every launcher runs each run through `run_one`, which owns the run's `status.json` and `run.log`
and makes a rerun idempotent: a run that is done is skipped, a fit that succeeded is not
repeated, and an unfinished fit resumes (its command line says `--ckpt_path=last`).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vit_lightning.errors import ConfigError
from vit_lightning.experiments.multirun import Experiment, Run
from vit_lightning.run.files import write_file

STATUS, LOG = "status.json", "run.log"
DONE, FAILED, RUNNING, PENDING, SKIPPED = "done", "failed", "running", "pending", "skipped"
# exit codes of a run stopped by a signal it saved for (Preemption: 128 + signal): unfinished
STOPPED = {128 + s for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}

Launch = Callable[[Experiment], list[Run]]  # -> the runs that failed


def read_status(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STATUS).read_text())
    except (OSError, ValueError):
        return {}


def _write_status(folder: Path, status: dict[str, Any]) -> None:
    write_file(folder / STATUS, (json.dumps(status, indent=2) + "\n").encode())


class Children:
    """The run processes alive in this launcher. SIGTERM is passed on to them (they save and stop);
    SIGINT reaches them from the terminal itself (one process group); either stops new runs."""

    def __init__(self) -> None:
        self.procs: set[subprocess.Popen] = set()
        self.stopping = False
        self.lock = threading.Lock()

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True
        if signum == signal.SIGTERM:
            self.terminate()

    def terminate(self) -> None:
        for proc in list(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def call(self, args: list[str], log: Any, env: dict[str, str], ignore_usr2: bool) -> int:
        """`python -m vit_lightning *args`, output to `log`; waits by polling, so a signal handler
        may wait for the same process (Popen.wait holds a lock a handler would deadlock on)."""
        # SLURM sends a job's --signal to every process of the step: submitit's SIGUSR2 must
        # reach only the submitit task (it stops the fit with SIGTERM), not kill the fit outright
        pre = (lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN)) if ignore_usr2 else None
        cmd = [sys.executable, "-m", "vit_lightning", *args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=pre)
        with self.lock:
            self.procs.add(proc)
        try:
            while proc.poll() is None:
                time.sleep(0.2)
        finally:
            with self.lock:
                self.procs.discard(proc)
        return proc.returncode


def run_one(
    run: Run,
    root: Path,
    children: Children,
    env: dict[str, str] | None = None,
    slurm: bool = False,
) -> str:
    """Fit (unless an earlier fit of this run succeeded), then test; returns the run's state, or
    SKIPPED for a run that was already done."""
    folder = run.folder(root)
    before = read_status(folder)
    if before.get("state") == DONE:
        return SKIPPED
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / LOG).resolve()
    fit_done = before.get("fit_rc") == 0
    status = {"state": RUNNING, "log": str(log), "fit_rc": 0 if fit_done else None, "test_rc": None}
    env = {**os.environ, **(env or {})}
    _write_status(folder, status)
    with open(log, "ab", buffering=0) as out:
        for stage, args in [("fit", run.fit)] * (not fit_done) + [("test", run.test)]:
            visible = env.get("CUDA_VISIBLE_DEVICES")
            where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
            out.write(f"\n$ python -m vit_lightning {shlex.join(args)}{where}\n".encode())
            rc = children.call(args, out, env, ignore_usr2=slurm)
            status[f"{stage}_rc"] = rc
            if rc:
                status["state"] = PENDING if rc in STOPPED or children.stopping else FAILED
                _write_status(folder, status)
                return status["state"]
            _write_status(folder, status)
    status["state"] = DONE
    _write_status(folder, status)
    return DONE


def _report(run: Run, state: str) -> None:
    print(f"{state}: {run.name}", file=sys.stderr, flush=True)


def local(exp: Experiment) -> list[Run]:
    """One run after another; a signal (Ctrl-C, SIGTERM) stops after the run in progress saved."""
    children, failed = Children(), []
    children.install()
    for run in exp.runs:
        if children.stopping:
            break
        state = run_one(run, exp.root, children)
        _report(run, state)
        if state == FAILED:
            failed.append(run)
    return failed


def local_gpus(gpus: list[str]) -> Launch:
    """One run per GPU at a time, each seeing only its own (`CUDA_VISIBLE_DEVICES`)."""

    def launch(exp: Experiment) -> list[Run]:
        children, free = Children(), queue.Queue()
        children.install()
        for gpu in gpus:
            free.put(gpu)

        def one(run: Run) -> str:
            if children.stopping:
                return PENDING
            gpu = free.get()
            try:
                state = run_one(run, exp.root, children, env={"CUDA_VISIBLE_DEVICES": gpu})
            finally:
                free.put(gpu)
            _report(run, state)
            return state

        with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
            states = list(pool.map(one, exp.runs))
        return [run for run, state in zip(exp.runs, states, strict=True) if state == FAILED]

    return launch


class SlurmTask:
    """An array task's function: the run's fit and test. Checkpointable for submitit: at the
    time limit (submitit's SIGUSR2) the fit is stopped with SIGTERM, so its Preemption callback
    saves last.ckpt, and submitit requeues the task, which resumes it (`--ckpt_path=last`).

    A preemption's SIGTERM reaches the fit from SLURM (and from here), and SLURM requeues the
    job itself (`--requeue`).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.children: Children | None = None

    def __call__(self, run: Run) -> str:
        self.children = Children()
        self.children.install()  # SIGTERM passed on; submitit keeps its SIGUSR2 handler
        state = run_one(run, self.root, self.children, slurm=True)
        if state == FAILED:
            raise RuntimeError(f"{run.name} failed: see {run.folder(self.root) / LOG}")
        return state

    def checkpoint(self, run: Run) -> Any:
        import submitit

        if self.children is not None:
            self.children.stopping = True
            self.children.terminate()
            while any(p.poll() is None for p in list(self.children.procs)):
                time.sleep(0.2)
        return submitit.helpers.DelayedSubmission(SlurmTask(self.root), run)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "children": None}


def slurm(opts: argparse.Namespace) -> Launch:
    """One job array through submitit, a task per run still to do; waits for the tasks."""
    params: dict[str, Any] = {}
    try:
        params["timeout_min"] = int(opts.slurm_time)
        gpus, cpus = int(opts.slurm_gpus_per_task), int(opts.slurm_cpus_per_task)
        params["slurm_array_parallelism"] = int(opts.slurm_parallelism)
        if opts.slurm_mem_gb is not None:
            params["mem_gb"] = float(opts.slurm_mem_gb)
    except ValueError as e:
        raise ConfigError(f"--slurm.*: {e}; give numbers (time in minutes)") from e
    params.update(cpus_per_task=cpus, tasks_per_node=1, nodes=1)
    if gpus:
        params["slurm_gpus_per_task"] = gpus
    if opts.slurm_partition:
        params["slurm_partition"] = opts.slurm_partition

    def launch(exp: Experiment) -> list[Run]:
        import submitit

        todo = [r for r in exp.runs if read_status(r.folder(exp.root)).get("state") != DONE]
        for run in exp.runs:
            if run not in todo:
                _report(run, SKIPPED)
        if not todo:
            return []
        executor = submitit.AutoExecutor(folder=exp.root / "slurm" / "%j", cluster="slurm")
        executor.update_parameters(name=exp.name, **params)
        # requeue: SLURM puts a preempted task back in the queue (the fit resumes from last.ckpt)
        executor.update_parameters(slurm_additional_parameters={"requeue": True})
        jobs = executor.map_array(SlurmTask(exp.root), todo)
        print(f"submitted job array {jobs[0].job_id.split('_')[0]}: {len(jobs)} tasks", flush=True)
        failed = []
        for run, job in zip(todo, jobs, strict=True):
            job.wait()
            state = read_status(run.folder(exp.root)).get("state", FAILED)
            _report(run, state)
            if state != DONE:
                failed.append(run)
        return failed

    return launch


def launcher(opts: argparse.Namespace) -> Launch:
    if opts.launcher == "local":
        return local
    if opts.launcher == "slurm":
        return slurm(opts)
    if opts.gpus:
        gpus = [g.strip() for g in opts.gpus.split(",") if g.strip()]
    else:
        import torch

        gpus = [str(i) for i in range(torch.cuda.device_count())]
    if not gpus:
        raise ConfigError(
            "--launcher local-gpus: no GPU found; give --gpus 0,1 or --launcher local"
        )
    return local_gpus(gpus)
