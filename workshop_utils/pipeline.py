"""The whole workshop in one call (`workshop run`, so `make run`):
prepare data -> QLoRA-train -> evaluate base vs tuned -> report, summary.json, experiment log.
"""
from __future__ import annotations

import time
from pathlib import Path

from .config import WorkshopConfig, changed_settings, load_config
from .data.prepare import data_dir, load_splits, prepare, read_manifest
from .evaluate.metrics import HEADLINE
from .evaluate.results import headline_metrics
from .evaluate.runner import evaluate_adapter
from .model.choice import resolve_model
from .model.load import load_model
from .model.lora import model_name
from .report import plots
from .report.run_report import print_table, write_report, write_summary
from .runtime.device import choose_device
from .runtime.distributed import dist_info, main_process_first, single_process_env
from .train.runs import completed_run, run_identity
from .train.tracking import configure_wandb, write_experiment_log
from .train.trainer import loss_history, train


def banner(cfg: WorkshopConfig) -> None:
    """Which model, device and size this run uses and why, and every setting not at its default with its source."""
    choice = resolve_model(cfg.model)
    dev = choose_device(cfg.model.compute_dtype)
    print(f"[run] 규모 size={cfg.size} ({cfg.sources.get('size', '기본값')})  모델 model={choice.model_id}")
    print(f"[run] 모델 선택 이유: {choice.reason}")
    print(f"[run] {dev.line()}")
    print(f"[run] 데이터 data: {data_dir(cfg)}" + ("" if cfg.data_dir else " (원본에서 만들거나 그대로 씀)"))
    by_source: dict[str, list[str]] = {}
    for name, value, source in changed_settings(cfg):
        if name != "size":
            by_source.setdefault(source, []).append(f"{name}={value}")
    for source, items in by_source.items():
        print(f"[run] 기본값과 다른 설정 ({source}): {', '.join(items)}")


