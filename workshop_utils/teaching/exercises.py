"""Exercises (실습 과제) of every notebook: the self-checks and the answer key.

A notebook's exercise is a cell with a blank (`...`) that the participant fills, followed by a check cell
`exercises.check("01-1", answer)` that says in Korean whether the answer works and why. `exercises.hint(id)` gives a hint,
`exercises.solution(id)` reveals the answer key. The main line of a notebook never reads an exercise's answer, so a
notebook runs from top to bottom with the blanks still blank (the check then only says that it is blank).

CI and `make reference` run the notebooks with WORKSHOP_SOLUTIONS=1 (`config.solutions_mode`): a check that
finds its blank unfilled checks the answer key instead, prints that it did (and the key's code), and a failing
check stops the notebook. So every exercise is proven solvable in its notebook; tests/test_exercises.py proves
that each check passes on the key and fails, with a Korean message, on a typical wrong answer.
"""
from __future__ import annotations

import math
import re
import textwrap
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..config import solutions_mode
from ..data.io import RawRecord
from ..data.quality.pii import PII_PATTERNS
from ..data.schema import validate
from ..data.text import char_ngrams
from ..model.shape import EXAONE_7_8B
from ..runtime.errors import WorkshopError

# The checks of notebooks 03, 05 and A1 need torch/transformers (TrainingArguments, the device); they import them
# when they run, so notebooks 00.01-02 (which import this module) do not pay torch's start-up (about 8 s on 2 cores).


class ExerciseFailed(AssertionError):
    """A check failed while WORKSHOP_SOLUTIONS=1 (CI, `make reference`): the answer key or the check is wrong."""


