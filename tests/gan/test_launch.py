"""`lpgan train`'s owner side without servers: its seeds, its arguments, its record for --resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gan import jobfile, launch
from gan.budget import synthesis_bytes
from gan.jobfile import ConfigError
from gan.launch import JobFailed, checked_checkpoint, resume_advice, resume_point, server_counts
from gan.train import TrainConfig


def job_config(folder: Path, certs: str = "certs", **train: Any) -> jobfile.JobConfig:
    """A job file's configuration (servers that are never reached); the owner's secret in `certs`."""
    (folder / certs).mkdir(parents=True, exist_ok=True)
    values = {"iterations": 2, "batch_size": 4, "samples": 4, "checkpoint_every": 1, "twin": False, **train}
    return jobfile.parse({"name": "job", "out": "out", "train": values,
                          "servers": {"party0": "127.0.0.1:1", "party1": "127.0.0.1:2", "certs": certs}}, folder)


class Started(Exception):
    """launch.train got as far as starting the servers."""


def capture_starts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Make launch.train stop where it would start the servers; what it would send is recorded."""
    starts: list[dict[str, Any]] = []

    def start(job, program, args, seeds, limits, on_event, progress, note, drive, dealer_workers=0):
        progress.close()
        starts.append({"program": program, "args": args, "seeds": seeds, "limits": limits, "note": note,
                       "dealer_workers": dealer_workers})
        raise Started

    monkeypatch.setattr(launch, "_run", start)
    return starts


def write_record(job: jobfile.JobConfig, fingerprint: str, iteration: int, checkpoints: list[int]) -> None:
    curves = {k: [0.5] * iteration for k in ("d_real", "d_fake", "seconds")}
    (job.out / launch.RECORD).write_text(json.dumps({"iteration": iteration, "checkpoints": checkpoints,
                                                     "curves": curves, "fingerprint": fingerprint, "name": job.name}))


def test_every_run_of_a_job_file_gets_fresh_seeds_resume_included(tmp_path, monkeypatch):
    starts = capture_starts(monkeypatch)
    job = job_config(tmp_path)
    for _ in range(2):
        with pytest.raises(Started):
            launch.train(job)
    first, second = starts
    assert first["args"] == second["args"]  # the same job, the same id: only the pads change
    write_record(job, first["args"]["fingerprint"], 1, [1])
    with pytest.raises(Started):
        launch.train(job, resume=True)
    resumed = starts[2]
    assert resumed["args"]["resume_from"] == 1
    seeds = [s for start in starts for s in start["seeds"]]
    assert len(set(seeds)) == 6
    # the dealer is bounded by what the remaining iterations and the samples need
    full, rest = (start["limits"].job_bytes for start in (first, resumed))
    samples = synthesis_bytes(job.train.preset, job.train.samples, job.train.samples, job.protocol())
    assert full - samples == 2 * (rest - samples) > 0


def test_resume_takes_only_a_checkpoint_the_owner_recorded(tmp_path, monkeypatch):
    starts = capture_starts(monkeypatch)
    job = job_config(tmp_path, iterations=4, checkpoint_every=2)
    with pytest.raises(Started):
        launch.train(job)
    fingerprint = starts[0]["args"]["fingerprint"]
    for iteration, recorded in ((4, [2]), (3, [2, 3]), (2, None)):
        write_record(job, fingerprint, iteration, recorded)
        with pytest.raises(JobFailed, match=f"iteration {iteration}, which is not a checkpoint this owner recorded"):
            launch.train(job, resume=True)
    assert len(starts) == 1  # refused before any server is asked
    write_record(job, fingerprint, 2, [2])
    with pytest.raises(Started):
        launch.train(job, resume=True)
    assert starts[1]["args"]["resume_from"] == 2


def test_a_record_from_another_owner_is_refused(tmp_path, monkeypatch):
    starts = capture_starts(monkeypatch)
    job = job_config(tmp_path)
    with pytest.raises(Started):
        launch.train(job)
    write_record(job, starts[0]["args"]["fingerprint"], 1, [1])
    other = job_config(tmp_path, certs="other-certs")  # the same job file, another owner's secret
    with pytest.raises(JobFailed, match="from another job"):
        launch.train(other, resume=True)


def test_the_record_point_checks_its_results():
    cfg = TrainConfig(iterations=4, checkpoint_every=2)
    record = {"iteration": 2, "checkpoints": [2], "curves": {"d_real": [0.1]}}
    with pytest.raises(JobFailed, match="holds the results of fewer"):
        resume_point(record, cfg, Path("checkpoint.json"))
    assert resume_point({**record, "curves": {"d_real": [0.1, 0.2]}}, cfg, Path("checkpoint.json")) == 2
    assert resume_point({"iteration": 0}, cfg, Path("checkpoint.json")) == 0


def test_a_servers_checkpoint_report_must_be_one_the_job_makes():
    cfg = TrainConfig(iterations=6, checkpoint_every=2)
    assert checked_checkpoint(cfg, 1, 2, last=0) == 2
    assert checked_checkpoint(cfg, 1, 6, last=4) == 6
    for reported, last in ((3, 0), (8, 6), (2, 2), (0, 0), ("2", 0), (True, 0), (None, 0), (2.0, 0)):
        with pytest.raises(JobFailed, match=r"server 1 reported a checkpoint"):
            checked_checkpoint(cfg, 1, reported, last=last)
    with pytest.raises(JobFailed, match="server 0"):
        checked_checkpoint(TrainConfig(iterations=6, checkpoint_every=0), 0, 2, last=0)


