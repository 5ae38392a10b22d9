"""`lpgan train` and `lpgan synthesize`: the owner runs a job on two edge servers.

The owner connects to both servers over mutual TLS, acts as the dealer, shares the data,
the noise and the model, shows progress (time, rounds and bytes of each server), and
writes what comes back to the output directory: the reconstructed models, image grids,
loss curves, metrics and both servers' logs. It keeps its own record of the checkpoints
both servers confirmed (checkpoint.json): `--resume` continues from the last one, and only
from one in that record; a new job never replaces the record of an unfinished one unless
asked (`--fresh`). Every run gets fresh dealer seeds; the inputs come from the owner's
secret and the job's seed (gan.owner_jobs). Everything the owner can check (the job file, the
data) is checked before a server is contacted. Every failure ends with a message naming
the server and what to do (whether `--resume` can continue, and from which iteration), and
exit code 1; Ctrl-C says the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import torch

from gan import events, models, outputs
from gan.budget import synthesis_limits, training_limits
from gan.events import BatchDone, CheckpointSaved, Event, IterationDone
from gan.jobfile import ConfigError, JobConfig
from gan.owner_jobs import drive_synthesis, drive_training, inputs_key, job_id, owner_secret, run_seeds, training_args
from gan.train import TrainConfig, load_images, plaintext_training, quality_noise, quality_report, synthesis_noise
from mpcrt import OwnerClient, ServerFailed
from mpcrt.dealer import DealerLimits
from mpcrt.owner_jobs import ServerUnreachable, start_job
from mpcrt.owner_link import ServerLog
from transports.loop import run as run_loop

RECORD = "checkpoint.json"


def _say(line: str) -> None:
    print(line, flush=True)


class JobFailed(Exception):
    """A job that could not finish; the message says why and what to do."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a job; the message says what `--resume` will do."""


