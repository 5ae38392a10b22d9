"""`lpgan train` and `lpgan synthesize`: the owner runs a job on two edge servers.

The owner connects to both servers over mutual TLS, acts as the dealer, shares the data,
the noise and the model, shows progress (time, rounds and bytes of each server), and
writes what comes back to the output directory: the reconstructed models, image grids,
loss curves, metrics and both servers' logs. It keeps its own record of the checkpoints
both servers confirmed (checkpoint.json): `--resume` continues from the last one, and only
from one in that record. Every run gets fresh dealer seeds; the inputs come from the
owner's secret and the job's seed (gan.owner). Every failure ends with a message naming
the server and what to do, and exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import torch

from gan import models, outputs
from gan.budget import synthesis_limits, training_limits
from gan.jobfile import JobConfig
from gan.owner import drive_synthesis, drive_training, inputs_key, job_id, owner_secret, run_seeds, training_args
from gan.train import TrainConfig, load_images, plaintext_training, quality_noise, quality_report, synthesis_noise
from mpcrt import OwnerClient, ServerFailed
from mpcrt.dealer import DealerLimits
from mpcrt.jobs import ServerUnreachable, start_job
from transports.loop import run as run_loop

RECORD = "checkpoint.json"


class JobFailed(Exception):
    """A job that could not finish; the message says why and what to do."""


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise JobFailed(f"could not write {path} ({exc.strerror or exc}); the previous version is kept; "
                        "free disk space and run again (with --resume for training)") from exc


class _Progress:
    """A progress bar per job (tqdm) with rounds and bytes of each server; server events
    also go to out/server{i}.log."""

    def __init__(self, total: int, initial: int, unit: str, out: Path) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True, mininterval=0.5)
        self.stats: list[dict[str, Any]] = [{}, {}]
        self.logs = [open(out / f"server{i}.log", "a") for i in (0, 1)]  # noqa: SIM115 - closed in close()
        self.checkpoints = [initial, initial]  # the last each server reported

    def event(self, party_id: int, event: dict[str, Any]) -> None:
        line = event["log"] if "log" in event else json.dumps(event, default=str)
        try:
            self.logs[party_id].write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            self.logs[party_id].flush()
        except OSError as exc:
            raise JobFailed(f"could not write {self.logs[party_id].name} ({exc.strerror or exc}); free disk space "
                            "and run `lpgan train CONFIG --resume`") from exc
        if "rounds" in event:
            self.stats[party_id] = server_counts(party_id, event)
        if "stats" in event:  # the final ones, with the job's 'done'
            self.stats[party_id] = server_counts(party_id, event["stats"])

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


def _explain(exc: BaseException, job: Any | None, record: dict | None) -> str:
    """What went wrong, which server, and how to go on."""
    lines = [str(exc)]
    if job is not None:
        for _i, failure in sorted(job.client.failures.items()):
            if str(failure) != str(exc):
                lines.append(f"also: {failure}")
    if record is not None:
        if record.get("iteration"):
            lines.append(f"the last checkpoint both servers confirmed is iteration {record['iteration']}; continue "
                         "with `lpgan train CONFIG --resume` once both servers run")
        else:
            lines.append("no checkpoint was confirmed yet; run the job again (set [train] checkpoint_every)")
    return "\n".join(lines)


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


def train(job: JobConfig, resume: bool = False) -> int:
    """Secure training on the two servers; outputs in job.out. Returns the exit code."""
    cfg = job.train
    out = job.out
    out.mkdir(parents=True, exist_ok=True)
    images = load_images(job.data, cfg.preset_().image_size)
    secret = owner_secret(job.certs)
    key = inputs_key(secret, cfg.seed)  # the owner's inputs: nothing the servers get rebuilds them
    job_ident = job_id(secret, {"program": "train", "train": cfg.as_dict(), **job.protocol()}, images)
    record_path = out / RECORD
    record: dict[str, Any] = {"iteration": 0, "checkpoints": [], "curves": {"d_real": [], "d_fake": [], "seconds": []},
                              "fingerprint": job_ident, "name": job.name}
    if resume:
        if not record_path.is_file():
            raise JobFailed(f"no checkpoint record at {record_path}; start without --resume")
        saved = json.loads(record_path.read_text())
        if saved.get("fingerprint") != job_ident:
            raise JobFailed(f"{record_path} is from another job (its configuration, data, options or owner secret "
                            "differ); resume with the same job file and certs, or start without --resume")
        record = {**saved, "iteration": resume_point(saved, cfg, record_path)}
    first: int = record["iteration"]
    curves = {k: list(v[:first]) for k, v in record["curves"].items()}
    print(f"lpgan train: job {job.name!r}, preset {cfg.preset}, {cfg.iterations} iterations of batch "
          f"{cfg.batch_size} on {job.data}" + (f", resuming at iteration {first}" if first else ""))
    limits = training_limits(cfg, job.protocol(), first)  # a dry run of one iteration: seconds
    progress = _Progress(cfg.iterations, first, "it", out)
    started = time.perf_counter()

    def confirm() -> None:
        done = min(progress.checkpoints)
        if done > record["iteration"] and len(curves["d_real"]) >= done:
            record.update(iteration=done, checkpoints=[*record["checkpoints"], done],
                          curves={k: v[:done] for k, v in curves.items()})
            _write_atomic(record_path, json.dumps(record))

    def on_event(party_id: int, event: dict[str, Any]) -> None:
        if "checkpoint" in event:
            progress.checkpoints[party_id] = checked_checkpoint(cfg, party_id, event["checkpoint"],
                                                                progress.checkpoints[party_id])
        progress.event(party_id, event)
        if "checkpoint" in event:
            confirm()

    def on_iteration(i: int, d_real: float, d_fake: float) -> None:
        curves["d_real"].append(d_real)
        curves["d_fake"].append(d_fake)
        curves["seconds"].append(time.perf_counter() - started)
        progress.step(D_real=f"{d_real:.2f}", D_fake=f"{d_fake:.2f}")
        confirm()

    result = _run(job, "train", training_args(cfg, job_ident, first), run_seeds(), limits, on_event, progress, record,
                  lambda client: drive_training(client, cfg, images, first, on_iteration, key=key))
    seconds = time.perf_counter() - started
    judged_noise = quality_noise(cfg, key) if job.quality and job.twin else None
    twin = asyncio.run(plaintext_training(cfg, images, judged_noise, key=key)) if job.twin else None
    judged = None
    if judged_noise is not None and twin is not None:
        print(f"sample quality of {len(judged_noise)} images from each generator (a small MNIST classifier judges)")
        judged = quality_report(cfg, result["generator"].state_dict(), twin["quality_samples"], judged_noise)
    written = _write_training_outputs(out, result, curves, twin, progress.stats, seconds, job, first, judged)
    rows = [("iterations", f"{first}..{cfg.iterations}"), ("time", f"{seconds:.1f} s"),
            ("per iteration", f"{seconds / max(cfg.iterations - first, 1):.2f} s"), *_server_rows(progress.stats)]
    for who, q in (judged or {}).items():
        if isinstance(q, dict):
            rows.append((f"quality {who}", f"Frechet distance {q['frechet_distance']:.1f}, mean confidence "
                                           f"{q['mean_confidence']:.3f}"))
    _summary(rows, written)
    return 0


def _run(job: JobConfig, program: str, args: dict[str, Any], seeds: tuple[bytes, bytes], limits: DealerLimits,
         on_event: Callable[[int, dict], None], progress: _Progress, record: dict | None,
         drive: Callable[[OwnerClient], Awaitable[Any]]) -> Any:
    """Start `program` on both servers, `drive` it as the owner (its dealer bounded by
    `limits`), wait for both to finish; any failure becomes a JobFailed that names the
    server (and the last checkpoint, with `record`)."""
    state: dict[str, Any] = {"job": None}

    async def main() -> Any:
        state["job"] = await start_job(job.servers, job.certs, program, args, seeds, name=job.name,
                                       timeout=job.timeout, connect_timeout=job.connect_timeout, on_event=on_event,
                                       dealer_limits=limits, **job.protocol())
        try:
            result = await drive(state["job"].client)
            await _wait_done(state["job"])
            return result
        except ServerFailed as exc:
            raise await _cause(state["job"], exc) from None
        finally:
            await state["job"].close()

    try:
        return run_loop(main())
    except (ServerFailed, ServerUnreachable, ConnectionError, TimeoutError) as exc:
        raise JobFailed(_explain(exc, state["job"], record)) from exc
    finally:
        progress.close()


async def _cause(job: Any, seen: ServerFailed) -> ServerFailed:
    """The failure to report first: the owner's own (raised), else the failing server's own,
    not its peer's echo of it, else what the owner saw."""
    if job.client.handler_error is not None:
        raise job.client.handler_error
    return await job.client.settle(timeout=5.0) or seen