def test_a_servers_traffic_report_must_be_counts():
    good = {"rounds": 3, "bytes_sent": 10, "by_op": {"mul": {"rounds": 1}}}
    assert server_counts(0, good) is good
    assert server_counts(0, {"iteration": 1}) == {"iteration": 1}
    for bad in ("rounds", [3], {"rounds": "3"}, {"bytes_sent": -1}, {"rounds": True}, {"bytes_sent": 1.5}):
        with pytest.raises(JobFailed, match=r"server 1 reported traffic that is not counts"):
            server_counts(1, bad)


def image_folder(folder: Path, count: int) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(count):
        Image.new("L", (16, 16), color=i * 40).save(folder / f"{i}.png")
    return folder


def test_fewer_images_than_a_batch_is_refused_before_any_server_is_asked(tmp_path, monkeypatch):
    # it used to spin at 100% CPU for ever, holding both servers, in the owner's batch stream
    starts = capture_starts(monkeypatch)
    image_folder(tmp_path / "pics", 3)
    job = job_config(tmp_path, batch_size=4)
    job.data, job.path = str(tmp_path / "pics"), tmp_path / "job.toml"
    with pytest.raises(ConfigError) as info:
        launch.train(job)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'job.toml'}: [train] batch_size = 4 is more than the 3 images of "
                              f"[data] source '{tmp_path / 'pics'}'"), message
    assert "at most 3" in message and not starts and not (tmp_path / "out").exists()
    job.train.batch_size = 3
    with pytest.raises(Started):
        launch.train(job)


def test_a_data_folder_without_images_is_named(tmp_path, monkeypatch):
    starts = capture_starts(monkeypatch)
    job = job_config(tmp_path)
    job.path = tmp_path / "job.toml"
    for data in (tmp_path / "nowhere", image_folder(tmp_path / "empty", 0)):
        job.data = str(data)
        with pytest.raises(ConfigError, match=rf"job.toml: \[data\] source '{data}'.*PNG/JPEG"):
            launch.train(job)
    assert not starts


def test_a_new_job_does_not_replace_the_record_of_an_unfinished_one(tmp_path, monkeypatch):
    starts = capture_starts(monkeypatch)
    job = job_config(tmp_path, iterations=4, checkpoint_every=2)
    job.path = tmp_path / "job.toml"
    with pytest.raises(Started):
        launch.train(job)
    write_record(job, starts[0]["args"]["fingerprint"], 2, [2])
    kept = (job.out / launch.RECORD).read_text()
    with pytest.raises(JobFailed, match=r"records an unfinished job \(job 'job', checkpoint confirmed at iteration 2\)"
                       r".*`lpgan train .*job.toml --resume`.*another `out`.*--fresh") as info:
        launch.train(job)
    assert (job.out / launch.RECORD).read_text() == kept and len(starts) == 1, str(info.value)
    other = job_config(tmp_path, iterations=4, checkpoint_every=2, lr=1e-3)  # another job, the same out
    with pytest.raises(JobFailed, match=r"it is another job .*another `out`.*--fresh"):
        launch.train(other)
    with pytest.raises(Started):  # --resume continues it
        launch.train(job, resume=True)
    with pytest.raises(Started):  # --fresh starts anew: the old record is gone, the new run writes its own
        launch.train(other, fresh=True)
    assert not (job.out / launch.RECORD).exists()
    with pytest.raises(ConfigError, match="give one of them"):
        launch.train(job, resume=True, fresh=True)


def test_the_record_of_a_finished_job_may_be_replaced(tmp_path, monkeypatch):
    starts = capture_starts(monkeypatch)
    job = job_config(tmp_path, iterations=4, checkpoint_every=2)
    with pytest.raises(Started):
        launch.train(job)
    write_record(job, starts[0]["args"]["fingerprint"], 4, [2, 4])
    record = json.loads((job.out / launch.RECORD).read_text())
    (job.out / launch.RECORD).write_text(json.dumps({**record, "finished": True}))
    with pytest.raises(Started):
        launch.train(job)


def test_what_resume_can_do_is_said_only_where_it_is_true(tmp_path):
    job = job_config(tmp_path, iterations=6, checkpoint_every=2)
    job.path = Path("jobs/a.toml")
    said = resume_advice(job, confirmed=4, done=5)
    assert said is not None and "iteration 4: `lpgan train jobs/a.toml --resume` continues from there" in said
    assert resume_advice(job, confirmed=0, done=0) is None  # refused, unreachable, bad values: nothing ran
    said = resume_advice(job, confirmed=0, done=1)
    assert said is not None and "before its first checkpoint (iteration 2)" in said and "from the start" in said
    for every in (0, 7):
        job.train.checkpoint_every = every
        said = resume_advice(job, confirmed=0, done=3)
        assert said is not None and "makes no checkpoints" in said and f"checkpoint_every = {every}" in said
    assert all("set [train] checkpoint_every)" not in str(resume_advice(job, c, d)) for c in (0, 2) for d in (0, 3))


def test_a_failure_before_the_job_starts_says_nothing_of_checkpoints(tmp_path, monkeypatch):
    starts = capture_starts(monkeypatch)
    job = job_config(tmp_path)
    with pytest.raises(Started):
        launch.train(job)
    assert starts[0]["note"]() is None  # what _run adds to a refusal or an unreachable server


def test_the_dealer_workers_of_the_command_line_reach_the_job(tmp_path, monkeypatch):
    from gan import cli

    starts = capture_starts(monkeypatch)
    job = job_config(tmp_path)
    monkeypatch.setattr(jobfile, "load", lambda path: job)
    for argv, workers in ((["train", "job.toml"], 0), (["train", "job.toml", "--dealer-workers", "3"], 3)):
        with pytest.raises(Started):
            cli.main(argv)
        assert starts[-1]["dealer_workers"] == workers
    with pytest.raises(SystemExit):
        cli.main(["train", "job.toml", "--dealer-workers", "-1"])