def _write_atomic(path: Path, text: str, then: str) -> None:
    """Replace `path` whole or not at all; `then`: what to do after freeing disk space."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise JobFailed(f"could not write {path} ({exc.strerror or exc}); the previous version is kept; "
                        f"free disk space, then {then}") from exc


class _Progress:
    """A progress bar per job (tqdm) with rounds and bytes of each server; server events
    also go to out/server{i}.log."""

    def __init__(self, total: int, initial: int, unit: str, out: Path, then: Callable[[], str]) -> None:
        from tqdm import tqdm

        self.then = then  # what to do after a failed write

        self.bar = tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True, mininterval=0.5)
        self.stats: list[dict[str, Any]] = [{}, {}]
        self.logs = [open(out / f"server{i}.log", "a") for i in (0, 1)]  # noqa: SIM115 - closed in close()
        self.checkpoints = [initial, initial]  # the last each server reported

    def log(self, party_id: int, line: ServerLog) -> None:
        """A line of server i's log, into out/server{i}.log."""
        self._log(party_id, line.text)

    def event(self, party_id: int, event: dict[str, Any]) -> Event:
        """Log a server's event to out/server{i}.log and count its traffic; the typed event.
        A server that sends what this lpgan does not know stops the job."""
        try:
            typed = events.parse(event)
        except events.BadEvent as exc:
            raise JobFailed(f"server {party_id} sent {exc}; the job is stopped: does it run another version of "
                            "lpgan?") from None
        self._log(party_id, json.dumps({"kind": typed.kind, **dataclasses.asdict(typed)}))
        if isinstance(typed, IterationDone | BatchDone):
            self.stats[party_id] = {"rounds": typed.rounds, "bytes_sent": typed.bytes_sent}
        return typed

    def _log(self, party_id: int, line: str) -> None:
        try:
            self.logs[party_id].write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            self.logs[party_id].flush()
        except OSError as exc:
            raise JobFailed(f"could not write {self.logs[party_id].name} ({exc.strerror or exc}); free disk space, "
                            f"then {self.then()}") from exc

    def finish(self, final_stats: list[dict | None]) -> None:
        """The servers' final counts, where they came (mpcrt.owner_link: a finished frame)."""
        for party_id, stats in enumerate(final_stats):
            if stats is not None:
                self.stats[party_id] = server_counts(party_id, stats)

    def step(self, **shown: Any) -> None:
        s = self.stats[0]
        sent = sum(st.get("bytes_sent", 0) for st in self.stats) / 1e6
        self.bar.set_postfix(**shown, rounds=s.get("rounds", 0), MB=f"{sent:.0f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        for f in self.logs:
            with contextlib.suppress(OSError):
                f.close()


COUNTS = ("rounds", "bytes_sent")  # what the progress bar and the summary add up


def server_counts(party_id: int, stats: object) -> dict[str, Any]:
    """A server's reported traffic, once its counts are counts (a server that runs modified
    code must not crash the owner's progress bar with a raw TypeError)."""
    if not isinstance(stats, dict) or not all(
            isinstance(stats.get(k, 0), int) and not isinstance(stats.get(k, 0), bool) and stats.get(k, 0) >= 0
            for k in COUNTS):
        raise JobFailed(f"server {party_id} reported traffic that is not counts ({str(stats)[:80]}); the job is "
                        "stopped: does it run another version of lpgan?")
    return stats


def _explain(exc: BaseException, job: Any | None, note: Callable[[], str | None] | None) -> str:
    """What went wrong, which server, and how to go on (`note`: what --resume can do, if
    anything is worth saying)."""
    lines = [str(exc)]
    if job is not None:
        for _i, failure in sorted(job.client.failures.items()):
            if str(failure) != str(exc):
                lines.append(f"also: {failure}")
    said = note() if note is not None else None
    if said:
        lines.append(said)
    return "\n".join(lines)


def resume_advice(job: JobConfig, confirmed: int, done: int) -> str | None:
    """What `--resume` can do after a run stopped, only where it is worth saying: `confirmed`,
    the last checkpoint both servers confirmed (0: none); `done`, the iterations this run
    finished. None when nothing was lost (the run stopped before its first iteration and there
    is no checkpoint): the error says what to fix, and running the job again is all there is."""
    cfg, path = job.train, job.shown_path()
    if confirmed:
        return (f"the last checkpoint both servers confirmed is iteration {confirmed}: `lpgan train {path} --resume` "
                "continues from there once both servers run")
    if not done:
        return None
    if not cfg.checkpoint_every or cfg.checkpoint_every > cfg.iterations:
        why = ("[train] checkpoint_every = 0" if not cfg.checkpoint_every else
               f"[train] checkpoint_every = {cfg.checkpoint_every} is more than its {cfg.iterations} iterations")
        return (f"this job makes no checkpoints ({why}), so --resume cannot continue it: run it again from the "
                "start; set [train] checkpoint_every to be able to resume a long job")
    return (f"it stopped before its first checkpoint (iteration {cfg.checkpoint_every}) was confirmed, so --resume "
            "cannot continue it: run it again from the start")


def _rerun(job: JobConfig, confirmed: int) -> str:
    """How to finish a training job after its outputs could not be written."""
    if confirmed:
        return f"run `lpgan train {job.shown_path()} --resume` (it continues from iteration {confirmed})"
    return f"run `lpgan train {job.shown_path()}` again (no checkpoint was confirmed to resume from)"


def makes_checkpoint(cfg: TrainConfig, iteration: object) -> bool:
    """Whether the job checkpoints after `iteration` (a multiple of checkpoint_every, at most iterations)."""
    return (isinstance(iteration, int) and not isinstance(iteration, bool) and cfg.checkpoint_every > 0
            and 0 < iteration <= cfg.iterations and iteration % cfg.checkpoint_every == 0)


def resume_point(record: dict[str, Any], cfg: TrainConfig, path: Path) -> int:
    """The iteration to resume from: the record's last, only if it is a checkpoint this owner
    recorded both servers confirming (not one a server merely claims)."""
    iteration, recorded = record.get("iteration"), record.get("checkpoints")
    if iteration == 0:
        return 0
    if not isinstance(recorded, list) or iteration not in recorded or not makes_checkpoint(cfg, iteration):
        raise JobFailed(f"{path} names iteration {iteration!r}, which is not a checkpoint this owner recorded both "
                        f"servers confirming (recorded: {recorded!r}); start without --resume")
    if len(record.get("curves", {}).get("d_real", [])) < iteration:
        raise JobFailed(f"{path} names iteration {iteration} but holds the results of fewer; start without --resume")
    return iteration


def checked_checkpoint(cfg: TrainConfig, party_id: int, reported: object, last: int) -> int:
    """A checkpoint a server reports: one this job makes, after the last it reported."""
    if not (isinstance(reported, int) and makes_checkpoint(cfg, reported) and reported > last):
        raise JobFailed(f"server {party_id} reported a checkpoint at iteration {str(reported)[:40]!r}, which this job "
                        f"does not make after {last} (every {cfg.checkpoint_every} of {cfg.iterations}); the job is "
                        "stopped; the owner's record keeps only checkpoints both servers confirmed")
    return reported


def training_images(job: JobConfig) -> torch.Tensor:
    """The job's images, refused before any server is contacted if the folder has none or
    fewer than one batch (a batch stream without one whole batch never yields)."""
    cfg = job.train
    try:
        images = load_images(job.data, cfg.preset_().image_size)
    except OSError as exc:  # a missing folder, no images, an unreadable image
        raise job.error(f"[data] source {job.data!r}: {exc}; give a folder of PNG/JPEG images, "
                        "'mnist' or 'digits'") from None
    if len(images) < cfg.batch_size:
        raise job.error(f"[train] batch_size = {cfg.batch_size} is more than the {len(images)} images of [data] "
                        f"source {job.data!r}; set [train] batch_size to at most {len(images)}, or add images")
    return images


def _read_record(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise JobFailed(f"{path} (the record of the checkpoints both servers confirmed) is unreadable ({exc}); "
                        "move it away, or start over with --fresh") from exc
    if not isinstance(saved, dict):
        raise JobFailed(f"{path} is not a checkpoint record; move it away, or start over with --fresh")
    return saved


def _unfinished(job: JobConfig, path: Path, job_ident: str) -> JobFailed | None:
    """The refusal to start `job` anew where `path` records an unfinished job: starting would
    replace the only record `--resume` trusts."""
    if not path.exists():
        return None
    saved = _read_record(path)
    if saved.get("finished") or not saved.get("iteration"):
        return None
    what = f"job {saved.get('name', '?')!r}, checkpoint confirmed at iteration {saved['iteration']}"
    if saved.get("fingerprint") == job_ident:
        how = f"continue it with `lpgan train {job.shown_path()} --resume`, set another `out`"
    else:
        how = f"it is another job (or another owner's): set another `out` in {job.shown_path()}"
    return JobFailed(f"{path} records an unfinished job ({what}), which starting anew would replace; {how}, "
                     f"or start over with `lpgan train {job.shown_path()} --fresh` (the record is replaced)")


def train(job: JobConfig, resume: bool = False, fresh: bool = False, dealer_workers: int = 0) -> int:
    """Secure training on the two servers; outputs in job.out. Returns the exit code.
    `fresh`: start anew even where job.out records an unfinished job (its record is replaced).
    `dealer_workers`: processes that make the dealer's material (mpcrt.dealer.workers; 0: this one)."""
    if resume and fresh:
        raise ConfigError("--resume continues the job, --fresh starts it anew: give one of them")
    cfg = job.train
    out = job.out
    images = training_images(job)
    out.mkdir(parents=True, exist_ok=True)
    secret = owner_secret(job.certs)
    key = inputs_key(secret, cfg.seed)  # the owner's inputs: nothing the servers get rebuilds them
    job_ident = job_id(secret, {"program": "train", "train": cfg.as_dict(), **job.protocol()}, images)
    record_path = out / RECORD
    record: dict[str, Any] = {"iteration": 0, "checkpoints": [], "curves": {"d_real": [], "d_fake": [], "seconds": []},
                              "fingerprint": job_ident, "name": job.name}
    if resume:
        if not record_path.is_file():
            raise JobFailed(f"no checkpoint record at {record_path}; start without --resume")
        saved = _read_record(record_path)
        if saved.get("fingerprint") != job_ident:
            raise JobFailed(f"{record_path} is from another job (its configuration, data, options or owner secret "
                            "differ); resume with the same job file and certs, or start without --resume")
        record = {**saved, "iteration": resume_point(saved, cfg, record_path), "finished": False}
    elif not fresh and (refusal := _unfinished(job, record_path, job_ident)) is not None:
        raise refusal
    first: int = record["iteration"]
    curves = {k: list(v[:first]) for k, v in record["curves"].items()}
    print(f"lpgan train: job {job.name!r}, preset {cfg.preset}, {cfg.iterations} iterations of batch "
          f"{cfg.batch_size} on {job.data}" + (f", resuming at iteration {first}" if first else ""))
    limits = training_limits(cfg, job.protocol(), first, progress=_say)  # cached; a dry run the first time
    if fresh:
        record_path.unlink(missing_ok=True)  # asked for: the old record would name another run's checkpoints
    progress = _Progress(cfg.iterations, first, "it", out, lambda: _rerun(job, record["iteration"]))
    started = time.perf_counter()

    def confirm() -> None:
        done = min(progress.checkpoints)
        if done > record["iteration"] and len(curves["d_real"]) >= done:
            record.update(iteration=done, checkpoints=[*record["checkpoints"], done],
                          curves={k: v[:done] for k, v in curves.items()})
            _write_atomic(record_path, json.dumps(record), _rerun(job, record["iteration"]))

    def on_event(party_id: int, event: dict[str, Any]) -> None:
        typed = progress.event(party_id, event)
        if isinstance(typed, CheckpointSaved):
            progress.checkpoints[party_id] = checked_checkpoint(cfg, party_id, typed.iteration,
                                                                progress.checkpoints[party_id])
            confirm()

    def on_iteration(i: int, d_real: float, d_fake: float) -> None:
        curves["d_real"].append(d_real)
        curves["d_fake"].append(d_fake)
        curves["seconds"].append(time.perf_counter() - started)
        progress.step(D_real=f"{d_real:.2f}", D_fake=f"{d_fake:.2f}")
        confirm()

    def advice() -> str | None:
        return resume_advice(job, record["iteration"], len(curves["d_real"]) - first)

    try:
        result = _run(job, "train", training_args(cfg, job_ident, first), run_seeds(), limits, on_event, progress,
                      advice, lambda client: drive_training(client, cfg, images, first, on_iteration, key=key),
                      dealer_workers)
        seconds = time.perf_counter() - started
        judged_noise = quality_noise(cfg, key) if job.quality and job.twin else None
        twin = asyncio.run(plaintext_training(cfg, images, judged_noise, key=key)) if job.twin else None
        judged = None
        if judged_noise is not None and twin is not None:
            print(f"sample quality of {len(judged_noise)} images from each generator (a small MNIST classifier "
                  "judges)")
            judged = quality_report(cfg, result["generator"].state_dict(), twin["quality_samples"], judged_noise)
        written = _write_training_outputs(out, result, curves, twin, progress.stats, seconds, job, first, judged,
                                          _rerun(job, record["iteration"]))
    except KeyboardInterrupt as exc:
        raise Interrupted(resume_advice(job, record["iteration"], len(curves["d_real"]) - first)
                          or "no iteration was done and no checkpoint confirmed: run the job again") from exc
    if record_path.exists():  # finished: a new job may write here (a record of an unfinished one is kept)
        _write_atomic(record_path, json.dumps({**record, "finished": True}), "nothing: the job is done")
    rows = [("iterations", f"{first}..{cfg.iterations}"), ("time", f"{seconds:.1f} s"),
            ("per iteration", f"{seconds / max(cfg.iterations - first, 1):.2f} s"), *_server_rows(progress.stats)]
    for who, q in (judged or {}).items():
        if isinstance(q, dict):
            rows.append((f"quality {who}", f"Frechet distance {q['frechet_distance']:.1f}, mean confidence "
                                           f"{q['mean_confidence']:.3f}"))
    _summary(rows, written)
    return 0


def _run(job: JobConfig, program: str, args: dict[str, Any], seeds: tuple[bytes, bytes], limits: DealerLimits,
         on_event: Callable[[int, dict], None], progress: _Progress, note: Callable[[], str | None] | None,
         drive: Callable[[OwnerClient], Awaitable[Any]], dealer_workers: int = 0) -> Any:
    """Start `program` on both servers, `drive` it as the owner (its dealer bounded by
    `limits`), wait for both to finish; any failure becomes a JobFailed that names the
    server (and what --resume can do: `note`)."""
    state: dict[str, Any] = {"job": None, "interrupted": False}

    async def main() -> Any:
        _cancel_on_sigint(asyncio.current_task(), state)  # type: ignore[arg-type]
        state["job"] = await start_job(job.servers, job.certs, program, args, seeds, name=job.name,
                                       timeout=job.timeout, connect_timeout=job.connect_timeout, on_event=on_event,
                                       on_log=progress.log, dealer_limits=limits, dealer_workers=dealer_workers,
                                       **job.protocol())
        try:
            result = await drive(state["job"].client)
            await _wait_done(state["job"])
            progress.finish(state["job"].client.final_stats)
            return result
        except ServerFailed as exc:
            raise await _cause(state["job"], exc) from None
        finally:
            state["closing"] = True  # a repeated Ctrl-C cancellation must not cut the close short
            await state["job"].close()

    try:
        return run_loop(main())
    except asyncio.CancelledError:
        if state["interrupted"]:
            raise KeyboardInterrupt from None
        raise
    except (ServerFailed, ServerUnreachable, ConnectionError, TimeoutError) as exc:
        raise JobFailed(_explain(exc, state["job"], note)) from exc
    finally:
        progress.close()


def _cancel_on_sigint(task: asyncio.Task, state: dict[str, Any]) -> None:
    """Ctrl-C cancels the job's task, and again every half second until it ends: Python
    3.11's wait_for can swallow a cancellation that meets a result (both happen often in
    a job), and the job would then run on to its end. `state["interrupted"]` records it."""
    loop = asyncio.get_running_loop()

    def cancel() -> None:
        if not task.done() and not state.get("closing"):
            task.cancel()
            loop.call_later(0.5, cancel)

    def on_sigint() -> None:
        state["interrupted"] = True
        cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals here: Ctrl-C as usual
        loop.add_signal_handler(signal.SIGINT, on_sigint)


async def _cause(job: Any, seen: ServerFailed) -> ServerFailed:
    """The failure to report first: the owner's own (raised), else the failing server's own,
    not its peer's echo of it, else what the owner saw."""
    if job.client.handler_error is not None:
        raise job.client.handler_error
    return await job.client.settle(timeout=5.0) or seen


async def _wait_done(job: Any, timeout: float = 30.0) -> None:
    """Both servers' finished frames (their final counts come with them)."""
    await job.client.wait_until(lambda: all(job.client.finished) or job.client.failure is not None, timeout)
    if job.client.failure is not None:
        raise job.client.failure


def _server_rows(stats: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f"server {i}", f"{s.get('rounds', 0)} rounds, {s.get('bytes_sent', 0) / 1e6:.1f} MB sent to its peer")
            for i, s in enumerate(stats)]


def _summary(rows: list[tuple[str, str]], written: list[Path]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print("outputs:")
    for path in written:
        print(f"  {path.resolve()}")


def _save(obj: Any, path: Path, then: str) -> Path:
    try:
        torch.save(obj, path)
    except (OSError, RuntimeError) as exc:  # torch's writer reports a full disk as a RuntimeError
        path.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise JobFailed(f"could not write {path} ({reason}); free disk space, then {then}") from exc
    return path


def _write_training_outputs(out: Path, result: dict[str, Any], curves: dict[str, list[float]], twin: dict | None,
                            stats: list[dict], seconds: float, job: JobConfig, first: int, judged: dict | None,
                            then: str) -> list[Path]:
    try:
        written = [
            _save(result["generator"].state_dict(), out / "generator.pt", then),
            _save(result["discriminator"].state_dict(), out / "discriminator.pt", then),
            outputs.image_grid(result["samples"], out / "samples.png"),
            outputs.curves_plot(curves, twin["curves"] if twin else None, out / "curves.png"),
        ]
        if twin is not None:
            written.append(outputs.image_grid(twin["samples"], out / "samples_plaintext_twin.png"))
        metrics = {"job": job.name, "config": job.train.as_dict(), "protocol": job.protocol(), "data": job.data,
                   "resumed_at": first, "seconds": seconds, "curves": curves, "servers": stats,
                   "plaintext_twin_curves": twin["curves"] if twin else None, "sample_quality": judged}
        written.append(outputs.write_json(metrics, out / "metrics.json"))
    except OSError as exc:
        raise JobFailed(f"could not write the outputs to {out} ({exc.strerror or exc}); free disk space, "
                        f"then {then}") from exc
    return [*written, out / "server0.log", out / "server1.log"]


def synthesize(job: JobConfig, dealer_workers: int = 0) -> int:
    """Secure synthesis of job.synthesize.count images from a trained generator."""
    spec = job.synthesize
    if spec.preset not in models.PRESETS:
        raise JobFailed(f"unknown preset {spec.preset!r}; choose one of {', '.join(models.PRESETS)}")
    generator = models.generator(models.PRESETS[spec.preset])
    try:
        generator.load_state_dict(torch.load(spec.generator, weights_only=True))
    except FileNotFoundError:
        raise JobFailed(f"no generator at {spec.generator}; train one first (`lpgan train`) or set "
                        "[synthesize] generator") from None
    except (RuntimeError, KeyError) as exc:
        raise JobFailed(f"{spec.generator} is not a '{spec.preset}' generator ({exc}); set [synthesize] preset") \
            from exc
    out = job.out
    out.mkdir(parents=True, exist_ok=True)
    # the noise from the owner's secret with the job's seed; the dealer's seeds fresh
    noise = synthesis_noise(inputs_key(owner_secret(job.certs), spec.seed), spec.count,
                            models.PRESETS[spec.preset].nz)
    batches = -(-spec.count // spec.batch_size)
    print(f"lpgan synthesize: {spec.count} images from {spec.generator} on shares")
    limits = synthesis_limits(spec.preset, spec.count, spec.batch_size, job.protocol(), progress=_say)
    again = f"run `lpgan synthesize {job.shown_path()}` again"
    progress = _Progress(batches, 0, "batch", out, lambda: again)
    started = time.perf_counter()

    images = _run(job, "synthesize", {"preset": spec.preset, "batches": batches}, run_seeds(), limits, progress.event,
                  progress, None, lambda client: drive_synthesis(client, generator, noise, spec.batch_size,
                                                       lambda b: progress.step()), dealer_workers)
    seconds = time.perf_counter() - started
    try:
        written = [outputs.image_grid(images, out / "synthesized.png"), _save(images, out / "synthesized.pt", again)]
    except OSError as exc:
        raise JobFailed(f"could not write the images to {out} ({exc.strerror or exc}); free disk space") from exc
    _summary([("images", str(spec.count)), ("time", f"{seconds:.1f} s"), *_server_rows(progress.stats)], written)
    return 0