@dataclass
class Feedback:
    """What a check found: `problems` (empty = the answer works) and `notes` shown either way."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blank: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and not self.blank


@dataclass(frozen=True)
class Exercise:
    id: str
    notebook: str
    title: str
    check: Callable[..., Feedback]
    solution: Any  # the answer key: a value, or a function of the check's context (keyword arguments); an
    # exercise whose answer is a function gives `lambda: the_function`
    solution_code: str  # what `solution()` shows
    explanation: str  # why the answer is right (printed when the check passes and with the solution)
    hint: str
    wrong: Any  # a typical wrong answer (value or function of the context), for the tests
    probe: tuple = ()  # arguments to call a function answer with, to see whether its body is still `...`
    template: Any = None  # an answer that counts as "not done yet" besides `...` (a pre-filled seed value)

    def key(self, **context) -> Any:
        return self.solution(**context) if callable(self.solution) else self.solution

    def typical_wrong(self, **context) -> Any:
        return self.wrong(**context) if callable(self.wrong) else self.wrong


EXERCISES: dict[str, Exercise] = {}


def _exercise(id: str, notebook: str, title: str, *, solution: Any, solution_code: str, explanation: str,
              hint: str, wrong: Any, probe: tuple = (), template: Any = None):
    def register(check: Callable[..., Feedback]) -> Callable[..., Feedback]:
        EXERCISES[id] = Exercise(id, notebook, title, check, solution, textwrap.dedent(solution_code).strip(),
                                 explanation, hint, wrong, probe, template)
        return check
    return register


def _get(exercise_id: str) -> Exercise:
    if exercise_id not in EXERCISES:
        raise WorkshopError(f"실습 과제 '{exercise_id}'가 없습니다 (unknown exercise). 있는 과제: {', '.join(EXERCISES)}")
    return EXERCISES[exercise_id]


def is_blank(exercise: Exercise, answer: Any) -> bool:
    """Still `...` (also inside a dict/list, or a function whose body returns `...`), or the untouched template."""
    if answer is Ellipsis:
        return True
    if isinstance(answer, dict):
        if any(v is Ellipsis for v in answer.values()):
            return True
    elif isinstance(answer, (list, tuple, set)) and any(v is Ellipsis for v in answer):
        return True
    if exercise.template is not None and _same_as_template(answer, exercise.template):
        return True
    if callable(answer) and exercise.probe:
        try:
            return answer(*exercise.probe) is Ellipsis
        except Exception:  # a broken function is not a blank: the check reports it
            return False
    return False


def _same_as_template(answer: Any, template: Any) -> bool:
    if isinstance(template, dict) and isinstance(answer, dict):
        keys = set(template) - {"output_dir"}
        return set(answer) - {"output_dir"} == keys and all(answer[k] == template[k] for k in keys)
    return answer == template


def evaluate(exercise_id: str, answer: Any, **context) -> Feedback:
    """Check an answer (no printing): a blank answer gives Feedback(blank=True)."""
    ex = _get(exercise_id)
    if is_blank(ex, answer):
        return Feedback(blank=True)
    try:
        return ex.check(answer, **context)
    except Exception as err:  # the participant's code raised inside the check
        return Feedback([f"답을 확인하는 중 오류가 났습니다: {type(err).__name__}: {err}"])


def check(exercise_id: str, answer: Any, **context) -> None:
    """The check cell: prints in Korean whether the answer works (and why not).

    With WORKSHOP_SOLUTIONS=1 a blank is replaced by the answer key (printed), and a failure raises ExerciseFailed.
    """
    ex = _get(exercise_id)
    head = f"[실습 {ex.id} {ex.title}]"
    solutions = solutions_mode()
    if solutions and is_blank(ex, answer):
        answer = ex.key(**context)
        print(f"{head} 해답 모드 (WORKSHOP_SOLUTIONS=1): 빈칸 대신 해답으로 확인합니다")
        print(textwrap.indent(ex.solution_code, "    "))
    fb = evaluate(exercise_id, answer, **context)
    for note in fb.notes:
        print(note)
    if fb.blank:
        print(f"{head} 아직 빈칸(...)입니다: 위 과제 셀을 채워 실행한 뒤 이 셀을 다시 실행하세요. "
              f'힌트: exercises.hint("{ex.id}"), 해답: exercises.solution("{ex.id}")')
    elif fb.ok:
        print(f"{head} ✓ 통과: {ex.explanation}")
    else:
        print(f"{head} ✗ 다시 해 보세요:")
        for p in fb.problems:
            print(f"  - {p}")
        print(f'  힌트: exercises.hint("{ex.id}"), 해답: exercises.solution("{ex.id}")')
        if solutions:
            raise ExerciseFailed(f"실습 {ex.id}: 해답 모드에서 확인 실패: " + " / ".join(fb.problems))


def hint(exercise_id: str) -> None:
    ex = _get(exercise_id)
    print(f"[실습 {ex.id} 힌트] {ex.hint}")


def solution(exercise_id: str) -> None:
    """Reveal the answer key (code) and why it is right."""
    ex = _get(exercise_id)
    print(f"[실습 {ex.id} {ex.title}: 해답]")
    print(textwrap.indent(ex.solution_code, "    "))
    print(f"왜: {ex.explanation}")


def overview(notebook: str | None = None) -> "list[dict]":
    """The exercises (of one notebook, by its number such as '01'), for a table."""
    return [{"과제": e.id, "노트북": e.notebook, "제목": e.title} for e in EXERCISES.values()
            if notebook is None or e.id.rsplit("-", 1)[0] == notebook]


def _number(answer: Any, what: str) -> tuple[float | None, list[str]]:
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return None, [f"{what}: 숫자를 넣으세요 (지금 값: {answer!r})"]
    return float(answer), []


def _choices(answer: Any, cases: dict[str, tuple[str, str]], options: tuple[str, ...], ask: str,
             wrong: Callable[[str, str, str, str], str]) -> Feedback:
    """A {case: choice} answer: every case present, every choice one of `options` (any case), each the wanted one
    (`cases`: case -> (wanted, why); `wrong(case, got, wanted, why)` words a wrong choice)."""
    if not isinstance(answer, dict):
        return Feedback([ask])
    canon = {o.lower(): o for o in options}
    problems = []
    for case, (want, why) in cases.items():
        got = canon.get(str(answer.get(case, "")).strip().lower())
        if case not in answer:
            problems.append(f"'{case}' 항목이 없습니다 (키 이름을 바꾸지 마세요)")
        elif got is None:
            problems.append(f"{case}: {answer[case]!r}는 보기({', '.join(options)})에 없습니다")
        elif got != want:
            problems.append(wrong(case, got, want, why))
    return Feedback(problems)


# --- 00.01 prerequisites -----------------------------------------------------------------------------------
DTYPE_DEVICES = {
    "A100 (bf16 지원 GPU)": ("bfloat16", "bf16은 fp32와 지수 범위가 같아 loss scaling 없이 안정적이고 메모리는 절반입니다"),
    "T4 (Colab 무료 GPU)": ("float16", "T4에는 bf16 연산 장치가 없어 시드의 bfloat16 고정은 느리거나 실패합니다: "
                                       "fp16 + loss scaling"),
    "CPU (AVX512-BF16 없음)": ("float32", "bf16 명령어가 없는 CPU에서 bf16은 에뮬레이션되어 약 15배 느립니다: fp32"),
}
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


def _dtype_name(value: Any) -> str:
    name = str(value).replace("torch.", "").strip().lower()
    return _DTYPE_ALIASES.get(name, name)


@_exercise("00.01-1", "prerequisites/00.01-prerequisites.ipynb", "장치별 연산 dtype 고르기",
           solution={d: want for d, (want, _) in DTYPE_DEVICES.items()},
           solution_code="""
               my_dtypes = {
                   "A100 (bf16 지원 GPU)": "bfloat16",
                   "T4 (Colab 무료 GPU)": "float16",
                   "CPU (AVX512-BF16 없음)": "float32",
               }""",
           explanation="choose_device()와 같은 규칙입니다: bf16을 계산하는 장치는 bf16, bf16이 없는 GPU는 fp16 + "
                       "loss scaling, bf16이 에뮬레이션되는 CPU는 fp32.",
           hint="위 3절의 목록을 다시 읽어 보세요. 슬라이드의 bfloat16 고정이 어디서 문제가 되나요?",
           wrong={d: "bfloat16" for d in DTYPE_DEVICES})
def _check_dtypes(answer: Any) -> Feedback:
    if not isinstance(answer, dict):
        return Feedback(["{장치: dtype 이름} 사전(dict)으로 답하세요"])
    problems = []
    for device, (want, why) in DTYPE_DEVICES.items():
        if device not in answer:
            problems.append(f"'{device}' 항목이 없습니다 (셀의 키 이름을 바꾸지 마세요)")
            continue
        got = _dtype_name(answer[device])
        if got not in ("bfloat16", "float16", "float32"):
            problems.append(f"{device}: {answer[device]!r}는 dtype 이름이 아닙니다 ('bfloat16', 'float16', 'float32' 중 하나)")
        elif got != want:
            problems.append(f"{device}: {got}가 아닙니다. {why}")
    return Feedback(problems)


# --- 00 concepts -------------------------------------------------------------------------------------------
_D, _K, _R = EXAONE_7_8B.hidden, EXAONE_7_8B.intermediate, 16


@_exercise("00-1", "main-practice/00-concepts.ipynb", "LoRA 파라미터 수 세기",
           solution=_R * (_D + _K),
           solution_code=f"n_lora_up_proj = {_R} * ({_D} + {_K})   # r(d + k): B는 d×r, A는 r×k",
           explanation=f"B(d×r)와 A(r×k)를 합쳐 r(d+k) = {_R * (_D + _K):,}개로, 같은 행렬을 전부 학습하는 "
                       f"d×k = {_D * _K:,}개의 {_R * (_D + _K) / (_D * _K):.2%}입니다.",
           hint="ΔW = BA에서 B와 A의 모양(shape)을 적고, 두 행렬의 원소 수를 더하세요.",
           wrong=_R * _D * _K)
def _check_lora_count(answer: Any) -> Feedback:
    value, problems = _number(answer, "n_lora_up_proj")
    if problems:
        return Feedback(problems)
    want = _R * (_D + _K)
    if value == want:
        return Feedback()
    known = {_D * _K: "d×k는 전체 파인튜닝이 학습하는 수입니다 (ΔW 전체)",
             _R * _D * _K: "r·d·k가 아니라 r(d+k)입니다: 두 행렬의 원소 수를 곱하지 않고 더합니다",
             _R * _D: "B(d×r)만 셌습니다: A(r×k)도 학습합니다",
             _R * _K: "A(r×k)만 셌습니다: B(d×r)도 학습합니다"}
    return Feedback([known.get(int(value), f"{int(value):,}가 아닙니다: B는 d×r, A는 r×k (d={_D}, k={_K}, r={_R})")])


@_exercise("00-2", "main-practice/00-concepts.ipynb", "r을 키울 때 lora_alpha 정하기",
           solution=128, solution_code="lora_alpha_for_r64 = 2 * 64   # 배율 alpha/r = 128/64 = 2 (지금과 같음)",
           explanation="LoRA의 실제 배율은 lora_alpha / r입니다. r=16, alpha=32의 배율 2를 지키려면 r=64에서 alpha=128 "
                       "('alpha = 2r' 규칙). 그래야 r만 바꾼 비교가 됩니다.",
           hint="지금 설정(r=16, lora_alpha=32)의 배율 alpha/r부터 계산해 보세요.",
           wrong=32)
def _check_alpha(answer: Any) -> Feedback:
    value, problems = _number(answer, "lora_alpha_for_r64")
    if problems:
        return Feedback(problems)
    if value == 128:
        return Feedback()
    return Feedback([f"lora_alpha={value:g}이면 배율은 {value:g}/64 = {value / 64:g}로, 지금 배율 2의 {value / 128:g}배입니다"
                     + (": alpha를 고정한 채 r만 키우면 업데이트가 작아져 학습률을 다시 맞춰야 합니다" if value < 128 else "")])


@_exercise("00-3", "main-practice/00-concepts.ipynb", "모든 Linear 층에 LoRA 붙이기",
           solution=list(EXAONE_7_8B.module_dims()),
           solution_code=f"all_linear_targets = {list(EXAONE_7_8B.module_dims())}",
           explanation="어텐션의 q/k/v/o와 MLP의 gate/up/down이 층마다 있는 Linear 7개입니다 (QLoRA 논문이 권한 구성). "
                       "임베딩과 lm_head는 어휘 층이라 보통 대상이 아닙니다.",
           hint="EXAONE_7_8B.module_dims()가 층 하나의 Linear 이름과 모양을 돌려줍니다.",
           wrong=["q_proj", "v_proj"])
def _check_targets(answer: Any) -> Feedback:
    if not isinstance(answer, (list, tuple, set)) or not all(isinstance(t, str) for t in answer):
        return Feedback(["모듈 이름(문자열)의 리스트로 답하세요, 예: ['q_proj', ...]"])
    dims = EXAONE_7_8B.module_dims()
    got = set(answer)
    problems = []
    missing = [t for t in dims if t not in got]
    if missing:
        problems.append(f"빠진 층: {', '.join(missing)}")
    for t in sorted(got - set(dims)):
        problems.append(f"'{t}'는 " + ("어휘 층(임베딩/출력)으로 LoRA 대상이 아닙니다" if t in ("lm_head", "embed_tokens")
                                      else "EXAONE(Llama 구조) 층 하나의 Linear 이름이 아닙니다"))
    n = EXAONE_7_8B.lora_params(16, [t for t in got if t in dims])
    notes = [f"r=16이면 학습 파라미터 {n:,}개 = 전체의 {n / EXAONE_7_8B.total_params():.2%}"] if not problems else []
    return Feedback(problems, notes)


# --- 01 preprocessing --------------------------------------------------------------------------------------
CLEAN_CASES = [
    (unicodedata.normalize("NFD", "연차휴가는 며칠인가요?"), "연차휴가는 며칠인가요?", "NFD 한글 (자모로 쪼개 저장된 글자)"),
    ("연차는   며칠\t까지\n이월되나요?", "연차는 며칠 까지 이월되나요?", "연속 공백·탭·줄바꿈"),
    ("  법인카드 한도는?  ", "법인카드 한도는?", "앞뒤 공백"),
    ("점심\u3000식대는?", "점심 식대는?", "전각 공백 (U+3000)"),
]


def _clean_text_key(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def _call_cases(fn: Any, cases: list[tuple], name: str) -> list[str]:
    if not callable(fn):
        return [f"{name}는 함수여야 합니다 (def {name}(...): ...)"]
    problems = []
    for args, want, label in cases:
        try:
            got = fn(*args)
        except Exception as err:
            problems.append(f"{label}: {name}{args!r}가 오류를 냈습니다: {type(err).__name__}: {err}")
            continue
        if got != want:
            problems.append(f"{label}: {name}(...)의 결과 {got!r} (기대: {want!r})")
    return problems


@_exercise("01-1", "main-practice/01_data_preprocessing_and_validation.ipynb", "전처리 함수 채우기",
           solution=lambda: _clean_text_key,
           solution_code="""
               def clean_text(text: str) -> str:
                   text = unicodedata.normalize("NFC", text)   # 자모로 쪼개진 한글을 음절로
                   return " ".join(text.split())                # 공백·탭·줄바꿈·전각 공백 묶음을 공백 하나로, 앞뒤 제거""",
           explanation="NFC로 합친 뒤 공백을 정리하면 화면에서 같은 문장이 실제로도 같은 문자열이 됩니다 (중복 검사·검색이 "
                       "맞게 동작). 라이브러리의 normalize_text는 여기에 HTML 엔티티·제어 문자·전각 문자까지 처리합니다.",
           hint="unicodedata.normalize('NFC', text)로 합치고, str.split()(인자 없이)은 모든 종류의 공백에서 나눕니다.",
           wrong=lambda: str.strip, probe=("테스트",))
