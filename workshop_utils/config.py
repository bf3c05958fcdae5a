"""One configuration object for the whole workshop, self-documenting like peft's LoraConfig.

Every knob is a dataclass field with a Korean help text (`metadata={"help": ...}`, and `"choices"` where
only some values make sense), so a notebook prints the table of settings (`describe(cfg.lora)`), the
`workshop` command builds one flag per field (`--train.learning_rate 1e-4`), and a YAML file can hold any
of them (`workshop run --config run.yaml`). GPU defaults are the seed's values ("full"); the sizes
"workshop", "smoke" and "tiny" shrink the run for a live session on a GPU, for `make run` on 2 CPU
cores, and for CI.

Where a value comes from, highest first (`load_config` records it in `cfg.sources`; the banner prints it):
  explicit argument / CLI flag  >  config file  >  environment variable  >  size preset  >  default.
This module is the only reader of the WORKSHOP_* environment variables:
  WORKSHOP_SIZE, WORKSHOP_MODEL, WORKSHOP_BUILD_DIR, WORKSHOP_MAX_STEPS, WORKSHOP_EMBEDDING ('none' skips
  cosine), WORKSHOP_CACHE (converted models), WORKSHOP_TOKENIZER (for random-weight models),
  WORKSHOP_GPU_MODE (train.memory_mode), WORKSHOP_MEMORY_BUDGET_GIB (train.memory_budget_gib: e.g. 8 so that
  several people share one card, docs/server.md), the process-wide WORKSHOP_KO_TOKENIZER (mecab | whitespace), and
  WORKSHOP_SOLUTIONS (1: the notebooks' exercise checks use the answer key for blanks; CI and `make reference`).
When the checkout belongs to someone else or is read-only (one checkout for a class), build_dir defaults to
~/qlora-raft-workshop/build.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runtime.errors import WorkshopError
from .runtime.paths import personal_dir, project_root, shared_checkout

EXAONE_MODEL_ID = "LGAI-EXAONE/EXAONE-3.0-7.8B-Instruct"
OFFLINE_MODEL_ID = "offline:smollm2-135m-instruct"
SIZES = ("full", "workshop", "smoke", "tiny")

RAFT_INSTRUCTION = (
    "다음 문맥을 읽고 질문에 답하세요. 여러 문맥이 주어질 수 있으며, 그 중 질문에 답하기 위한 "
    "가장 적절한 정보를 찾아 활용해야 합니다."
)
NO_ANSWER_TEXT = "제공된 문맥에서는 질문에 대한 답을 찾을 수 없습니다."


class ConfigError(WorkshopError):
    """A setting with a value it cannot take (the message is Korean and names the allowed values)."""


class _Section:
    """Settings sections check their option values when created (and `WorkshopConfig.validate` again)."""

    def __post_init__(self) -> None:
        _check_choices(self, SECTION_OF.get(type(self).__name__, "") + ".")


def _help(text: str, default: Any = dataclasses.MISSING, choices: tuple | None = None, **kw: Any) -> Any:
    meta = {"help": text, **({"choices": tuple(choices)} if choices else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


ATTENTIONS = ("auto", "sdpa", "eager", "workshop_varlen", "workshop_varlen_efficient", "flex_attention")


@dataclass
class ModelSettings(_Section):
    model_id: str = _help("모델 ID 또는 로컬 경로. 'auto'면 CUDA에서는 EXAONE, 아니면 오프라인 모델. 'offline', "
                          "'random:exaone[:layers=N,...]'(무작위 가중치, 측정용)도 가능", "auto")
    load_in_4bit: bool = _help("4비트(QLoRA) 양자화로 로드할지 여부", True)
    quant_type: str = _help("4비트 양자화 형식: nf4(정규분포 가중치에 최적) 또는 fp4", "nf4", ("nf4", "fp4"))
    double_quant: bool = _help("양자화 상수(absmax)를 한 번 더 양자화 (파라미터당 약 0.37비트 절약)", True)
    compute_dtype: str = _help("연산 dtype (auto는 장치에 맞게 선택)", "auto",
                               ("auto", "bfloat16", "float16", "float32"))
    trust_remote_code: bool = _help("허브의 모델 코드를 실행할지. transformers 5는 EXAONE을 기본 지원하므로 False", False)
    attn_implementation: str = _help("어텐션 구현 (auto: 고속 경로가 장치에 맞게 고름)", "auto", ATTENTIONS)
    max_seq_length: int = _help("학습/평가 시퀀스 최대 토큰 수 (02 노트북의 길이 분포로 정함)", 2048)
    cache_dir: str = _help("변환한 오프라인 모델·무작위 모델을 두는 폴더 (비우면 ~/.cache/qlora-raft-workshop)", "")
    tokenizer: str = _help("무작위 가중치 모델(random:...)에 쓸 토크나이저 경로 (비우면 오프라인 모델의 것)", "")


@dataclass
class DataSettings(_Section):
    raw_paths: list = _help("원본 데이터 파일/폴더 목록 (프로젝트 기준 상대 경로 가능)", ["data/raw"])
    splits_file: str = _help("문서별 고정 분할 파일 (doc_id,split). 없으면 문서 해시로 결정적 분할", "data/splits.csv")
    min_length: int = _help("텍스트 최소 길이(문자). 시드 슬라이드의 5", 5)
    max_length: int = _help("텍스트 최대 길이(문자). 시드 슬라이드의 2048", 2048)
    instruction: str = _help("RAFT instruction (고정 시스템 프롬프트)", RAFT_INSTRUCTION)
    num_distractors: int = _help("골든 문서와 함께 넣을 방해(distractor) 문서 수 k (RAFT 논문 기본 4)", 4)
    hard_distractor_fraction: float = _help("방해 문서 중 어려운(같은 주제/BM25 근접) 문서의 비율", 0.5)
    hard_method: str = _help(
        "어려운 방해 문서 고르기: bm25(질문과 가장 비슷한 문서) | topic(같은 주제에서 무작위, 대용량에서 선형 시간)",
        "bm25", ("bm25", "topic"))
    bm25_tokens: str = _help("BM25 방해 문서 채굴의 토큰: bigram(문자 2-gram, 빠름) | morphs(mecab-ko 형태소)",
                             "bigram", ("bigram", "morphs"))
    oracle_fraction: float = _help("골든 문서를 포함하는 예제 비율 P (RAFT 논문 권장 0.8)", 0.8)
    no_oracle_target: str = _help(
        "골든 문서가 빠진 예제(1-P)의 정답: abstain(문맥에 답이 없다고 답함) | answer(논문처럼 원래 답 유지)",
        "abstain", ("abstain", "answer"))
    max_context_len: int = _help(
        "문서 하나의 최대 길이(문자). 넘으면 근거 문장을 남기고 자름. 토큰 한도는 max_seq_length", 2048)
    add_cot: bool = _help("정답 대신 CoT(##begin_quote## 인용 + <ANSWER>:)를 학습 목표로 쓸지", True)
    distractor_pool: str = _help(
        "방해 문서를 뽑는 곳: same_split(학습 예제는 학습 문서에서만: 평가 문서가 학습에 새지 않음) | all",
        "same_split", ("same_split", "all"))
    validation_fraction: float = _help("splits_file이 없을 때 검증 세트 비율", 0.1)
    test_fraction: float = _help("splits_file이 없을 때 테스트 세트 비율", 0.1)
    seed: int = _help("분할·방해 문서 추출·셔플의 난수 시드", 42)


@dataclass
class LoraSettings(_Section):
    r: int = _help("저차원 행렬의 차원(rank). 클수록 표현력↑, 파라미터↑. 대부분 8~16이면 충분", 16)
    lora_alpha: int = _help("LoRA 업데이트 스케일 (실제 배율은 alpha/r). 보통 r의 2배", 32)
    lora_dropout: float = _help("LoRA 입력 드롭아웃. 데이터가 적으면 0.1 권장", 0.05)
    target_modules: list = _help("LoRA를 붙일 모듈 (어텐션 q/k/v/o 프로젝션)",
                                 ["q_proj", "k_proj", "v_proj", "o_proj"])
    bias: str = _help("bias 학습 여부", "none", ("none", "all", "lora_only"))
    task_type: str = _help("작업 종류 (텍스트 생성 = CAUSAL_LM)", "CAUSAL_LM")


@dataclass
class TrainSettings(_Section):
    output_dir: str = _help("실행 폴더들을 모으는 곳 (build 디렉터리 기준). 실행마다 <시각>-<식별값> 하위 폴더에 "
                             "체크포인트·로그·어댑터를 둠", "runs/exaone-qlora")
    num_train_epochs: float = _help("전체 데이터 반복 횟수. 소규모 데이터는 3~5", 3)
    max_steps: int = _help("최대 옵티마이저 스텝 (-1이면 epochs로 결정)", -1)
    per_device_train_batch_size: int = _help("장치당 학습 배치 크기", 4)
    per_device_eval_batch_size: int = _help("장치당 평가 배치 크기", 4)
    gradient_accumulation_steps: int = _help("경사 누적. 실제 배치 = batch × 누적 × GPU 수", 4)
    learning_rate: float = _help("학습률. LoRA는 전체 파인튜닝(1e-5)보다 크게 2e-4", 2e-4)
    lr_scheduler_type: str = _help("학습률 스케줄러", "cosine")
    warmup_steps: float = _help("웜업 스텝 (정수) 또는 비율 (0~1 실수)", 100)
    logging_steps: int = _help("로그 주기(스텝)", 10)
    eval_steps: int = _help("검증 주기(스텝). 0이면 학습 중 검증 안 함", 500)
    save_steps: int = _help("체크포인트 저장 주기(스텝)", 500)
    save_total_limit: int = _help("보관할 체크포인트 최대 개수", 2)
    optim: str = _help("옵티마이저. paged_adamw_8bit = 8비트 옵티마이저 상태 + 메모리 페이징", "paged_adamw_8bit")
    max_grad_norm: float = _help("그래디언트 클리핑 임계값", 0.3)
    gradient_checkpointing: str = _help(
        "활성화 체크포인팅: auto(메모리 예산으로 결정, 일부 층만도 가능) | on | off | 층 수(정수, 앞에서부터)", "auto")
    report_to: list = _help(
        "로깅 대상: tensorboard는 항상, wandb·trackio는 설치(pip install -e '.[tracking]')되어 있고 여기에 적었을 때만",
        ["tensorboard"])
    tracking_project: str = _help("trackio 프로젝트 이름: 로컬 대시보드에서 실행들을 묶는 단위", "qlora-raft-workshop")
    early_stopping_patience: int = _help("검증 loss가 개선되지 않으면 멈출 평가 횟수 (0이면 끔)", 0)
    early_stopping_threshold: float = _help(
        "early stopping: 검증 loss가 이 값(절대값)보다 많이 내려가야 개선으로 봄. 0이면 조금이라도 내려가면 개선", 0.0)
    eval_max_examples: int = _help("학습 중 검증 loss에 쓸 검증 예제 수 (0이면 전부)", 0)
    completion_only_logits: bool = _help(
        "답변 위치의 logits만 계산 (프롬프트 위치의 lm_head 계산 생략, 손실은 동일)", True)
    fast_path: str = _help(
        "GPU 고속 경로(train/fastpath): auto(CUDA에서 켬) | on | off. 아래 각 부품은 따로 끌 수 있음", "auto",
        ("auto", "on", "off"))
    padding_free: bool = _help("고속 경로: 패딩 없이 시퀀스를 이어 붙인 배치 (position_ids로 경계 구분)", True)
    liger_kernels: bool = _help(
        "고속 경로: Liger 커널 (rope, RMSNorm, SwiGLU, fused linear cross-entropy) -- 설치되어 있고 CUDA일 때", True)
    memory_mode: str = _help(
        "고속 경로 메모리 모드: auto | budget(예산 안에서 가장 빠르게) | 16gb(T4급: fp16, 전체 체크포인팅)", "auto",
        ("auto", "budget", "16gb"))
    memory_budget_gib: float = _help("고속 경로 메모리 예산 GiB (0이면 GPU 메모리의 85%)", 0.0)
    offload_vocab: str = _help(
        "고속 경로: 임베딩·lm_head(어휘 102,400 x 4,096)를 쓰지 않는 동안 CPU 메모리에 둠: auto(예산이 빠듯해 "
        "더 큰 micro-batch가 들어갈 때) | on | off", "auto", ("auto", "on", "off"))
    offload_activations: str = _help(
        "고속 경로: 체크포인팅한 층의 입력을 고정(pinned) CPU 메모리에 두고 역전파 때 한 층 앞서 되가져옴 (복사는 "
        "계산 뒤에 숨김): auto(더 큰 micro-batch가 들어갈 때) | on | off", "auto", ("auto", "on", "off"))
    compile_layers: str = _help(
        "고속 경로: 디코더 층을 torch.compile로 컴파일 (모든 층이 같은 코드, 길이가 달라도 재컴파일 없음; 작은 "
        "micro-batch의 CPU 병목을 줄임): auto(CUDA에서 점검 후 켬) | on | off | liger(Liger 층 커널을 컴파일 안에 둠)",
        "auto", ("auto", "on", "off", "liger"))
    fp8_backward: str = _help(
        "고속 경로: 고정된 4비트 가중치를 지나는 입력 그래디언트(dx = dy W)를 FP8 텐서 코어로 (순전파와 loss는 그대로, "
        "그래디언트는 FP8 반올림만큼 다름; Ada·Hopper GPU, bf16, 가중치 FP8 사본 +1바이트/파라미터): off | on",
        "off", ("off", "on"))
    lora_dropout_masks: str = _help(
        "고속 경로, 컴파일된 층에서 LoRA dropout 마스크: hash(값의 위치·모듈 키·스텝 카운터의 정수 해시; Philox 난수보다 "
        "싸고 분포는 같으며 난수열만 다름) | peft(peft의 nn.Dropout, Philox)",
        "hash", ("hash", "peft"))
    seed: int = _help("학습 난수 시드", 42)


EVAL_SETTINGS = ("golden_only", "golden_distractors", "rag_topk")


@dataclass
class EvalSettings(_Section):
    settings: list = _help("평가 설정: golden_only | golden_distractors | rag_topk (RAFT 논문의 세 가지)",
                           list(EVAL_SETTINGS))
    num_examples: int = _help("평가할 테스트 예제 수 (0이면 전부)", 0)
    max_new_tokens: int = _help("생성 최대 토큰 수", 256)
    batch_size: int = _help("배치 생성 크기 (왼쪽 패딩)", 16)
    rag_k: int = _help("RAG top-k: BM25로 검색할 문서 수", 4)
    embedding_model: str = _help(
        "코사인 유사도용 문장 임베딩 모델. auto면 허브 접속 시 다국어 모델, 오프라인이면 패키지된 영어 모델; "
        "none이면 코사인을 건너뜀", "auto")


SECTIONS = ("model", "data", "lora", "train", "eval")
SECTION_OF = {"ModelSettings": "model", "DataSettings": "data", "LoraSettings": "lora", "TrainSettings": "train",
              "EvalSettings": "eval"}


@dataclass
class WorkshopConfig:
    size: str = _help("실행 규모: full(시드 그대로, 워크숍 뒤) | workshop(GPU 실습) | smoke(CPU make run) | "
                      "tiny(CI 노트북)", "full", SIZES)
    build_dir: str = _help("산출물 폴더", "build")
    data_dir: str = _help("준비된 데이터 폴더 (workshop prepare의 출력). 비우면 <build_dir>/data: 원본(data.raw_paths)에서 "
                          "만들고, 설정이 바뀌면 다시 만듦. 폴더를 주면 그 데이터를 그대로 씀 (다시 만들지 않음)", "")
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    # where each value that is not the dataclass default came from ("section.field" -> source)
    sources: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("sources")
        return d

    def validate(self) -> "WorkshopConfig":
        """Check every option value; raises ConfigError (Korean) naming the setting and the allowed values."""
        _check_choices(self, "")
        for name in SECTIONS:
            _check_choices(getattr(self, name), name + ".")
        d, t = self.data, self.train
        _check(0 <= d.oracle_fraction <= 1, "data.oracle_fraction", d.oracle_fraction, "0~1 사이의 비율")
        _check(0 <= d.hard_distractor_fraction <= 1, "data.hard_distractor_fraction", d.hard_distractor_fraction,
               "0~1 사이의 비율")
        _check(d.num_distractors >= 0, "data.num_distractors", d.num_distractors, "0 이상의 정수")
        _check(0 <= d.validation_fraction and 0 <= d.test_fraction and d.validation_fraction + d.test_fraction < 1,
               "data.validation_fraction + data.test_fraction", (d.validation_fraction, d.test_fraction),
               "합이 1보다 작은 0 이상의 비율")
        _check(self.lora.r > 0, "lora.r", self.lora.r, "1 이상의 정수")
        _check(self.model.max_seq_length >= 64, "model.max_seq_length", self.model.max_seq_length, "64 이상")
        _check(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "0보다 큰 값")
        gc = str(t.gradient_checkpointing).lower()
        _check(gc in ("auto", "on", "off", "true", "false") or gc.isdigit(), "train.gradient_checkpointing",
               t.gradient_checkpointing, "auto, on, off 또는 층 수(정수)")
        bad = [s for s in self.eval.settings if s not in EVAL_SETTINGS]
        _check(not bad, "eval.settings", bad, ", ".join(EVAL_SETTINGS) + " 중에서")
        bad = [r for r in t.report_to if r not in ("tensorboard", "wandb", "trackio", "none")]
        _check(not bad, "train.report_to", bad, "tensorboard, wandb, trackio, none 중에서")
        return self

    @property
    def build_path(self) -> Path:
        p = Path(self.build_dir).expanduser()
        return p if p.is_absolute() else project_root() / p

    @property
    def runs_dir(self) -> Path:
        """The folder of this configuration's runs (<build_dir>/<train.output_dir>): one sub-folder per run."""
        p = Path(self.train.output_dir).expanduser()
        return p if p.is_absolute() else self.build_path / p


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"설정 값이 잘못되었습니다 (invalid setting): {name}={value!r} (허용: {allowed})")


