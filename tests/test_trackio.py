"""trackio as an optional tracker: added to report_to only when installed and asked for, logged
locally (no Space on the Hub), its dashboard command printed; TensorBoard stays.

CI does not install the `tracking` extra, so these tests put a fake `trackio` module in
sys.modules (transformers finds it the way it finds the real one, with importlib's find_spec) and
check what transformers' TrackioCallback hands it. A real local run is at the end; it runs only
where trackio is installed (`pip install -e '.[tracking]'`).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from workshop_utils.config import RAFT_INSTRUCTION, load_config

SHORT = [{"id": f"s{i}", "instruction": RAFT_INSTRUCTION, "context": [doc], "question": q, "answer": a,
          "golden_index": 0}
         for i, (doc, q, a) in enumerate([("누리온테크 연차휴가는 1년에 15일이다.", "연차휴가는 며칠인가요?", "15일입니다."),
                                          ("사내식당 점심은 3,000원이다.", "점심값은 얼마인가요?", "3,000원입니다.")])]


class FakeTrackio(types.ModuleType):
    """Records what transformers' TrackioCallback calls: init, config updates, log, finish."""

    def __init__(self):
        super().__init__("trackio")
        self.__spec__ = importlib.machinery.ModuleSpec("trackio", None, origin="fake trackio (tests)")
        self.__version__ = "0.43.0"
        self.calls: list[tuple[str, object]] = []
        self.context_vars = types.SimpleNamespace(current_space_id=types.SimpleNamespace(get=lambda: None))
        fake = self

        class Config(dict):
            def update(self, values, allow_val_change=False):
                super().update(values)

        self.config = Config()

        def init(**kw):
            fake.calls.append(("init", kw))

        def log(metrics):
            fake.calls.append(("log", dict(metrics)))

        def finish():
            fake.calls.append(("finish", None))

        self.init, self.log, self.finish = init, log, finish


@pytest.fixture
def fake_trackio(monkeypatch):
    fake = FakeTrackio()
    monkeypatch.setitem(sys.modules, "trackio", fake)
    return fake


def cfg_with(tmp_path, report_to):
    cfg = load_config(size="tiny", build_dir=str(tmp_path))
    cfg.model.model_id = "offline"
    cfg.train.eval_steps = 0
    cfg.train.report_to = list(report_to)
    cfg.train.output_dir = "runs/trackio-demo"
    return cfg


def test_trackio_is_left_out_when_not_installed(tmp_path, monkeypatch):
    from workshop_utils.runtime.device import choose_device
    from workshop_utils.train.trainer import tracking_lines, training_arguments

    monkeypatch.setitem(sys.modules, "trackio", None)  # as if not installed: find_spec returns None
    cfg = cfg_with(tmp_path, ["tensorboard", "trackio"])
    args = training_arguments(cfg, choose_device())
    assert args.report_to == ["tensorboard"]
    lines = tracking_lines(cfg, args)
    assert len(lines) == 1 and "trackio가 설치되어 있지 않아" in lines[0] and ".[tracking]" in lines[0]


def test_trackio_is_added_when_installed_and_asked_for_and_stays_local(tmp_path, fake_trackio):
    from workshop_utils.runtime.device import choose_device
    from workshop_utils.train.tracking import trackio_available, trackio_dir
    from workshop_utils.train.trainer import tracking_lines, training_arguments

    assert trackio_available()
    not_asked = training_arguments(cfg_with(tmp_path, ["tensorboard"]), choose_device())
    assert not_asked.report_to == ["tensorboard"]  # installed is not enough: the config has to ask for it

    cfg = cfg_with(tmp_path, ["tensorboard", "trackio"])
    args = training_arguments(cfg, choose_device())
    assert args.report_to == ["tensorboard", "trackio"]  # TensorBoard stays
    assert args.project == "qlora-raft-workshop" and args.run_name == "trackio-demo"
    assert args.trackio_space_id is None and args.trackio_static_space_id is False  # nothing goes to the Hub
    assert tracking_lines(cfg, args) == [
        f'[tracking] trackio 로컬 대시보드: trackio show --project "qlora-raft-workshop" '
        f"(기록 위치 {trackio_dir()}, Hub로 보내지 않음)"]


def test_a_bare_trackio_folder_on_the_path_is_not_trackio(monkeypatch, tmp_path):
    from workshop_utils.train.tracking import trackio_available

    (tmp_path / "trackio").mkdir()  # e.g. TRACKIO_DIR=./trackio: importable as an empty namespace package
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "trackio", raising=False)
    if importlib.util.find_spec("trackio").origin is None:  # only when no real trackio comes first
        assert not trackio_available()