def _check_clean_text(answer: Any) -> Feedback:
    return Feedback(_call_cases(answer, [((raw,), want, label) for raw, want, label in CLEAN_CASES], "clean_text"))


_NFD_2048 = unicodedata.normalize("NFD", "가" * 2048)
LENGTH_CASES = [
    (("가나다라마",), True, "정확히 5자 (min_length와 같음)"),
    (("가나다라",), False, "4자"),
    (("가" * 2048,), True, "정확히 2048자 (max_length와 같음)"),
    (("가" * 2049,), False, "2049자"),
    ((_NFD_2048,), True, f"NFD로 저장된 2048자 (정규화 전 len={len(_NFD_2048)})"),
]


def _length_ok_key(text: str, min_length: int = 5, max_length: int = 2048) -> bool:
    n = len(unicodedata.normalize("NFC", text))
    return min_length <= n <= max_length


def _length_ok_seed(text: str, min_length: int = 5, max_length: int = 2048) -> bool:
    return min_length < len(text) < max_length


@_exercise("01-2", "main-practice/01_data_preprocessing_and_validation.ipynb", "길이 검사의 경계값과 순서",
           solution=lambda: _length_ok_key,
           solution_code="""
               def length_ok(text: str, min_length: int = 5, max_length: int = 2048) -> bool:
                   n = len(unicodedata.normalize("NFC", text))   # 정규화한 뒤에 잰다
                   return min_length <= n <= max_length            # 경계값(5자, 2048자)도 허용""",
           explanation="경계값을 포함(<=)해야 정확히 5자·2048자인 정상 텍스트를 버리지 않고, NFC로 정규화한 뒤 재야 "
                       "NFD 한글이 두세 배로 부풀린 길이에 속지 않습니다.",
           hint="슬라이드의 min_length < len(text) < max_length에서 두 가지를 고칩니다: 비교 연산자, 그리고 len을 재는 시점.",
           wrong=lambda: _length_ok_seed, probe=("가나다라마",))
def _check_length_ok(answer: Any) -> Feedback:
    return Feedback(_call_cases(answer, LENGTH_CASES, "length_ok"))


@_exercise("01-3", "main-practice/01_data_preprocessing_and_validation.ipynb", "RAFT 변환 파라미터",
           solution={"num_distractors": 4, "oracle_fraction": 0.8, "add_cot": True},
           solution_code='my_raft = {"num_distractors": 4, "oracle_fraction": 0.8, "add_cot": True}',
           explanation="문서 5개 = 골든 1 + 방해 4 (k=4), P=0.8은 골든 문서를 '넣는' 예제의 비율, add_cot=True면 인용 CoT가 "
                       "학습 목표입니다. RAFT 논문의 값이며 DataSettings()의 기본값과 같습니다.",
           hint="k는 골든을 뺀 방해 문서 수, P는 골든 문서가 들어가는 예제의 비율입니다.",
           wrong={"num_distractors": 5, "oracle_fraction": 0.2, "add_cot": True})
def _check_raft_params(answer: Any) -> Feedback:
    if not isinstance(answer, dict):
        return Feedback(['{"num_distractors": ..., "oracle_fraction": ..., "add_cot": ...} 사전으로 답하세요'])
    problems = []
    k, p, cot = answer.get("num_distractors"), answer.get("oracle_fraction"), answer.get("add_cot")
    if k != 4:
        problems.append(f"num_distractors={k!r}: 예제마다 문서 5개 = 골든 1 + 방해 k개이므로 k=4"
                        + (" (k는 골든을 뺀 수)" if k == 5 else ""))
    if not isinstance(p, (int, float)) or isinstance(p, bool) or abs(p - 0.8) > 1e-9:
        problems.append(f"oracle_fraction={p!r}: P는 골든 문서를 '넣는' 예제의 비율입니다. 20%를 빼려면 P=0.8"
                        + (" (0.2는 1-P)" if p == 0.2 else ""))
    if cot is not True:
        problems.append(f"add_cot={cot!r}: 학습 목표를 인용 CoT로 하려면 True")
    return Feedback(problems)