def _check_choices(section: Any, prefix: str) -> None:
    for f in dataclasses.fields(section):
        choices = f.metadata.get("choices")
        if choices and getattr(section, f.name) not in choices:
            _check(False, prefix + f.name, getattr(section, f.name), ", ".join(map(str, choices)))


# Sizes: what changes from the seed's GPU defaults so a run fits the machine and the time. Each entry
# names (section, field) -> value. The reasons are printed by `size_changes`.
SIZE_PRESETS: dict[str, dict[tuple[str, str], Any]] = {
    "full": {},
    # a live session on one GPU (T4 16 GB to H200): the notebooks' cells each finish in minutes
    # (docs/instructor.md has the measured times and the T4 estimate)
    "workshop": {
        ("data", "num_distractors"): 2,
        ("data", "max_context_len"): 600,
        # no RAFT example cut: EXAONE's tokenizer needs 1,062 tokens on average (p90 1,420), the offline model's
        # 2,919 (p99 3,640, max 3,918: 765 of 766 were cut at 1,536 on the H200). Padding-free batches and the
        # memory plan follow the real lengths, so the limit itself costs nothing.
        ("model", "max_seq_length"): 4096,
        ("train", "max_steps"): 40,
        ("train", "warmup_steps"): 0.1,
        ("train", "logging_steps"): 2,
        ("train", "eval_steps"): 10,
        ("train", "save_steps"): 10,
        ("train", "eval_max_examples"): 32,
        ("train", "early_stopping_patience"): 2,
        ("train", "output_dir"): "runs/workshop-qlora",
        ("eval", "num_examples"): 24,
        ("eval", "max_new_tokens"): 128,
    },
    "smoke": {
        ("data", "num_distractors"): 1,
        ("data", "max_context_len"): 100,
        ("data", "add_cot"): False,
        ("data", "oracle_fraction"): 1.0,
        ("model", "max_seq_length"): 1024,
        ("train", "max_steps"): 36,
        ("train", "per_device_train_batch_size"): 1,
        ("train", "per_device_eval_batch_size"): 2,
        ("train", "gradient_accumulation_steps"): 1,
        ("train", "learning_rate"): 1e-3,
        ("train", "warmup_steps"): 2,
        ("train", "logging_steps"): 2,
        ("train", "eval_steps"): 18,
        ("train", "save_steps"): 18,
        ("train", "eval_max_examples"): 6,
        ("train", "output_dir"): "runs/smoke-qlora",
        ("eval", "num_examples"): 8,
        ("eval", "max_new_tokens"): 64,
        ("eval", "batch_size"): 8,
        ("eval", "rag_k"): 2,
    },
    "tiny": {
        ("data", "num_distractors"): 1,
        ("data", "max_context_len"): 80,
        ("data", "add_cot"): False,
        ("data", "oracle_fraction"): 1.0,
        ("model", "max_seq_length"): 1024,
        ("train", "max_steps"): 4,
        ("train", "per_device_train_batch_size"): 1,
        ("train", "per_device_eval_batch_size"): 2,
        ("train", "gradient_accumulation_steps"): 1,
        ("train", "learning_rate"): 1e-3,
        ("train", "warmup_steps"): 1,
        ("train", "logging_steps"): 1,
        ("train", "eval_steps"): 2,
        ("train", "save_steps"): 2,
        ("train", "eval_max_examples"): 1,
        ("train", "output_dir"): "runs/tiny-qlora",
        ("eval", "num_examples"): 2,
        ("eval", "max_new_tokens"): 24,
        ("eval", "batch_size"): 4,
        ("eval", "rag_k"): 2,
    },
}


