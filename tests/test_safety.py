"""Nothing a participant made is lost or silently replaced: prepared data, runs, checkpoints; bad input ends
in one Korean line and a non-zero exit, never a traceback."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workshop_utils.cli import main
from workshop_utils.config import load_config
from workshop_utils.data.prepare import PreparedDataError, ensure_prepared, prepare, read_manifest
from workshop_utils.runtime.errors import WorkshopError

ROOT = Path(__file__).resolve().parents[1]
CLINIC = ROOT / "data" / "custom" / "clinic_faq.csv"
MAPPING = {"question": "문의내용", "context": "참고문서", "answer": "답변", "id": "문항번호", "doc_id": "문서번호",
           "topic": "분류", "cot": "근거설명"}


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def custom_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("custom") / "data"
    prepare([CLINIC], out, load_config("tiny").data, mapping=MAPPING, splits_file=None)
    return out


def test_prepare_writes_a_manifest_with_the_sources_and_settings(custom_data):
    m = read_manifest(custom_data)
    (src,) = m["sources"]
    assert src["path"].endswith("clinic_faq.csv") and src["size"] == CLINIC.stat().st_size
    assert src["sha256"] == hashlib.sha256(CLINIC.read_bytes()).hexdigest()
    assert m["settings"]["num_distractors"] == 1 and m["mapping"] == MAPPING
    assert m["kept"] + m["rejected"] == m["read"] and m["library_version"]
    assert not list(custom_data.parent.glob(".data.partial-*"))


def test_a_folder_of_other_sources_is_never_replaced_without_overwrite(custom_data):
    before = tree_digest(custom_data)
    with pytest.raises(PreparedDataError, match="다른 원본"):
        prepare(["data/raw"], custom_data, load_config("tiny").data)
    assert tree_digest(custom_data) == before


def test_the_default_data_is_rebuilt_only_from_its_own_sources(tmp_path, custom_data):
    import shutil

    cfg = load_config("tiny", build_dir=str(tmp_path))
    data = ensure_prepared(cfg, verbose=False)  # built from data/raw
    first = read_manifest(data)
    # any data setting that shapes the output makes it stale (the old check compared 4 of them)
    cfg2 = load_config("tiny", build_dir=str(tmp_path), **{"data.hard_distractor_fraction": 0.0})
    ensure_prepared(cfg2, verbose=False)
    assert read_manifest(data)["settings"]["hard_distractor_fraction"] == 0.0 != first["settings"][
        "hard_distractor_fraction"]
    # a participant's own prepared data in the default place: train/run stop instead of rebuilding it
    shutil.rmtree(data)
    shutil.copytree(custom_data, data)
    before = tree_digest(data)
    with pytest.raises(PreparedDataError, match="clinic_faq.csv"):
        ensure_prepared(cfg, verbose=False)
    assert tree_digest(data) == before


def test_interrupted_prepare_leaves_no_folder_that_is_accepted(tmp_path):
    out = tmp_path / "data"
    script = textwrap.dedent(f"""
        import importlib, os, signal
        p = importlib.import_module("workshop_utils.data.prepare")  # the module (the package re-exports the function)
        def killed(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)   # the process dies in the middle of writing
        p._save_dataset_dict = killed
        p.prepare(["data/raw"], {str(out)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and read_manifest(out) is None
    assert list(tmp_path.glob(".data.partial-*"))  # the half-written folder, under a name nothing reads
    cfg = load_config("tiny", **{"data_dir": str(out)})
    with pytest.raises(PreparedDataError, match="준비된 데이터 폴더가 아닙니다"):
        ensure_prepared(cfg)
    prepare(["data/raw"], out, cfg.data, save_dataset=False)  # the next prepare cleans the stale part up
    assert read_manifest(out) and not list(tmp_path.glob(".data.partial-*"))


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[0] if err else ""


def test_bad_cli_input_gets_one_line_and_a_nonzero_exit(tmp_path, capsys, custom_data):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train:\n  learnin_rate: 1\n", encoding="utf-8")
    not_adapter = tmp_path / "adapter"
    not_adapter.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"sources": [], "settings": {}}), encoding="utf-8")
    for split in ("train", "validation", "test"):
        (empty / f"{split}.jsonl").write_text("", encoding="utf-8")
    rejected = tmp_path / "rejected.jsonl"
    rejected.write_text('{"q": "질문입니다?", "doc": "", "a": ""}\n{"q": 1}\n', encoding="utf-8")
    out = str(tmp_path / "out")
    build = ["--build-dir", str(tmp_path / "build"), "--size", "tiny"]
    cases = [
        (["prepare", "--raw", str(CLINIC), "--out", out, "--mapping", "{not json"], 2, "--mapping이 올바른 JSON이 아닙니다"),
        (["prepare", "--raw", str(CLINIC), "--out", out, "--mapping",
          '{"question": "문의", "context": "참고문서", "answer": "답"}'], 2, "원본에 없습니다"),
        (["prepare", "--raw", str(tmp_path / "nowhere.csv"), "--out", out], 2, "경로가 없습니다"),
        (["prepare", "--raw", str(rejected), "--out", out], 1, "모든 레코드가 거부되었습니다"),
        (["prepare", "--raw", "data/raw", "--out", str(custom_data)], 2, "다른 원본으로 만든 데이터"),
        (["train", *build, "--data", str(tmp_path / "missing")], 2, "준비된 데이터 폴더가 아닙니다"),
        (["train", *build, "--data", str(empty)], 2, "학습 예제가 없습니다"),
        (["evaluate", *build, "--adapter", str(not_adapter)], 2, "어댑터 폴더가 아닙니다"),
        (["evaluate", *build, "--adapter", str(tmp_path / "gone")], 2, "경로가 없습니다"),
        (["train", "--size", "huge"], 2, "size='huge'"),
        (["run", *build, "--config", str(bad_yaml)], 2, "train.learnin_rate"),
        (["train", *build, "--train.memory_mode", "fast"], 2, "허용: auto, budget, 16gb"),
        (["train", *build, "--max-steps", "ten"], 2, "정수"),
    ]
    for argv, code, first in cases:
        got_code, got_first = _cli(capsys, *argv)
        assert (got_code, first in got_first) == (code, True), (argv, got_code, got_first)
    assert not Path(out).exists()