# --- 02 quality --------------------------------------------------------------------------------------------
@dataclass
class PairCase:
    a: str
    b: str
    jaccard: float
    question: str


def _qa_shingles(rec: dict) -> set[str]:
    return char_ngrams(f"{rec['question']}\n{rec['answer']}")


def _jaccard(x: set, y: set) -> float:
    return len(x & y) / max(1, len(x | y))


KEEP_PAIR = ("fin-005-q1", "fin-005-q6")  # same question shape, different country and answer: both are good data


def near_duplicate_cases(records: list[dict]) -> tuple[list[PairCase], list[PairCase]]:
    """(pairs to catch, pairs to keep) by question+answer 3-gram Jaccard: every reworded copy in the dirty export
    with its closest original of the same document, and fin-005-q1/q6 (near-identical questions, different answers)."""
    originals: dict[str, list[dict]] = {}
    for r in records:
        if not str(r.get("id", "")).startswith("dirty-"):
            originals.setdefault(r.get("doc_id"), []).append(r)
    catch = []
    for r in records:
        if str(r.get("id", "")).startswith("dirty-") and originals.get(r.get("doc_id")):
            sh = _qa_shingles(r)
            best = max(originals[r["doc_id"]], key=lambda o: _jaccard(sh, _qa_shingles(o)))
            j = _jaccard(sh, _qa_shingles(best))
            if j < 1:  # identical after normalization: exact duplicates, caught by hashing
                catch.append(PairCase(r["id"], best["id"], round(j, 3), r["question"]))
    by_id = {r.get("id"): r for r in records}
    keep = []
    if all(i in by_id for i in KEEP_PAIR):
        a, b = (by_id[i] for i in KEEP_PAIR)
        keep.append(PairCase(a["id"], b["id"], round(_jaccard(_qa_shingles(a), _qa_shingles(b)), 3), a["question"]))
    return catch, keep


@_exercise("02-1", "main-practice/02_data_quality_check.ipynb", "근사 중복 임계값 정하기",
           solution=0.7, solution_code="my_threshold = 0.7   # 질문+답변 3-gram Jaccard",
           explanation="말만 바꾼 복사본(질문+답변 Jaccard 0.85 안팎 이상)은 잡고, 답이 다른 정상 쌍(fin-005, 약 0.62)은 "
                       "남기는 구간 안의 값입니다. 질문만 비교하면 이런 값이 없습니다 (정상 쌍의 질문 Jaccard가 0.82).",
           hint="아래 표의 Jaccard를 보고, '잡아야 할 쌍'의 가장 작은 값과 '남길 쌍'의 값 사이에서 고르세요.",
           wrong=0.9)
def _check_threshold(answer: Any, records: list[dict]) -> Feedback:
    value, problems = _number(answer, "my_threshold")
    if problems:
        return Feedback(problems)
    if not 0 < value <= 1:
        return Feedback([f"Jaccard 임계값은 0보다 크고 1 이하입니다 (지금 {value:g})"])
    catch, keep = near_duplicate_cases(records)
    notes = [f"  {'잡아야 함' if c in catch else '남겨야 함'}: {c.a} ~ {c.b}  Jaccard {c.jaccard:.3f} → "
             f"{'중복으로 제거' if c.jaccard >= value else '남김'}  ({c.question[:30]})" for c in catch + keep]
    problems = [f"{c.a}(말만 바꾼 복사본, Jaccard {c.jaccard:.3f})를 놓칩니다: 임계값이 너무 높습니다"
                for c in catch if c.jaccard < value]
    problems += [f"{c.a}/{c.b}(답이 다른 정상 데이터, Jaccard {c.jaccard:.3f})를 지웁니다: 임계값이 너무 낮습니다"
                 for c in keep if c.jaccard >= value]
    if not catch or not keep:
        problems.append("확인할 쌍이 없습니다: 원본 + 더러운 내보내기의 표준 레코드(canon)를 records=로 넘기세요")
    return Feedback(problems, notes)


def _shortest_ok_length(lengths, multiple: int = 64, max_over: float = 0.05) -> int:
    lengths = np.asarray(lengths)
    L = multiple
    while (lengths > L).mean() > max_over:
        L += multiple
    return L


@_exercise("02-2", "main-practice/02_data_quality_check.ipynb", "max_seq_length 정하기",
           solution=lambda lengths: _shortest_ok_length(lengths),
           solution_code="""
               L = 64
               while (lengths > L).mean() > 0.05:   # 잘리는 예제가 5%를 넘는 동안
                   L += 64
               my_max_seq_length = L""",
           explanation="64의 배수 가운데 잘리는 예제가 5% 이하인 가장 작은 길이입니다 (라이브러리의 권장값 p95 올림과 "
                       "거의 같음). 더 길게 잡으면 활성화·logits 메모리가 길이에 비례해 늘어납니다.",
           hint="truncation_table이나 (lengths > L).mean()으로 L마다 잘리는 비율을 재 보세요.",
           wrong=lambda lengths: int(sum(lengths) / len(lengths)))
def _check_max_seq_length(answer: Any, lengths) -> Feedback:
    value, problems = _number(answer, "my_max_seq_length")
    if problems:
        return Feedback(problems)
    lengths = np.asarray(lengths)
    L = int(value)
    over = float((lengths > L).mean())
    best = _shortest_ok_length(lengths)
    if L != value or L % 64:
        problems.append(f"{value:g}은 64의 배수가 아닙니다 (GPU 커널이 다루기 좋은 길이)")
    if over > 0.05:
        problems.append(f"{int((lengths > L).sum())}개 예제({over:.0%})가 잘립니다: 시퀀스 끝의 답변(학습 목표)이 "
                        f"잘려 나가므로 5% 이하로")
    elif L > best:
        problems.append(f"{best}로도 잘리는 예제가 5% 이하입니다: 더 길면 메모리만 더 씁니다")
    return Feedback(problems, [f"max_seq_length={L}: 잘리는 예제 {int((lengths > L).sum())}/{lengths.size} ({over:.1%})"])


PHONE_FOUND = ["문의는 010-1234-5678로 주세요", "담당자 연락처 01098765432", "예전 번호 016-123-4567도 받습니다"]
PHONE_NOT = ["고객센터 대표번호 1670-2580", "본사 유선 02-1234-5678", "접수번호 2025-0213-0001",
             "계좌 110-1234-567890", "주문번호 2010123456789"]


def _phone_number(text: str) -> str:
    return re.search(r"01\d[-\d]+", text).group(0)


@_exercise("02-3", "main-practice/02_data_quality_check.ipynb", "휴대전화 번호 정규식",
           solution=PII_PATTERNS["휴대전화"].pattern,
           solution_code=f'my_phone_pattern = r"{PII_PATTERNS["휴대전화"].pattern}"',
           explanation="01x로 시작하고 하이픈은 있어도 없어도 되며, 앞뒤가 숫자가 아닐 때만 잡습니다((?<!\\d), (?!\\d)): "
                       "그래서 대표번호·유선·접수번호·계좌·긴 숫자의 일부는 잡지 않습니다.",
           hint="01[016789]로 시작, 가운데 3~4자리, 끝 4자리. -? 는 '하이픈이 있거나 없거나', (?<!\\d)와 (?!\\d)는 "
                "'앞/뒤가 숫자가 아님'입니다.",
           wrong=r"\d{3}-\d{4}-\d{4}", template="...")