# Why each size change is needed (2 CPU cores for smoke/tiny; SmolLM2's byte-level tokenizer spends ~2
# tokens per Hangul character, so one RAFT example with 5 full documents would be ~4,500 tokens; a live
# GPU session has minutes per notebook).
SIZE_REASONS = {
    "smoke": {
        "num_distractors": "문서 5개면 예제당 약 4,500 토큰: CPU에서는 골든 + 방해 1개",
        "max_context_len": "문서를 근거 문장 중심으로 100자 안팎으로 줄임",
        "add_cot": "CoT 목표는 답변의 약 3.5배 길이: CPU 시간 절약",
        "oracle_fraction": "36 스텝에서는 늘 같은 '답 없음' 문장이 가장 먼저 학습되어 다른 답을 밀어냄: P=1.0",
        "max_seq_length": "줄인 문맥이 잘리지 않는 길이",
        "max_steps": "2코어 CPU에서 몇 분 안에 끝나는 스텝 수",
        "learning_rate": "스텝이 적어 더 큰 학습률",
    },
    "workshop": {
        "num_distractors": "골든 + 방해 2개: RAFT 형식은 그대로, 예제 길이는 절반쯤 (T4에서 시간 절약)",
        "max_context_len": "문서를 근거 문장 중심으로 600자 안팎으로",
        "max_seq_length": "줄인 문맥이 잘리지 않는 길이",
        "max_steps": "실습 시간 안에 끝나는 스텝 수 (유효 배치 16 x 40 = 640 예제, 학습 세트의 약 0.8 epoch)",
        "warmup_steps": "웜업은 전체의 10% (100 스텝 고정은 짧은 학습의 대부분을 차지)",
        "logging_steps": "학습 곡선에 점이 20개쯤",
        "eval_steps": "검증 loss를 4번 (학습 곡선과 early stopping에 필요)",
        "save_steps": "체크포인트도 4번 (이어서 학습 실습, best model 복원)",
        "eval_max_examples": "학습 중 검증은 32개로 (검증 한 번에 수십 초)",
        "early_stopping_patience": "검증 loss가 2번 연속 나빠지면 멈춤",
        "output_dir": "실행 폴더를 크기별로 나눔 (runs/workshop-qlora/<시각>-<식별값>)",
        "num_examples": "평가 질문 24개 (주제별 균형) x 설정 3개 x 모델 2개",
        "max_new_tokens": "CoT 답변이 들어가는 길이로 제한 (생성 시간)",
    },
}
SIZE_REASONS["tiny"] = {**SIZE_REASONS["smoke"], "max_steps": "CI: 노트북마다 몇 초 안에 끝나는 스텝 수",
                        "eval_max_examples": "CI: 학습 중 검증은 1개로 (2코어 CPU에서 검증 한 번에 약 4초)",
                        "num_examples": "CI: 평가 질문 2개 (주제가 다른) x 설정 x 모델 2개 (생성이 CPU 시간의 대부분)"}


