"""Settings: one entrance (load_config), precedence, validation, files, flags; the package's layers."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from workshop_utils.cli import build_parser, config_from_args
from workshop_utils.config import (
    ConfigError,
    DataSettings,
    WorkshopConfig,
    changed_settings,
    load_config,
    read_config_file,
    save_config,
)
from workshop_utils.report.markdown import md_table, to_html

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_flag_over_file_over_environment_over_size(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKSHOP_MODEL", "from-env")
    monkeypatch.setenv("WORKSHOP_MAX_STEPS", "7")
    cfg = load_config("tiny")
    assert (cfg.model.model_id, cfg.train.max_steps) == ("from-env", 7)
    assert cfg.sources["train.max_steps"] == "환경변수 WORKSHOP_MAX_STEPS"
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  max_steps: 9\nmodel:\n  model_id: from-file\n", encoding="utf-8")
    cfg = load_config("tiny", config_file=f)
    assert (cfg.model.model_id, cfg.train.max_steps) == ("from-file", 9)
    args = build_parser().parse_args(["train", "--config", str(f), "--model", "from-flag", "--size", "tiny"])
    cfg = config_from_args(args)
    assert (cfg.model.model_id, cfg.train.max_steps, cfg.size) == ("from-flag", 9, "tiny")
    assert cfg.sources["model.model_id"] == "명령줄 (CLI)" and cfg.sources["train.max_steps"].startswith("설정 파일")
    assert cfg.sources["train.learning_rate"] == "크기 tiny (size preset)"


def test_size_comes_from_the_highest_source(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKSHOP_SIZE", "smoke")
    assert load_config().size == "smoke"
    f = tmp_path / "c.yaml"
    f.write_text("size: tiny\n", encoding="utf-8")
    assert load_config(config_file=f).size == "tiny"
    assert load_config("full", config_file=f).size == "full"


@pytest.mark.parametrize("name,value,allowed", [
    ("train.memory_mode", "fast", "auto, budget, 16gb"),
    ("train.offload_vocab", "maybe", "auto, on, off"),
    ("train.offload_activations", "sometimes", "auto, on, off"),
    ("train.fp8_backward", "yes", "off, on"),
    ("train.gradient_checkpointing", "sometimes", "auto, on, off 또는 층 수"),
    ("model.compute_dtype", "fp8", "auto, bfloat16, float16, float32"),
    ("data.hard_method", "random", "bm25, topic"),
    ("data.oracle_fraction", 1.5, "0~1"),
    ("eval.settings", "golden,everything", "golden_only"),
])
def test_an_invalid_option_fails_at_config_time_naming_the_allowed_values(name, value, allowed):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", **{name: value})
    assert name in str(err.value) and allowed in str(err.value)


def test_sections_validate_when_created():
    with pytest.raises(ConfigError, match="data.no_oracle_target"):
        DataSettings(no_oracle_target="guess")


def test_unknown_setting_and_bad_type_are_named(tmp_path):
    with pytest.raises(ConfigError, match="train.learnin_rate"):
        load_config("tiny", **{"train.learnin_rate": 1})
    with pytest.raises(ConfigError, match="정수"):
        load_config("tiny", **{"train.max_steps": "ten"})
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  warmup: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.warmup"):
        read_config_file(f)


def test_a_saved_config_file_round_trips(tmp_path):
    cfg = load_config("smoke", **{"lora.r": 8, "train.learning_rate": 5e-4, "eval.settings": ["rag_topk"],
                                  "eval.embedding_model": "none"})
    path = save_config(cfg, tmp_path / "config.yaml")
    again = load_config(config_file=path)
    assert again.to_dict() == cfg.to_dict() and again.eval.embedding_model is None
    assert "workshop run --config" in path.read_text(encoding="utf-8")


def test_changed_settings_say_where_each_came_from(monkeypatch):
    monkeypatch.setenv("WORKSHOP_GPU_MODE", "16gb")
    rows = {name: source for name, _, source in changed_settings(load_config("tiny", **{"lora.r": 4}))}
    assert rows["train.memory_mode"] == "환경변수 WORKSHOP_GPU_MODE"
    assert rows["lora.r"] == "인자 (argument)" and rows["train.max_steps"] == "크기 tiny (size preset)"


def test_environment_never_beats_a_models_explicit_setting(monkeypatch):
    """The old bug: WORKSHOP_MODEL overrode settings.model_id inside the model layer."""
    from workshop_utils.model.choice import resolve_model

    monkeypatch.setenv("WORKSHOP_MODEL", "random:exaone:layers=1")
    cfg = load_config("tiny", **{"model.model_id": "offline"})
    assert resolve_model(cfg.model).source == "offline"


def test_html_report_keeps_links_code_and_tables(tmp_path):
    md = "# 제목\n\n[문서](https://example.com) 와 `workshop run`\n\n" + md_table([{"a": 1.23456, "b": "x|y"}])
    html = to_html(md, tmp_path)
    assert '<a href="https://example.com">문서</a>' in html and "<code>workshop run</code>" in html
    assert "<td>1.235</td>" in html and "x|y" in html and "|" not in html.split("<table>")[1].split("</table>")[0] \
        .replace("x|y", "")


def test_cli_starts_without_torch():
    code = "import sys, workshop_utils.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "False"


def test_function_level_package_imports_say_why():
    """Imports inside functions exist only for a heavy dependency (torch-free start-up), with a reason."""
    lazy_ok = {"cli.py", "bench.py"}  # their module docstrings say why: `workshop --help` loads no torch
    offenders = []
    for path in (ROOT / "workshop_utils").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and node.level > 0 and path.name not in lazy_ok \
                            and "#" not in lines[node.lineno - 1]:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_layers_contract_holds():
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        pytest.skip("import-linter is not installed in this environment")
    res = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "Contracts: 2 kept, 0 broken" in res.stdout


def test_every_setting_is_documented_and_a_flag():
    import dataclasses

    cfg = WorkshopConfig()
    parser = build_parser()
    for section in ("model", "data", "lora", "train", "eval"):
        for f in dataclasses.fields(getattr(cfg, section)):
            assert f.metadata.get("help"), f"{section}.{f.name} has no help text"
            value = getattr(getattr(cfg, section), f.name)
            flag = ",".join(value) if isinstance(value, list) else str(value)
            args = parser.parse_args(["run", f"--{section}.{f.name}", flag, "--size", "full"])
            assert getattr(config_from_args(args), section).__dict__[f.name] == value, f"{section}.{f.name}"