def run(cfg: WorkshopConfig | None = None, progress: bool = True, resume: bool | str = False,
        run_name: str | None = None, overwrite: bool = False) -> dict:
    """Run everything into a new run folder (`resume` as in train.trainer.choose_run); returns the summary
    (also written to <run>/summary.json and <build>/summary.json, the latest run's)."""
    cfg = cfg or load_config()
    t_start = time.perf_counter()
    dist = dist_info()
    if dist.is_main:
        banner(cfg)
    if dist.distributed:
        print(dist.line())
    configure_wandb()
    # 1. data (rank 0 writes the files first; under accelerate the other ranks then read them). A given
    # data_dir is used as it is; the default folder is prepared from the raw files each run (seconds).
    with main_process_first():
        if cfg.data_dir or not dist.is_main:
            splits, manifest = load_splits(cfg), read_manifest(data_dir(cfg))
        else:
            prep = prepare(cfg.data.raw_paths, data_dir(cfg), cfg.data)
            splits, manifest = prep.splits, prep.summary
    if dist.is_main:
        m = manifest
        print(f"[prepare] read={m['read']} kept={m['kept']} rejected={m['rejected']} splits={m['splits']} "
              f"-> {data_dir(cfg)}")
    loaded = load_model(cfg.model)
    model, tr = train(loaded.model, loaded.tokenizer, splits, cfg, resume=resume, run_name=run_name,
                      overwrite=overwrite)
    if not dist.is_main:  # evaluation, report and experiment entry happen once, on rank 0
        return {}
    if dist.fsdp:  # the trained model is sharded over the ranks: evaluate from the saved adapter
        from peft import PeftModel

        del model
        with single_process_env():
            loaded = load_model(cfg.model)
        model = PeftModel.from_pretrained(loaded.model, tr.adapter_dir)
    run_dir = Path(tr.run_dir)
    speed = f", {tr.tokens_per_s:,.0f} tokens/s" if tr.tokens_per_s else ""
    print(f"[train] {tr.steps} steps, {tr.seconds:.0f}s{speed}, final loss {tr.final_loss:.4f} -> {tr.adapter_dir}")
    # 3. evaluation: base = adapter off, tuned = adapter on, same loaded model
    res, files = evaluate_adapter(model, loaded.tokenizer, cfg, run_dir / "eval", progress)
    # 4. report + summary + experiment log, inside the run folder
    report_dir = run_dir / "report"
    images = plots.save_eval_plots(res.metrics, report_dir)
    images["loss_curve"] = plots.save(plots.loss_curve(loss_history(run_dir)), report_dir / "loss.png")
    head = headline_metrics(res)
    summary = {
        "model": loaded.choice.model_id,
        "size": cfg.size,
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "data_dir": str(data_dir(cfg)),
        "device": loaded.device.device,
        "compute_dtype": str(loaded.device.dtype).replace("torch.", ""),
        "setting": "golden_distractors",
        "base": head["base"],
        "tuned": head["tuned"],
        "train": {"steps": tr.steps, "seconds": tr.seconds, "final_loss": tr.final_loss,
                  "eval_loss": tr.eval_loss, "diagnoses": tr.diagnoses, "tokens_per_s": tr.tokens_per_s,
                  "processes": dist.world_size, "peak_gib": tr.peak_gib},
        "settings": {st: {m: {k: v for k, v in d.items() if k in HEADLINE}
                          for m, d in by.items()} for st, by in res.metrics.items()},
        "retrieval_recall_at_k": res.retrieval,
        "stop_rate": res.stop_rate,
        "eval_examples": len({p["id"] for p in res.predictions}),
        "embedding_model": res.embedding_model,
    }
    run_info = {"run": run_dir.name, "model": summary["model"], "size": cfg.size, "device": summary["device"],
                "compute dtype": summary["compute_dtype"], "data": summary["data_dir"],
                "eval examples": summary["eval_examples"], "embedding model": res.embedding_model}
    paths = write_report(report_dir, "QLoRA/RAFT 워크숍 실행 보고서", run_info, tr.summary(), res, images)
    exp = write_experiment_log(cfg, tr.summary(), head["tuned"], dataset=f"{data_dir(cfg).name} ({manifest['kept']} samples)",
                               name=f"{cfg.size}-run", extra={"model": summary["model"], "run": str(run_dir)},
                               config_file=run_dir / "config.yaml")
    summary["report"] = str(paths["markdown"])
    summary["experiment_log"] = str(exp)
    summary["seconds_total"] = round(time.perf_counter() - t_start, 1)
    write_summary(run_dir / "summary.json", summary)
    summary_path = write_summary(cfg.build_path / "summary.json", summary)
    print()
    print(print_table(summary))
    print()
    print(f"[run] 실행 run: {run_dir}")
    print(f"[run] 보고서 report: {paths['markdown']}  (HTML: {paths['html']})")
    print(f"[run] 요약 summary: {summary_path}   실험 기록: {exp}")
    print(f"[run] 전체 {summary['seconds_total']:.0f}s")
    return summary


def ensure_adapter(cfg: WorkshopConfig, loaded=None, verbose: bool = True):
    """A tuned model for notebooks 04/05: the newest completed run of this configuration trained on the same
    data and settings (what notebook 03 saved), or -- when there is none (a notebook run alone) -- a new
    training run with this config, saying so.

    Returns (peft_model, loaded) on ONE base model: base = adapter off, tuned = adapter on.
    """
    from peft import PeftModel

    loaded = loaded or load_model(cfg.model, verbose=verbose)
    splits = load_splits(cfg)
    run = completed_run(cfg, run_identity(cfg, model_name(loaded.model), splits))
    if run is not None:
        if verbose:
            print(f"[adapter] 같은 설정으로 학습한 어댑터를 사용합니다 (03 노트북 또는 workshop train): {run.path / 'adapter'}")
        return PeftModel.from_pretrained(loaded.model, str(run.path / "adapter")), loaded
    if verbose:
        print(f"[adapter] {cfg.runs_dir}에 이 설정으로 학습한 어댑터가 없어 지금 학습합니다 "
              f"(size={cfg.size}, max_steps={cfg.train.max_steps})")
    model, _ = train(loaded.model, loaded.tokenizer, splits, cfg, resume="auto", verbose=verbose)
    return model, loaded