# --- the environment (read here and nowhere else) ----------------------------------------------------
ENV_SETTINGS = {
    "WORKSHOP_MODEL": "model.model_id",
    "WORKSHOP_BUILD_DIR": "build_dir",
    "WORKSHOP_MAX_STEPS": "train.max_steps",
    "WORKSHOP_EMBEDDING": "eval.embedding_model",
    "WORKSHOP_CACHE": "model.cache_dir",
    "WORKSHOP_TOKENIZER": "model.tokenizer",
    "WORKSHOP_GPU_MODE": "train.memory_mode",
    "WORKSHOP_MEMORY_BUDGET_GIB": "train.memory_budget_gib",
}
KO_TOKENIZERS = ("mecab", "whitespace")


def environment() -> dict[str, str]:
    """Every WORKSHOP_* variable that is set (WORKSHOP_SIZE, the settings above, WORKSHOP_KO_TOKENIZER)."""
    return {k: v for k, v in os.environ.items() if k.startswith("WORKSHOP_") and v != ""}


def ko_tokenizer_mode() -> str:
    """'mecab' (default) or 'whitespace' (WORKSHOP_KO_TOKENIZER=whitespace, e.g. on a machine where the 106 MB
    mecab-ko dictionary cannot be installed; metrics are then NOT comparable to mecab ones)."""
    mode = environment().get("WORKSHOP_KO_TOKENIZER", "mecab")
    _check(mode in KO_TOKENIZERS, "WORKSHOP_KO_TOKENIZER", mode, ", ".join(KO_TOKENIZERS))
    return mode