def _check_phone(answer: Any) -> Feedback:
    if not isinstance(answer, str):
        return Feedback(['정규식을 문자열로 넣으세요, 예: r"..."'])
    try:
        pattern = re.compile(answer)
    except re.error as err:
        return Feedback([f"정규식 문법 오류: {err}"])
    problems = []
    for text in PHONE_FOUND:
        m, want = pattern.search(text), _phone_number(text)
        if m is None:
            problems.append(f"'{text}'에서 휴대전화 번호를 못 찾습니다")
        elif m.group(0) != want:
            problems.append(f"'{text}'에서 '{m.group(0)}'만 잡습니다 (기대: '{want}')")
    for text in PHONE_NOT:
        m = pattern.search(text)
        if m:
            problems.append(f"'{text}'의 '{m.group(0)}'를 휴대전화로 잘못 잡습니다")
    return Feedback(problems)


# --- 03 fine-tuning ----------------------------------------------------------------------------------------
PAD = EOS = 2  # pad_token = eos_token, as the seed sets it
LABEL_CASES = [
    (([5, 9, 7, 11, 13, EOS], 3), [-100, -100, -100, 11, 13, EOS], "프롬프트 3토큰 + 답변 2토큰 + EOS"),
    (([4, EOS, 8, EOS], 2), [-100, -100, 8, EOS], "프롬프트 안에도 EOS id가 있는 경우"),
]


def _labels_key(input_ids: list[int], prompt_len: int) -> list[int]:
    return [-100] * prompt_len + list(input_ids[prompt_len:])


def _labels_lm_collator(input_ids: list[int], prompt_len: int) -> list[int]:
    return [-100 if t == PAD else t for t in input_ids]


@_exercise("03-1", "main-practice/03_fine_tuning_with_lora.ipynb", "라벨 만들기 (프롬프트 -100, EOS 유지)",
           solution=lambda: _labels_key,
           solution_code="""
               def make_labels(input_ids: list[int], prompt_len: int) -> list[int]:
                   return [-100] * prompt_len + list(input_ids[prompt_len:])   # 위치로 가린다 (id로 가리지 않음)""",
           explanation="프롬프트는 위치로 가리고(-100) 답변과 끝 토큰은 그대로 둡니다. pad id로 가리면 pad == eos라서 "
                       "답변 끝 EOS까지 지워져 모델이 멈추는 법을 못 배웁니다. 라이브러리의 tokenize_example이 이렇게 만듭니다.",
           hint="id가 무엇인지(pad? eos?)가 아니라 위치(앞 prompt_len개인지)로 판단하세요.",
           wrong=lambda: _labels_lm_collator, probe=([1, 2], 1))
def _check_labels(answer: Any) -> Feedback:
    problems = _call_cases(answer, LABEL_CASES, "make_labels")
    if problems and callable(answer):
        try:
            got = answer([5, 9, 7, 11, 13, EOS], 3)
            if isinstance(got, list) and len(got) == 6:
                if got[-1] == -100:
                    problems.append("답변 끝 EOS의 라벨을 지웠습니다(-100): 모델이 '여기서 멈춘다'를 배우지 못합니다")
                if got[:3] != [-100] * 3:
                    problems.append("프롬프트 위치가 -100이 아닙니다: 문맥·질문까지 학습 대상이 됩니다")
        except Exception:
            pass
    return Feedback(problems)


SEED_ARGS = dict(output_dir="../exaone-qlora-finetuned", num_train_epochs=3, per_device_train_batch_size=4,
                 per_device_eval_batch_size=4, gradient_accumulation_steps=4, learning_rate=2e-4,
                 lr_scheduler_type="cosine", warmup_steps=100, logging_steps=10, save_steps=500, eval_steps=500,
                 evaluation_strategy="steps", save_total_limit=2, fp16=False, bf16=True, optim="paged_adamw_8bit",
                 report_to="tensorboard")


def _args_key() -> dict:
    from ..runtime.device import choose_device  # torch: see the note at the imports
    from ..train.trainer import precision_flags  # transformers: see the note at the imports

    args = {k: v for k, v in SEED_ARGS.items() if k != "evaluation_strategy"}
    return {**args, "eval_strategy": "steps", **precision_flags(choose_device())}


@_exercise("03-2", "main-practice/03_fine_tuning_with_lora.ipynb", "슬라이드의 TrainingArguments 고치기",
           solution=_args_key,
           solution_code="""
               my_args = dict(SEED_ARGS)                      # 슬라이드 그대로에서
               my_args["eval_strategy"] = my_args.pop("evaluation_strategy")   # transformers 5의 이름
               my_args.update(precision_flags(dev))           # 이 장치의 bf16/fp16 (T4는 fp16, CPU는 둘 다 False)""",
           explanation="transformers 5는 evaluation_strategy를 지웠고(eval_strategy), bf16=True 고정은 T4에서 실패하고 "
                       "CPU에서는 에뮬레이션으로 느립니다. 장치에 맞는 값은 precision_flags(choose_device())가 줍니다.",
           hint="TrainingArguments(**my_args)를 직접 실행해 보고 오류 메시지를 읽어 보세요. dev.line()이 장치와 dtype을 알려 줍니다.",
           wrong={**SEED_ARGS, "warmup_steps": 0.1}, template=SEED_ARGS)  # fixed something, not the two breaks
def _check_training_args(answer: Any) -> Feedback:
    from transformers import TrainingArguments

    from ..runtime.device import choose_device  # torch: see the note at the imports
    from ..train.trainer import precision_flags  # transformers: see the note at the imports

    if not isinstance(answer, dict):
        return Feedback(["TrainingArguments에 넘길 인자를 dict로 답하세요"])
    problems = []
    if "evaluation_strategy" in answer:
        problems.append("evaluation_strategy는 transformers 5에서 삭제되었습니다: eval_strategy로 바꾸세요")
    dev = choose_device()
    want = precision_flags(dev)
    for k, v in want.items():
        if bool(answer.get(k, False)) != v:
            problems.append(f"{k}={answer.get(k, False)}: 이 장치에서는 {k}={v} ({dev.line()})")
    if not problems:
        try:
            TrainingArguments(**{**answer, "report_to": "none", "use_cpu": dev.device != "cuda"})
        except (TypeError, ValueError) as err:
            problems.append(f"TrainingArguments가 거부했습니다: {err}")
    return Feedback(problems)


@_exercise("03-3", "main-practice/03_fine_tuning_with_lora.ipynb", "웜업을 전체의 10%로",
           solution=0.1, solution_code="my_warmup_steps = 0.1   # 1보다 작은 실수 = 전체 스텝 대비 비율",
           explanation="transformers 5에서는 warmup_ratio가 없어지고 warmup_steps에 1보다 작은 실수를 주면 비율로 "
                       "해석합니다. 데이터 크기가 바뀌어도 웜업이 항상 10%입니다 (정수로 계산해 넣어도 통과).",
           hint="warmup_steps는 정수면 스텝 수, 0~1 사이 실수면 비율입니다.",
           wrong=100)
