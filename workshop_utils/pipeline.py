"""The whole workshop in one call (`workshop run`, so `make run`):
prepare data -> QLoRA-train -> evaluate base vs tuned -> report, summary.json, experiment log.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .config import WorkshopConfig, load_config, size_changes
from .data.prepare import data_dir, load_corpus, load_splits, prepare
from .distributed import dist_info, main_process_first


def banner(cfg: WorkshopConfig) -> None:
    from .env import choose_device
    from .models import resolve_model

    choice = resolve_model(cfg.model)
    dev = choose_device(cfg.model.compute_dtype)
    print(f"[run] 규모 size={cfg.size}  모델 model={choice.model_id}")
    print(f"[run] 모델 선택 이유: {choice.reason}")
    print(f"[run] {dev.line()}")
    if cfg.size != "full":
        changed = ", ".join(f"{r['설정']}={r[f'{cfg.size} 값']}" for r in size_changes(cfg))
        print(f"[run] {cfg.size} 크기에서 바꾼 설정 (GPU 기본값 대비): {changed}")


def evaluate_adapter(model, tokenizer, cfg: WorkshopConfig, out_dir: Path, progress: bool = True):
    """Evaluate base (adapter off) vs tuned (adapter on) on the test subset; save metrics & plots."""
    from .evaluation import build_eval_sets, evaluate_models, save_eval, select_test

    splits = load_splits(cfg)
    test = select_test(splits["test"], cfg.eval.num_examples)
    sets = build_eval_sets(test, load_corpus(cfg), cfg)
    res = evaluate_models(model, tokenizer, sets, cfg, progress=progress)
    files = save_eval(res, out_dir)
    return res, files


def run(cfg: WorkshopConfig | None = None, progress: bool = True) -> dict:
    """Run everything; returns the summary dict (also written to build/summary.json)."""
    from . import plots
    from .evaluation import headline_metrics
    from .models import load_model
    from .report import print_table, write_report, write_summary
    from .tracking import configure_wandb, write_experiment_log
    from .training import loss_history, train

    cfg = cfg or load_config()
    t_start = time.perf_counter()
    dist = dist_info()
    if dist.is_main:
        banner(cfg)
    if dist.distributed:
        print(dist.line())
    configure_wandb()
    # 1. data (rank 0 writes the files first; under accelerate the other ranks then read them)
    with main_process_first():
        prep = prepare(cfg.data.raw_paths, data_dir(cfg), cfg.data)
        # 2. a fresh run: the main job does not resume an older one
        if dist.is_main and cfg.run_dir.exists():
            shutil.rmtree(cfg.run_dir)
    s = prep.summary
    if dist.is_main:
        print(f"[prepare] read={s['read']} kept={s['kept']} rejected={s['rejected']} splits={s['splits']} "
              f"({s['seconds']}s) -> {data_dir(cfg)}")
    loaded = load_model(cfg.model)
    model, tr = train(loaded.model, loaded.tokenizer, prep.splits, cfg, resume=False)
    if not dist.is_main:  # evaluation, report and experiment entry happen once, on rank 0
        return {}
    if dist.fsdp:  # the trained model is sharded over the ranks: evaluate from the saved adapter
        from peft import PeftModel

        from .distributed import single_process_env

        del model
        with single_process_env():
            loaded = load_model(cfg.model)
        model = PeftModel.from_pretrained(loaded.model, tr.adapter_dir)
    print(f"[train] {tr.steps} steps, {tr.seconds:.0f}s, final loss {tr.final_loss:.4f} -> {tr.adapter_dir}")
    # 3. evaluation: base = adapter off, tuned = adapter on, same loaded model
    eval_dir = cfg.build_path / "eval"
    res, files = evaluate_adapter(model, loaded.tokenizer, cfg, eval_dir, progress)
    # 4. report + summary + experiment log
    report_dir = cfg.build_path / "report"
    images = {k: v for k, v in files.items() if k.endswith("plot")}
    report_dir.mkdir(parents=True, exist_ok=True)
    for k, p in list(images.items()):
        images[k] = Path(shutil.copy(p, report_dir / p.name))
    images["loss_curve"] = plots.save(plots.loss_curve(loss_history(tr.run_dir)), report_dir / "loss.png")
    head = headline_metrics(res)
    summary = {
        "model": loaded.choice.model_id,
        "size": cfg.size,
        "device": loaded.device.device,
        "compute_dtype": str(loaded.device.dtype).replace("torch.", ""),
        "setting": "golden_distractors",
        "base": head["base"],
        "tuned": head["tuned"],
        "train": {"steps": tr.steps, "seconds": tr.seconds, "final_loss": tr.final_loss,
                  "eval_loss": tr.eval_loss, "diagnoses": tr.diagnoses},
        "settings": {st: {m: {k: v for k, v in d.items() if k in ("rouge1", "rouge2", "rougeL", "bleu", "cosine",
                                                                     "exact_match", "f1")}
                          for m, d in by.items()} for st, by in res.metrics.items()},
        "retrieval_recall_at_k": res.retrieval,
        "stop_rate": res.stop_rate,
        "eval_examples": len({p["id"] for p in res.predictions}),
        "embedding_model": res.embedding_model,
    }
    run_info = {"model": summary["model"], "size": cfg.size, "device": summary["device"],
                "compute dtype": summary["compute_dtype"], "eval examples": summary["eval_examples"],
                "embedding model": res.embedding_model}
    paths = write_report(report_dir, "QLoRA/RAFT 워크숍 실행 보고서", run_info, tr.summary(), res, images)
    exp = write_experiment_log(cfg, tr.summary(), head["tuned"], dataset=f"누리온테크 RAFT ({s['kept']} samples)",
                               name=f"{cfg.size}-run", extra={"model": summary["model"]})
    summary["report"] = str(paths["markdown"])
    summary["experiment_log"] = str(exp)
    summary["seconds_total"] = round(time.perf_counter() - t_start, 1)
    summary_path = write_summary(cfg.build_path / "summary.json", summary)
    print()
    print(print_table(summary))
    print()
    print(f"[run] 보고서 report: {paths['markdown']}  (HTML: {paths['html']})")
    print(f"[run] 요약 summary: {summary_path}   실험 기록: {exp}")
    print(f"[run] 전체 {summary['seconds_total']:.0f}s")
    return summary


def ensure_adapter(cfg: WorkshopConfig, loaded=None, verbose: bool = True):
    """A tuned model for notebook 04/05: the adapter notebook 03 saved in the run directory, or -- when
    it is missing (notebook run alone) -- a fresh training run with this config, saying so.

    Returns (peft_model, loaded) on ONE base model: base = adapter off, tuned = adapter on.
    """
    from peft import PeftModel

    from .models import load_model
    from .training import train

    loaded = loaded or load_model(cfg.model, verbose=verbose)
    adapter = cfg.run_dir / "adapter"
    if (adapter / "adapter_config.json").exists():
        if verbose:
            print(f"[adapter] 03 노트북이 저장한 어댑터를 사용합니다: {adapter}")
        return PeftModel.from_pretrained(loaded.model, str(adapter)), loaded
    if verbose:
        print(f"[adapter] {adapter}에 어댑터가 없어 지금 학습합니다 (size={cfg.size}, max_steps={cfg.train.max_steps})")
    model, _ = train(loaded.model, loaded.tokenizer, load_splits(cfg), cfg, resume=False, verbose=verbose)
    return model, loaded