def solutions_mode() -> bool:
    """WORKSHOP_SOLUTIONS=1: each exercise check in the notebooks fills a blank left by the participant with the
    answer key (and prints that it did) and stops the notebook on a wrong answer. CI and `make reference` set it,
    so every exercise is proven solvable; a participant's run leaves blanks blank (the check only says so)."""
    value = environment().get("WORKSHOP_SOLUTIONS", "0").strip().lower()
    _check(value in ("0", "1", "true", "false", "yes", "no", "on", "off"), "WORKSHOP_SOLUTIONS", value, "1 또는 0")
    return value in ("1", "true", "yes", "on")


def default_cache_dir() -> str:
    """WORKSHOP_CACHE, else '' (= runtime.paths' default under the home folder)."""
    return environment().get("WORKSHOP_CACHE", "")


# --- building a config -------------------------------------------------------------------------------------
def apply_size(cfg: WorkshopConfig, size: str, source: str | None = None) -> WorkshopConfig:
    """Return a copy of `cfg` with the size preset applied (full = the seed's GPU values)."""
    _check(size in SIZES, "size", size, ", ".join(SIZES))
    cfg = dataclasses.replace(cfg, size=size, sources=dict(cfg.sources),
                              **{s: dataclasses.replace(getattr(cfg, s)) for s in SECTIONS})
    for (section, name), value in SIZE_PRESETS[size].items():
        setattr(getattr(cfg, section), name, value)
        cfg.sources[f"{section}.{name}"] = source or f"크기 {size} (size preset)"
    return cfg