def _check_warmup(answer: Any, total_steps: int) -> Feedback:
    value, problems = _number(answer, "my_warmup_steps")
    if problems:
        return Feedback(problems)
    target = 0.1 * total_steps
    if 0 < value < 1:
        if abs(value - 0.1) > 1e-9:
            problems.append(f"비율 {value:g}는 전체의 {value:.0%}입니다 (10%는 0.1)")
    elif abs(value - target) > 1:
        problems.append(f"정수 {value:g}는 스텝 수로 해석되어 전체 {total_steps} 스텝의 {value / total_steps:.0%}입니다 "
                        f"(10%는 약 {round(target)} 스텝, 또는 비율 0.1)")
    return Feedback(problems)


# --- 04 evaluation -----------------------------------------------------------------------------------------
@_exercise("04-1", "main-practice/04_evaluation_and_comparison.ipynb", "brevity penalty 계산",
           solution=math.exp(1 - 6 / 3), solution_code="my_bp = math.exp(1 - 6 / 3)   # exp(1 - r/c), r=6 (참조), c=3 (생성)",
           explanation="생성(c=3)이 참조(r=6)보다 짧으므로 BP = exp(1 − r/c) = exp(−1) ≈ 0.368. 위 sacrebleu의 bleu_bp와 같습니다.",
           hint="BLEU 공식의 BP 정의: c > r이면 1, 아니면 exp(1 − r/c).",
           wrong=0.5)
def _check_bp(answer: Any) -> Feedback:
    value, problems = _number(answer, "my_bp")
    if problems:
        return Feedback(problems)
    want = math.exp(1 - 6 / 3)
    if abs(value - want) <= 0.005:
        return Feedback()
    if abs(value - 0.5) < 1e-9:
        return Feedback(["0.5는 길이 비율 c/r입니다: BP는 exp(1 − r/c)"])
    return Feedback([f"{value:g}가 아닙니다: BP = exp(1 − r/c), r=6(참조 길이), c=3(생성 길이)"])


def _lower_for_wrong_number(per_example) -> set[str]:
    rows = per_example.to_dict("records") if hasattr(per_example, "to_dict") else list(per_example)
    right, wrong = rows[0], rows[1]
    return {k for k, v in right.items() if isinstance(v, (int, float)) and isinstance(wrong.get(k), (int, float))
            and wrong[k] < v}


@_exercise("04-2", "main-practice/04_evaluation_and_comparison.ipynb", "틀린 숫자를 잡아낸 지표 찾기",
           solution=lambda per_example: _lower_for_wrong_number(per_example),
           solution_code="""
               right, wrong = m["per_example"][0], m["per_example"][1]   # 1번: 표현만 다른 정답, 2번: 숫자가 틀린 답
               my_metrics = {k for k in right if wrong[k] < right[k]}""",
           explanation="겹침 지표(ROUGE, BLEU, 문자 F1)는 한 토큰만 다른 틀린 답을 오히려 더 높게 매깁니다. 코사인이 조금 "
                       "낮게 매기더라도 두 값 모두 '유사' 구간이라 틀렸다고 알려 주지 않습니다: 숫자·명칭이 맞았는지는 샘플 "
                       "검토로 봅니다 (토론 질문 2).",
           hint="위 표의 두 행(1번 정답, 2번 틀린 숫자)을 열마다 비교하세요. 답은 빈 집합 set()일 수도 있습니다.",
           wrong=lambda per_example: {"rouge1", "rougeL", "bleu"})
def _check_caught(answer: Any, per_example) -> Feedback:
    if not isinstance(answer, (set, list, tuple)) or not all(isinstance(x, str) for x in answer):
        return Feedback(['지표 이름의 집합으로 답하세요, 예: {"rougeL", "bleu"} (없으면 set())'])
    want = _lower_for_wrong_number(per_example)
    rows = per_example.to_dict("records") if hasattr(per_example, "to_dict") else list(per_example)
    right, wrong = rows[0], rows[1]
    problems = []
    for k in sorted(set(answer) - want):
        if k not in right:
            problems.append(f"'{k}'는 표에 없는 지표입니다 (열: {', '.join(right)})")
        else:
            problems.append(f"{k}: 틀린 답 {wrong[k]:.3f} ≥ 정답 {right[k]:.3f}, 틀린 답을 낮게 매기지 않았습니다")
    for k in sorted(want - set(answer)):
        problems.append(f"{k}도 틀린 답({wrong[k]:.3f})을 정답({right[k]:.3f})보다 낮게 매겼습니다")
    return Feedback(problems)


METRIC_TASKS = {"뉴스 기사 요약": ("ROUGE", "요약은 참조의 내용을 얼마나 담았는지(재현율)가 중요합니다"),
                "영한 번역": ("BLEU", "번역은 표현의 정밀도(n-gram precision)를 보는 BLEU와 사람 평가가 표준입니다"),
                "사내 규정 QA (금액·날짜가 정확해야 함)": ("EM/F1", "숫자·명칭이 맞았는지는 EM/F1 + 샘플 검토로 봅니다: "
                                                        "겹침·코사인은 숫자가 틀려도 높을 수 있습니다")}
METRIC_CHOICES = ("ROUGE", "BLEU", "EM/F1", "cosine")


@_exercise("04-3", "main-practice/04_evaluation_and_comparison.ipynb", "작업에 맞는 지표 고르기",
           solution={task: want for task, (want, _) in METRIC_TASKS.items()},
           solution_code="""
               my_choice = {"뉴스 기사 요약": "ROUGE", "영한 번역": "BLEU",
                            "사내 규정 QA (금액·날짜가 정확해야 함)": "EM/F1"}""",
           explanation="요약은 재현율(ROUGE), 번역은 정밀도(BLEU), 사실형 QA는 정확히 맞았는지(EM/F1 + 샘플 검토). "
                       "어느 작업이든 지표는 참고자료이고 사람 평가를 함께 합니다.",
           hint="슬라이드의 토론 질문 3과 그 힌트, 그리고 위의 5,000원 예를 떠올려 보세요.",
           wrong={task: "cosine" for task in METRIC_TASKS})
def _check_metric_choice(answer: Any) -> Feedback:
    return _choices(answer, METRIC_TASKS, METRIC_CHOICES, "{작업: 지표} 사전으로 답하세요",
                    lambda task, got, want, why: f"{task}: {got}보다 {want}가 맞습니다. {why}")


# --- 05 custom data ----------------------------------------------------------------------------------------
TICKETS = [
    {"티켓번호": "T-1001", "접수채널": "전화", "고객문의": "주차는 몇 시간까지 무료인가요?",
     "관련규정": "새봄연합의원 방문 환자는 진료 당일 2시간까지 무료로 주차할 수 있습니다. 2시간 이후에는 30분마다 1,000원이 부과됩니다.",
     "상담원답변": "진료 당일 2시간까지 무료이고, 그 뒤에는 30분마다 1,000원입니다.", "처리상태": "완료"},
    {"티켓번호": "T-1002", "접수채널": "앱", "고객문의": "진료비 영수증을 다시 받을 수 있나요?",
     "관련규정": "진료비 영수증은 1층 원무과나 새봄케어 앱의 [내 진료] > [영수증]에서 언제든 다시 발급받을 수 있습니다.",
     "상담원답변": "1층 원무과나 새봄케어 앱의 [내 진료] > [영수증]에서 다시 발급받을 수 있습니다.", "처리상태": "완료"},
    {"티켓번호": "T-1003", "접수채널": "방문", "고객문의": "토요일에도 진료하나요?",
     "관련규정": "새봄연합의원은 평일 오전 9시부터 오후 6시까지, 토요일은 오전 9시부터 오후 1시까지 진료합니다. 일요일과 공휴일은 휴진입니다.",
     "상담원답변": "네, 토요일은 오전 9시부터 오후 1시까지 진료합니다.", "처리상태": "보류"},
]
TICKET_MAPPING = {"question": "고객문의", "context": "관련규정", "answer": "상담원답변"}