async def _wait_done(job: Any, timeout: float = 30.0) -> None:
    """Both servers' 'done' events (their stats come with them)."""
    deadline = time.monotonic() + timeout
    while not all(job.client.finished) and job.client.failure is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
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


def _save(obj: Any, path: Path) -> Path:
    try:
        torch.save(obj, path)
    except (OSError, RuntimeError) as exc:  # torch's writer reports a full disk as a RuntimeError
        path.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise JobFailed(f"could not write {path} ({reason}); free disk space; the servers' "
                        "checkpoints are kept, so `lpgan train CONFIG --resume` redoes only the end") from exc
    return path


def _write_training_outputs(out: Path, result: dict[str, Any], curves: dict[str, list[float]], twin: dict | None,
                            stats: list[dict], seconds: float, job: JobConfig, first: int, judged: dict | None
                            ) -> list[Path]:
    try:
        written = [
            _save(result["generator"].state_dict(), out / "generator.pt"),
            _save(result["discriminator"].state_dict(), out / "discriminator.pt"),
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
        raise JobFailed(f"could not write the outputs to {out} ({exc.strerror or exc}); free disk space and run "
                        "`lpgan train CONFIG --resume`") from exc
    return [*written, out / "server0.log", out / "server1.log"]


def synthesize(job: JobConfig) -> int:
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
    limits = synthesis_limits(spec.preset, spec.count, spec.batch_size, job.protocol())
    progress = _Progress(batches, 0, "batch", out)
    started = time.perf_counter()

    images = _run(job, "synthesize", {"preset": spec.preset, "batches": batches}, run_seeds(), limits, progress.event,
                  progress, None, lambda client: drive_synthesis(client, generator, noise, spec.batch_size,
                                                       lambda b: progress.step()))
    seconds = time.perf_counter() - started
    try:
        written = [outputs.image_grid(images, out / "synthesized.png"), _save(images, out / "synthesized.pt")]
    except OSError as exc:
        raise JobFailed(f"could not write the images to {out} ({exc.strerror or exc}); free disk space") from exc
    _summary([("images", str(spec.count)), ("time", f"{seconds:.1f} s"), *_server_rows(progress.stats)], written)
    return 0