@pytest.mark.slow
def test_prepare_then_train_with_data_uses_exactly_that_folder(tmp_path, capsys, custom_data, tiny_model):
    before = tree_digest(custom_data)
    build = tmp_path / "build"
    code = main(["train", "--size", "tiny", "--model", tiny_model, "--build-dir", str(build), "--data", str(custom_data),
                 "--max-steps", "2", "--train.eval_steps", "0", "--train.save_steps", "2"])
    out = capsys.readouterr().out
    assert code == 0 and str(custom_data) in out
    assert tree_digest(custom_data) == before  # byte-identical afterwards
    assert not (build / "data").exists()  # the shipped data was not prepared, let alone used
    (run,) = [p for p in (build / "runs" / "tiny-qlora").iterdir() if p.is_dir()]
    identity = json.loads((run / "run.json").read_text(encoding="utf-8"))["identity"]
    from workshop_utils.data.jsonl import read_jsonl
    from workshop_utils.train.runs import data_hash

    splits = {s: read_jsonl(custom_data / f"{s}.jsonl") for s in ("train", "validation")}
    assert identity["data"] == data_hash(splits)
    assert "data_dir: " + str(custom_data) in (run / "config.yaml").read_text(encoding="utf-8")


def _train(cfg, splits, **kw):
    from workshop_utils.model.load import load_model
    from workshop_utils.train.trainer import train

    loaded = load_model(cfg.model, verbose=False)
    return train(loaded.model, loaded.tokenizer, splits, cfg, **kw)


SHORT = [{"id": f"s{i}", "instruction": "문맥을 읽고 답하세요.", "context": [f"문서 {i}: 값은 {i}입니다."],
          "question": f"문서 {i}의 값은?", "answer": f"{i}입니다."} for i in range(4)]


@pytest.mark.slow
def test_resume_takes_only_a_checkpoint_of_the_same_data_and_settings(tmp_path, tiny_model, capsys):
    from workshop_utils.train.runs import list_runs

    cfg = load_config("tiny", build_dir=str(tmp_path), **{"train.max_steps": 4, "train.save_steps": 2,
                                                          "train.eval_steps": 0, "model.model_id": tiny_model})
    splits = {"train": SHORT, "validation": []}

    class Stop(Exception):
        pass

    from transformers import TrainerCallback

    class StopAt3(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise Stop

    with pytest.raises(Stop):
        _train(cfg, splits, resume=False, callbacks=[StopAt3()])
    (first,) = list_runs(cfg)
    ckpt = first.checkpoints()[-1]
    assert json.loads((ckpt / "workshop_run.json").read_text())["identity"]["fingerprint"] == first.fingerprint
    other = {"train": [dict(ex, answer="다른 답") for ex in SHORT], "validation": []}
    with pytest.raises(WorkshopError, match="다른 데이터/설정"):
        _train(cfg, other, resume=str(ckpt))
    # auto: the unfinished run holds other data, so a new run starts and says why
    _, res = _train(cfg, other, resume="auto")
    assert res.resumed_from is None and res.run_dir != str(first.path)
    assert "데이터/설정이 달라 이어서 학습하지 않습니다" in capsys.readouterr().out
    # the same data and settings: the unfinished run continues where it stopped
    _, res = _train(cfg, splits, resume="auto")
    assert res.run_dir == str(first.path) and res.resumed_from.endswith("checkpoint-2") and res.steps == 4
    assert len(list_runs(cfg)) == 2 and all(r.complete for r in list_runs(cfg))


@pytest.mark.slow
def test_sigint_stops_at_a_checkpoint_and_resume_reaches_the_same_step(tmp_path, tiny_model):
    """Ctrl-C mid-run (a real SIGINT to a training process) loses nothing: the step it was in is
    checkpointed, the message says how to continue, and `--resume auto` finishes the run."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from transformers import TrainerCallback
        from workshop_utils.cli import main

        class CtrlC(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if state.global_step == 2 and not os.environ.get("RESUMED"):
                    os.kill(os.getpid(), signal.SIGINT)

        import workshop_utils.train.trainer as t
        real = t.build_trainer
        t.build_trainer = lambda *a, callbacks=None, **k: real(*a, callbacks=[*(callbacks or []), CtrlC()], **k)
        sys.exit(main(["train", "--size", "tiny", "--model", {tiny_model!r}, "--build-dir", {str(tmp_path)!r},
                       "--max-steps", "5",
                       "--train.save_steps", "10", "--train.eval_steps", "0", "--resume", "auto"]))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 130, first.stderr[-2000:]
    assert "이어서 학습: workshop train --resume auto" in first.stdout
    (run,) = [p for p in (tmp_path / "runs" / "tiny-qlora").iterdir() if p.is_dir()]
    assert [p.name for p in run.glob("checkpoint-*")] == ["checkpoint-3"]  # the interrupted step, saved
    second = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**env, "RESUMED": "1"},
                            capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads((run / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 5 and summary["resumed_from"].endswith("checkpoint-3")