def test_trackio_dir_follows_trackio_dir_then_hf_home(monkeypatch, tmp_path):
    from pathlib import Path

    from huggingface_hub.constants import HF_HOME

    from workshop_utils.train.tracking import trackio_dir

    monkeypatch.delenv("TRACKIO_DIR", raising=False)
    assert trackio_dir() == Path(HF_HOME) / "trackio"
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path))
    assert trackio_dir() == tmp_path


@pytest.mark.slow
def test_training_with_fake_trackio_logs_losses_and_prints_the_dashboard(tmp_path, fake_trackio, tokenizer, capsys):
    from workshop_utils.model.load import load_model
    from workshop_utils.train.trainer import train

    cfg = cfg_with(tmp_path, ["tensorboard", "trackio"])
    cfg.train.max_steps, cfg.train.logging_steps, cfg.train.save_steps = 2, 1, 1000
    _, res = train(load_model(cfg.model, verbose=False).model, tokenizer, {"train": SHORT, "validation": []}, cfg,
                   resume=False)
    out = capsys.readouterr().out
    assert 'trackio show --project "qlora-raft-workshop"' in out
    kinds = [k for k, _ in fake_trackio.calls]
    assert kinds[0] == "init" and kinds[-1] == "finish"
    init = fake_trackio.calls[0][1]
    assert init["project"] == "qlora-raft-workshop" and init["name"].startswith("trackio-demo-2") and init["space_id"] is None
    losses = [m["train/loss"] for k, m in fake_trackio.calls if k == "log" and "train/loss" in m]
    assert len(losses) == 2 and losses == [h["loss"] for h in res.log_history if "loss" in h]
    assert fake_trackio.config["peft_config"] and fake_trackio.config["model/num_parameters"] > 0
    assert list((Path(res.run_dir) / "runs").rglob("events.out.tfevents.*"))  # TensorBoard still writes its events


REAL_RUN = textwrap.dedent("""
    import json, sys
    from workshop_utils.config import load_config
    from workshop_utils.model.load import load_model
    from workshop_utils.train.trainer import train
    cfg = load_config(size="tiny", build_dir=sys.argv[1])
    cfg.model.model_id, cfg.train.eval_steps, cfg.train.output_dir = "offline", 0, "runs/trackio-real"
    cfg.train.report_to = ["tensorboard", "trackio"]
    cfg.train.max_steps, cfg.train.logging_steps, cfg.train.save_steps = 2, 1, 1000
    loaded = load_model(cfg.model, verbose=False)
    _, res = train(loaded.model, loaded.tokenizer, {"train": json.loads(sys.argv[2]), "validation": []}, cfg,
                   resume=False)
    from trackio.sqlite_storage import SQLiteStorage
    logs = SQLiteStorage.get_logs(cfg.train.tracking_project, "trackio-real")
    print("LOSSES", json.dumps([l["train/loss"] for l in logs if "train/loss" in l]))
    print("TRAINER", json.dumps([h["loss"] for h in res.log_history if "loss" in h]))
""")


@pytest.mark.slow
def test_real_trackio_local_run_writes_the_losses_to_its_local_database(tmp_path, root):
    pytest.importorskip("trackio")
    env = dict(os.environ, TRACKIO_DIR=str(tmp_path / "trackio"), PYTHONPATH=os.pathsep.join(
        [str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-c", REAL_RUN, str(tmp_path / "build"), json.dumps(SHORT)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("LOSSES", "TRAINER")))
    assert json.loads(lines["LOSSES"]) == pytest.approx(json.loads(lines["TRAINER"])) and json.loads(lines["LOSSES"])
    assert 'trackio show --project "qlora-raft-workshop"' in proc.stdout
    assert list((tmp_path / "trackio").glob("*.db"))


def test_cli_report_to_adds_trackers_next_to_tensorboard(capsys):
    import argparse

    from workshop_utils import cli

    args = argparse.Namespace(config=None, size="tiny", report_to=cli._trackers("trackio"))
    assert cli.config_from_args(args).train.report_to == ["tensorboard", "trackio"]
    with pytest.raises(SystemExit) as err:
        cli.main(["train", "--report-to", "mlflow"])
    assert err.value.code == 2 and "알 수 없는 로깅 대상" in capsys.readouterr().err