def default_size() -> str:
    """'workshop' on a CUDA GPU (a live session), 'smoke' without one (make run on a CPU)."""
    from .runtime.device import has_cuda  # torch: keep `workshop --help` and config files torch-free

    return "workshop" if has_cuda() else "smoke"


def load_config(size: str | None = None, config_file: str | os.PathLike | None = None,
                overrides: dict | None = None, source: str = "인자 (argument)", **kw: Any) -> WorkshopConfig:
    """Build the config: default < size preset < environment < config file < explicit overrides.

    `overrides` (and keyword arguments) use dotted names, ``load_config(**{"train.max_steps": 10})``, or
    section dicts, ``load_config(train={"max_steps": 10})``; strings are converted to the field's type.
    `source` names where the overrides came from (the CLI passes "명령줄 (CLI)").
    """
    env = environment()
    explicit = _flatten({**(overrides or {}), **kw})
    if size is not None:
        explicit["size"] = size
    file_label = f"설정 파일 {config_file}" if config_file else ""
    from_file = read_config_file(config_file) if config_file else {}
    layers = [{ENV_SETTINGS[k]: (v, f"환경변수 {k}") for k, v in env.items() if k in ENV_SETTINGS},
              {k: (v, file_label) for k, v in from_file.items()},
              {k: (v, source) for k, v in explicit.items()}]
    # the size is decided like any value; its preset is then the layer just above the defaults
    sizes = [(explicit.get("size"), source), (from_file.get("size"), file_label),
             (env.get("WORKSHOP_SIZE"), "환경변수 WORKSHOP_SIZE")]
    chosen, size_source = next(((v, label) for v, label in sizes if v is not None), (None, ""))
    if chosen is None:
        chosen, size_source = default_size(), "자동 (CUDA GPU 여부, auto)"
    cfg = apply_size(WorkshopConfig(), str(chosen))
    cfg.sources["size"] = size_source
    if shared_checkout():  # one checkout for a class: each person's outputs under their own home
        cfg.build_dir = str(personal_dir() / "build")
        cfg.sources["build_dir"] = "공유 체크아웃: 홈 아래 (shared checkout)"
    for layer in layers:
        for dotted, (value, label) in layer.items():
            if dotted != "size":
                set_value(cfg, dotted, value, label, validate=False)
    return cfg.validate()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        k = k.replace("__", ".")
        if isinstance(v, dict) and (prefix + k) in SECTIONS:
            out.update(_flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def _field(cfg: WorkshopConfig, dotted: str) -> tuple[Any, dataclasses.Field]:
    parts = dotted.split(".")
    obj: Any = cfg
    for p in parts[:-1]:
        if p not in SECTIONS or not hasattr(obj, p):
            raise ConfigError(f"알 수 없는 설정 '{dotted}' (unknown setting): 섹션은 {', '.join(SECTIONS)}")
        obj = getattr(obj, p)
    fields = {f.name: f for f in dataclasses.fields(obj) if f.name != "sources"}
    if parts[-1] not in fields or dataclasses.is_dataclass(getattr(obj, parts[-1])):
        hint = ", ".join(sorted(fields)) if len(parts) > 1 else "size, build_dir, data_dir 또는 섹션.이름"
        raise ConfigError(f"알 수 없는 설정 '{dotted}' (unknown setting). 가능한 이름: {hint}")
    return obj, fields[parts[-1]]


def coerce(f: dataclasses.Field, value: Any, name: str) -> Any:
    """A value from the environment, a flag or a YAML file, converted to the field's type."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    if name == "eval.embedding_model" and (value is None or str(value).lower() == "none"):
        return None
    if name == "train.gradient_checkpointing":
        return str(value).lower() if isinstance(value, (str, bool)) else str(int(value))
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "list":
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return list(value)
        return str(value)
    except (TypeError, ValueError):
        want = {"bool": "true/false", "int": "정수", "float": "실수", "list": "쉼표로 구분한 목록"}.get(kind, kind)
        raise ConfigError(f"설정 값이 잘못되었습니다 (invalid setting): {name}={value!r} ({want}여야 합니다)") from None


def set_value(cfg: WorkshopConfig, dotted: str, value: Any, source: str = "인자 (argument)",
              validate: bool = True) -> None:
    """Set one setting by its dotted name (type-converted), record its source, and check it."""
    obj, f = _field(cfg, dotted)
    try:
        setattr(obj, f.name, coerce(f, value, dotted))
    except ConfigError as err:
        raise ConfigError(f"{err} [출처: {source}]") from None
    cfg.sources[dotted] = source
    if validate:
        cfg.validate()


# --- files ------------------------------------------------------------------------------------------------
def read_config_file(path: str | os.PathLike) -> dict:
    """A YAML (or JSON) file of settings as dotted names; unknown names fail with the file named."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"설정 파일이 없습니다 (config file not found): {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" {mark.line + 1}번째 줄" if mark else ""
        raise ConfigError(f"설정 파일을 읽을 수 없습니다 (invalid YAML): {p}{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"설정 파일 {p}: 맨 위가 '이름: 값' 목록(mapping)이어야 합니다")
    flat = _flatten(data)
    probe = WorkshopConfig()
    for dotted in flat:
        try:
            _field(probe, dotted)
        except ConfigError as err:
            raise ConfigError(f"설정 파일 {p}: {err}") from None
    return flat


def config_yaml(cfg: WorkshopConfig) -> str:
    """Every setting of `cfg` as YAML (what `read_config_file` reads back)."""
    import yaml

    return yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False)


def save_config(cfg: WorkshopConfig, path: str | os.PathLike, note: str = "") -> Path:
    """Write the resolved settings as YAML; `workshop run --config <file>` repeats the run."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    head = ["# QLoRA/RAFT 워크숍: 이 실행의 전체 설정 (resolved config)",
            f"# 같은 설정으로 다시 실행: workshop run --config {p.name}"] + ([f"# {note}"] if note else [])
    p.write_text("\n".join(head) + "\n" + config_yaml(cfg), encoding="utf-8")
    return p


# --- showing a config -----------------------------------------------------------------------------------
def describe(section: Any) -> "list[dict]":
    """Rows (field, value, default, help) of one settings dataclass, for a table in a notebook."""
    rows = []
    for f in dataclasses.fields(section):
        if dataclasses.is_dataclass(getattr(section, f.name)) or f.name == "sources":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append({"파라미터": f.name, "값": getattr(section, f.name), "기본값(GPU)": default,
                     "설명": f.metadata.get("help", "")})
    return rows


def size_changes(cfg: WorkshopConfig) -> "list[dict]":
    """What the active size changed relative to the seed's GPU defaults."""
    full = WorkshopConfig()
    reasons = SIZE_REASONS.get(cfg.size, {})
    return [{"설정": f"{s}.{n}", "GPU 기본값": getattr(getattr(full, s), n), f"{cfg.size} 값": v,
             "이유": reasons.get(n, "")}
            for (s, n), v in SIZE_PRESETS[cfg.size].items()]


def changed_settings(cfg: WorkshopConfig) -> list[tuple[str, Any, str]]:
    """(name, value, where it came from) of every setting that differs from the dataclass default."""
    default = WorkshopConfig()
    out = []
    for name in ("size", "build_dir", "data_dir"):
        if getattr(cfg, name) != getattr(default, name) or name in cfg.sources:
            out.append((name, getattr(cfg, name), cfg.sources.get(name, "")))
    for s in SECTIONS:
        for f in dataclasses.fields(getattr(cfg, s)):
            value = getattr(getattr(cfg, s), f.name)
            if value != getattr(getattr(default, s), f.name):
                out.append((f"{s}.{f.name}", value, cfg.sources.get(f"{s}.{f.name}", "코드에서 변경 (set in code)")))
    return out