def sample_tickets():
    """A consultation-log export of another system (its own column names), for exercise 05-1."""
    return pd.DataFrame(TICKETS)


@_exercise("05-1", "main-practice/05_custom_qlora.ipynb", "내 데이터의 열 매핑",
           solution={**TICKET_MAPPING, "id": "티켓번호"},
           solution_code='my_mapping = {"question": "고객문의", "context": "관련규정", "answer": "상담원답변", "id": "티켓번호"}',
           explanation="질문은 고객이 쓴 문의, 문맥은 답의 근거 문서(규정), 답은 상담원의 답변입니다. 이 매핑 하나로 "
                       "prepare_custom이 검증 → 정규화 → 분할 → RAFT 변환을 그대로 합니다.",
           hint="각 열의 내용을 보고: 묻는 글, 답의 근거가 된 긴 문서, 답하는 글은 각각 어느 열인가요?",
           wrong={"question": "상담원답변", "context": "관련규정", "answer": "고객문의"})
def _check_mapping(answer: Any) -> Feedback:
    if not isinstance(answer, dict):
        return Feedback(['{"question": 열 이름, "context": ..., "answer": ...} 사전으로 답하세요'])
    columns = list(TICKETS[0])
    problems = [f"'{k}'가 없습니다: question, context, answer는 꼭 매핑해야 합니다" for k in TICKET_MAPPING if k not in answer]
    problems += [f"{k} → '{v}': 이 데이터에 없는 열입니다 (열: {', '.join(columns)})"
                 for k, v in answer.items() if v not in columns]
    if problems:
        return Feedback(problems)
    raw = [RawRecord(row, "tickets", f"row {i + 1}") for i, row in enumerate(TICKETS)]
    report = validate(raw, mapping=answer)
    notes = [f"검증 결과: 읽음 {report.read} = 보존 {len(report.kept)} + 거부 {len(report.rejected)}"]
    notes += [f"  거부: {r.message}" for r in report.rejected[:3]]
    if answer.get("question") == "상담원답변" and answer.get("answer") == "고객문의":
        problems.append("질문과 답변이 바뀌었습니다: 검증은 통과하지만(형식은 맞음) 모델이 답을 보고 질문을 쓰게 배웁니다")
    else:
        for key, want in TICKET_MAPPING.items():
            if answer[key] != want:
                problems.append(f"{key} → '{answer[key]}': {key}에는 '{want}' 열이 맞습니다")
    if answer.get("id") not in (None, "티켓번호"):
        problems.append(f"id → '{answer['id']}': 레코드마다 다른 값인 '티켓번호'가 id입니다")
    return Feedback(problems, notes)


@_exercise("05-2", "main-practice/05_custom_qlora.ipynb", "early stopping이 동작하는 평가·저장 주기",
           solution=lambda max_steps: {"eval_steps": max(1, max_steps // 8), "save_steps": max(1, max_steps // 8)},
           solution_code="""
               my_schedule = {"eval_steps": max_steps // 8, "save_steps": max_steps // 8}   # 평가 8번, 저장은 평가마다""",
           explanation="early stopping은 평가 때마다 검증 loss를 보고, 끝나면 가장 좋았던 체크포인트를 다시 불러옵니다. 그래서 "
                       "평가가 여러 번 있어야 하고, 저장 주기가 평가 주기의 배수여야 그 체크포인트가 남아 있습니다.",
           hint="max_steps 안에 평가가 몇 번 들어가나요? save_steps % eval_steps == 0 이어야 합니다.",
           wrong=lambda max_steps: {"eval_steps": 500, "save_steps": 500})
def _check_es_schedule(answer: Any, max_steps: int) -> Feedback:
    from transformers import TrainingArguments

    if not isinstance(answer, dict) or not all(isinstance(answer.get(k), int) and answer.get(k) > 0
                                               for k in ("eval_steps", "save_steps")):
        return Feedback(['{"eval_steps": 양의 정수, "save_steps": 양의 정수} 로 답하세요'])
    ev, sv = answer["eval_steps"], answer["save_steps"]
    problems = []
    if max_steps // ev < 3:
        problems.append(f"max_steps={max_steps} 안에 평가가 {max_steps // ev}번뿐입니다: 개선이 멈췄는지 판단하려면 "
                        "최소 3번은 평가해야 합니다")
    try:
        TrainingArguments(output_dir="unused", eval_strategy="steps", eval_steps=ev, save_steps=sv,
                          load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
                          report_to="none", use_cpu=True)
    except ValueError as err:
        problems.append(f"save_steps({sv})가 eval_steps({ev})의 배수가 아니라 TrainingArguments가 거부합니다: {err}")
    return Feedback(problems)


EPOCH_KEYS = ("num_train_epochs", "train.num_train_epochs", "epochs")


@_exercise("05-3", "main-practice/05_custom_qlora.ipynb", "다음 실험 하나 정하기",
           solution={"train.num_train_epochs": 2},
           solution_code='my_next_change = {"train.num_train_epochs": 2}   # 3 에폭에서 검증 loss가 오르기 시작했으므로',
           explanation="관찰(3 에폭에서 검증 loss 증가)은 과적합의 시작입니다. 한 번에 하나만: epoch를 2로 줄이거나, early "
                       "stopping을 켜거나, lora_dropout을 올리는 것 중 하나만 바꿔야 무엇이 효과였는지 압니다.",
           hint="한 번에 하나씩. 트러블슈팅 표의 'Validation loss만 증가' 행을 보세요.",
           wrong={"train.num_train_epochs": 2, "train.learning_rate": 1e-4})
def _check_next_change(answer: Any) -> Feedback:
    if not isinstance(answer, dict) or not answer:
        return Feedback(['{"설정 이름": 값} 사전으로 답하세요, 예: {"train.num_train_epochs": 2}'])
    if len(answer) != 1:
        return Feedback([f"{len(answer)}개를 바꿨습니다 ({', '.join(answer)}): 한 번에 하나씩 바꿔야 어떤 것이 효과를 냈는지 압니다"])
    (key, value), = answer.items()
    name = key.split(".")[-1]
    ok_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if name in ("num_train_epochs", "epochs"):
        if not ok_number or not 0 < value < 3:
            return Feedback([f"epoch {value!r}: 3 에폭에서 검증 loss가 오르기 시작했으니 3보다 적게 (예: 2)"])
    elif name == "early_stopping_patience":
        if not ok_number or value < 1:
            return Feedback(["early_stopping_patience는 1 이상이어야 early stopping이 켜집니다"])
    elif name == "lora_dropout":
        if not ok_number or not 0.05 < value <= 0.3:
            return Feedback(["lora_dropout은 지금(0.05)보다 크게, 예: 0.1"])
    else:
        return Feedback([f"{key}: 관찰은 과적합(3 에폭에서 검증 loss 증가)입니다. epoch, early stopping, lora_dropout 중 하나를 바꾸세요"])
    return Feedback()


# --- A1 appendix: GPU fast path and several GPUs -----------------------------------------------------------
@_exercise("A1-1", "main-practice/A1_gpu_fast_path_and_multi_gpu.ipynb", "GPU 2장에서 유효 배치 유지",
           solution=2, solution_code="my_grad_accum = 2   # 4 (GPU당 배치) x 2 (누적) x 2 (GPU) = 16",
           explanation="유효 배치 = GPU당 배치 × 누적 × GPU 수. GPU를 2장으로 늘리면 누적을 절반으로 줄여야 슬라이드의 16이 "
                       "유지되고, 학습률·스텝 수를 다시 맞출 필요가 없습니다.",
           hint="effective_batch(4, 누적, 2)가 16이 되는 누적을 찾으세요.",
           wrong=4)
def _check_grad_accum(answer: Any) -> Feedback:
    from ..runtime.distributed import effective_batch  # torch: see the note at the imports

    value, problems = _number(answer, "my_grad_accum")
    if problems:
        return Feedback(problems)
    n, line = effective_batch(4, int(value), 2)
    if int(value) != value or n != 16:
        return Feedback([f"{line}: 슬라이드의 16이 아닙니다"])
    return Feedback([], [line])


STRATEGY_CASES = {"EXAONE-7.8B 4비트 (약 5 GiB), 24 GB GPU 2장": ("DDP", "4비트 모델이 GPU 하나에 들어가면 GPU마다 한 벌씩 두고 "
                                                                     "그래디언트만 평균하는 DDP가 빠릅니다 (H200 2장에서 1.96배)"),
                  "70B 모델 4비트 (약 35 GB), 24 GB GPU 4장": ("FSDP", "4비트로도 GPU 하나(24 GB)에 안 들어가면 가중치를 "
                                                                "GPU들이 나눠 갖는 FSDP-QLoRA가 필요합니다")}


@_exercise("A1-2", "main-practice/A1_gpu_fast_path_and_multi_gpu.ipynb", "DDP와 FSDP 고르기",
           solution={case: want for case, (want, _) in STRATEGY_CASES.items()},
           solution_code="""
               my_strategy = {"EXAONE-7.8B 4비트 (약 5 GiB), 24 GB GPU 2장": "DDP",
                              "70B 모델 4비트 (약 35 GB), 24 GB GPU 4장": "FSDP"}""",
           explanation="기준은 '4비트 모델이 GPU 하나에 들어가는가'입니다. 들어가면 DDP(통신이 적어 빠름), 안 들어가면 FSDP.",
           hint="위 표의 GPU당 메모리와 측정값(DDP 1.96배, FSDP 1.29배)을 보세요.",
           wrong={case: "FSDP" for case in STRATEGY_CASES})
def _check_strategy(answer: Any) -> Feedback:
    return _choices(answer, STRATEGY_CASES, ("DDP", "FSDP"), "{상황: 'DDP' 또는 'FSDP'} 사전으로 답하세요",
                    lambda case, got, want, why: f"{case}: {want}입니다. {why}")


# --- 06 appendix: the RAFT ablation --------------------------------------------------------------------------
@_exercise("06-1", "main-practice/06_raft_ablation.ipynb", "실험 한 번의 비용",
           solution=9, solution_code="my_runs = 9   # 형식 3개 x 시드 3개 (원본 모델은 학습하지 않고 평가만)",
           explanation="학습은 형식마다, 시드마다 한 번씩입니다: 3 × 3 = 9. 원본 모델은 학습하지 않고 한 번 평가만 합니다. "
                       "시드를 하나 늘리면 학습이 형식 수만큼(3번) 늘어나므로, GPU 시간은 시드 수에 비례합니다.",
           hint="(a)(b)(c) 세 형식이 시드 0, 1, 2마다 각각 새 어댑터를 학습합니다. 원본 모델도 학습하나요?",
           wrong=3)
def _check_ablation_runs(answer: Any) -> Feedback:
    value, problems = _number(answer, "my_runs")
    if problems:
        return Feedback(problems)
    if value == 3:
        return Feedback(["3은 형식 수입니다: 시드마다 세 형식을 다시 학습합니다 (시드 3개)"])
    if value == 12:
        return Feedback(["12는 원본 모델까지 센 값입니다: 원본 모델은 학습하지 않고 평가만 합니다"])
    if value != 9:
        return Feedback([f"{value}: 형식 수 × 시드 수를 세어 보세요"])
    return Feedback()


# Per-seed ROUGE-L of (a) golden-only and (b) RAFT in three RAG settings (illustrative numbers, not a measurement)
SEED_SCORES = {"RAG top-1": ((0.30, 0.34, 0.32), (0.37, 0.31, 0.41)),
               "RAG top-3": ((0.22, 0.24, 0.23), (0.33, 0.35, 0.34)),
               "RAG top-5": ((0.25, 0.21, 0.23), (0.17, 0.18, 0.16))}
OUTCOMES = ("higher", "within", "lower")


def seed_outcome(a: tuple, b: tuple) -> tuple[str, float, float]:
    """(outcome, mean difference b - a, spread = sum of the sample standard deviations): the ablation's rule
    (ablation.Comparison.outcome; tests/test_exercises.py checks that the two agree)."""
    import statistics

    diff = statistics.fmean(b) - statistics.fmean(a)
    spread = statistics.stdev(a) + statistics.stdev(b)
    outcome = "within" if abs(diff) <= spread else ("higher" if diff > 0 else "lower")
    return outcome, diff, spread


@_exercise("06-2", "main-practice/06_raft_ablation.ipynb", "시드 편차로 판정하기",
           solution={setting: seed_outcome(a, b)[0] for setting, (a, b) in SEED_SCORES.items()},
           solution_code="""
               my_verdict = {"RAG top-1": "within", "RAG top-3": "higher", "RAG top-5": "lower"}""",
           explanation="top-1은 (b)의 평균이 더 높지만 차이(+0.043)가 두 표준편차의 합(0.070)보다 작아 이 세 시드로는 구별할 수 "
                       "없습니다. top-3은 차이(+0.110)가 편차(0.020)보다 훨씬 커서 (b)가 높고, top-5는 (b)가 낮습니다(-0.060, 편차 0.030).",
           hint="설정마다 평균 차이 (b) - (a)와 시드 간 표준편차의 합을 계산해 비교하세요 (statistics.fmean, statistics.stdev).",
           wrong={"RAG top-1": "higher", "RAG top-3": "higher", "RAG top-5": "lower"})
def _check_seed_verdict(answer: Any) -> Feedback:
    cases = {}
    for setting, (a, b) in SEED_SCORES.items():
        want, diff, spread = seed_outcome(a, b)
        why = "평균만 보면 (b)가 높지만 차이가 편차 안입니다" if want == "within" else "차이가 편차보다 큽니다"
        cases[setting] = (want, f"차이 {diff:+.3f}, 편차 합 {spread:.3f}: {why}")
    return _choices(answer, cases, OUTCOMES, '{"RAG top-1": "higher" | "within" | "lower", ...} 사전으로 답하세요',
                    lambda setting, got, want, why: f"{setting}: {want}입니다. {why}")
