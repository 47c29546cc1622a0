"""Media between workflow steps (issue 8, part 7): a StepOutput's images, audio and files
survive the hop between worker processes, content beyond INLINE_MAX_BYTES stored by
reference (kern_workflow_media) rather than inlined in the step rows every replay reads.

Real Postgres (a schema of the module's), real Redis (database REDIS_DB), two real
`celery worker` processes (one task each at a time) loading this module through KERN_APP:

- a text -> audio -> transcript chain with a 1 MiB audio payload (agno's own Audio): the
  transcript step, on the other worker, gets equal bytes (its media and the earlier
  step's output), the step and run rows stay small, agno's record of the run holds the
  content inline (agno's shape), and the media rows go with the run (cascade);
- a small image stays inline;
- the same workflow in-process gives the same run;
- the bound itself, text files and bytes content, on Postgres and SQLite, without workers.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from agno.media import Audio, Image
from sqlalchemy import delete, func, select, text

from kern_tasks.db import Database
from kern_tasks.db.run_tables import runs as agno_runs
from kern_tasks.workflow import Step, StepInput, StepOutput, Workflow, progress
from kern_tasks.workflow.media import INLINE_MAX_BYTES, content_bytes, inlined, media, offloaded
from kern_tasks.workflow.progress import Outcome
from kern_tasks.workflow.submit import submit, wait
from tests.workflow_cluster import WorkflowCluster, running

pytestmark = pytest.mark.slow

REDIS_DB = 6
APP = "tests.test_workflow_media:WORKFLOWS"
CALLS_ENV = "MEDIA_TEST_CALLS"  # a file each step appends "<step> <pid>" to
AUDIO_BYTES = 1024 * 1024
SMALL_ROW_BYTES = 16 * 1024  # a step row, or the run's, holding references only


def speech(text_in: str) -> bytes:
    """1 MiB of 'audio' that only this text gives (so equal bytes prove the right ones came)."""
    block = hashlib.sha256(text_in.encode()).digest()
    return (block * (AUDIO_BYTES // len(block) + 1))[:AUDIO_BYTES]


SMALL_IMAGE = bytes(range(256)) * 4  # 1 KiB, under the bound


def digest(data: bytes | None) -> str:
    return "none" if data is None else f"{len(data)}:{hashlib.sha256(data).hexdigest()[:16]}"


def _called(step: str) -> None:
    path = os.environ.get(CALLS_ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{step} {os.getpid()}\n")


def speak(step_input: StepInput) -> StepOutput:
    _called("speak")
    return StepOutput(content="spoken", audio=[Audio(content=speech(step_input.input), mime_type="audio/wav",
                                                     format="wav")],
                      images=[Image(content=SMALL_IMAGE, mime_type="image/png", format="png")])


def transcribe(step_input: StepInput) -> StepOutput:
    _called("transcribe")
    earlier = step_input.get_step_output("speak")
    seen = [digest(content_bytes(step_input.audio[0])), digest(content_bytes(earlier.audio[0])),
            digest(content_bytes(step_input.images[0]))]
    return StepOutput(content=" ".join(seen))


media_chain = Workflow(id="media-chain", name="media_chain", steps=[
    Step(name="speak", executor=speak), Step(name="transcribe", executor=transcribe),
])
WORKFLOWS = SimpleNamespace(workflows=[media_chain])


def expected_transcript(text_in: str) -> str:
    return f"{digest(speech(text_in))} {digest(speech(text_in))} {digest(SMALL_IMAGE)}"


class Cluster(WorkflowCluster):
    """The module's two workers serving WORKFLOWS; `pids` reads which process ran each step."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, REDIS_DB, APP, calls_env=CALLS_ENV)

    def pids(self) -> list[tuple[str, int]]:
        lines = self.calls.read_text().split("\n") if self.calls.exists() else []
        return [(step, int(pid)) for step, pid in (line.split() for line in lines if line)]


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(request, Cluster(tmp_path_factory.mktemp("workflow-media"))) as made:
        yield made


def run_crossing_workers(cluster: Cluster) -> tuple[str, str, dict[str, Any]]:
    """Runs until one has its two steps on two worker processes (the broker hands the next
    step to whichever worker waits, usually the other); (input, run_id, run dict)."""
    for attempt in range(6):
        before = len(cluster.pids())
        text_in = f"hello from run {attempt}"
        run_id = submit(cluster.app, media_chain, text_in, db=cluster.db, session_id=f"s-{uuid.uuid4().hex[:8]}")
        ran = wait(cluster.db, run_id, timeout=60).to_dict()
        assert ran["status"] == "COMPLETED", ran
        assert ran["step_results"][1]["content"] == expected_transcript(text_in)  # equal bytes, every run
        (_, first), (_, second) = cluster.pids()[before:]
        if first != second:
            return text_in, run_id, ran
    raise AssertionError(f"no run crossed workers in 6: {cluster.pids()}")


def test_a_large_audio_crosses_workers_by_reference_and_goes_with_its_run(cluster: Cluster) -> None:
    text_in, run_id, ran = run_crossing_workers(cluster)
    payload = speech(text_in)
    q = f'"{cluster.schema}"'
    with cluster.db.connect() as conn:
        step_rows = conn.execute(text(
            f"SELECT path, octet_length(output::text), output FROM {q}.kern_workflow_steps "
            "WHERE run_id = :r AND final ORDER BY path"), {"r": run_id}).all()
        run_row = conn.execute(text(f"SELECT octet_length(result::text), octet_length(request::text) "
                                    f"FROM {q}.kern_workflow_runs WHERE run_id = :r"), {"r": run_id}).one()
        stored = conn.execute(select(media.c.size, media.c.sha256, media.c.mime).where(media.c.run_id == run_id)).all()
        run_data = conn.execute(select(agno_runs.c.run_data).where(agno_runs.c.run_id == run_id)).scalar_one()
    # The step rows and the run's row hold a reference, not 1.4 MB of base64.
    assert [path for path, _, _ in step_rows] == ["0", "1"]
    assert all(size < SMALL_ROW_BYTES for _, size, _ in step_rows), [size for _, size, _ in step_rows]
    assert max(run_row) < SMALL_ROW_BYTES, run_row
    audio = step_rows[0][2]["audio"][0]
    assert "content" not in audio and audio["mime_type"] == "audio/wav"
    reference = audio["media_reference"]
    assert (reference["storage_backend"], reference["size"], reference["media_type"]) == (
        "kern_workflow_media", AUDIO_BYTES, "audio")
    assert stored == [(AUDIO_BYTES, hashlib.sha256(payload).hexdigest(), "audio/wav")]
    # The small image stays inline, agno's base64.
    image = step_rows[0][2]["images"][0]
    assert "media_reference" not in image and base64.b64decode(image["content"]) == SMALL_IMAGE
    # agno's record of the run reads as agno's own: the content inline, as Audio.to_dict() gives it.
    kept = run_data["step_results"][0]["audio"][0]
    assert "media_reference" not in kept and base64.b64decode(kept["content"]) == payload
    assert Audio(**{**kept, "content": base64.b64decode(kept["content"])}).content == payload
    # wait() answers with the content inline, as an in-process run does (so do the HTTP answers).
    answered = ran["step_results"][0]["audio"][0]
    assert "media_reference" not in answered and base64.b64decode(answered["content"]) == payload
    # The media rows go with the run.
    with cluster.db.begin() as conn:
        conn.execute(delete(progress.runs).where(progress.runs.c.run_id == run_id))
    with cluster.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(media).where(media.c.run_id == run_id)).scalar() == 0


def test_the_run_on_workers_equals_the_run_in_process(cluster: Cluster) -> None:
    text_in = "the same either way"
    local = media_chain.run(text_in, session_id="local").to_dict()
    run_id = submit(cluster.app, media_chain, text_in, db=cluster.db, session_id=f"s-{uuid.uuid4().hex[:8]}")
    remote = wait(cluster.db, run_id, timeout=60).to_dict()
    assert [(s["step_name"], s["content"], s["success"]) for s in remote["step_results"]] == [
        (s["step_name"], s["content"], s["success"]) for s in local["step_results"]]
    assert local["step_results"][1]["content"] == expected_transcript(text_in)
    # The bytes the run produced: equal, in-process and on workers (resolved by wait()).
    for kind in ("audio", "images"):
        assert [content_bytes(i) for i in remote["step_results"][0][kind]] == [
            content_bytes(i) for i in local["step_results"][0][kind]]


# --- the bound, without workers (Postgres and SQLite) ------------------------------------------


def _offload(db: Database, output: dict[str, Any]) -> dict[str, Any]:
    run_id = str(uuid.uuid4())
    with db.begin() as conn:
        progress.create_run(conn, run_id=run_id, workflow_id="w", session_id="s", user_id=None, request={},
                            session_state=None, now=1.0)
        stored = offloaded(conn, run_id, Outcome(output, None), now=1.0).output
    assert stored is not None
    return {"run_id": run_id, "stored": stored, "back": inlined(db, run_id, stored)}


def test_the_bound_text_files_and_bytes_content(db: Database) -> None:
    at_bound = base64.b64encode(b"a" * INLINE_MAX_BYTES).decode()
    beyond = base64.b64encode(b"b" * (INLINE_MAX_BYTES + 1)).decode()
    big_text = "x" * (INLINE_MAX_BYTES + 1)
    output = {"content": "c", "images": [{"id": "i1", "content": at_bound}, {"id": "i2", "content": beyond}],
              "files": [{"id": "f1", "mime_type": "text/plain", "content": big_text},
                        {"id": "f2", "content": b"raw bytes"}],
              "audio": [{"id": "a1", "url": "https://example.com/a.wav"}], "videos": None}
    made = _offload(db, output)
    stored, back = made["stored"], made["back"]
    assert stored["images"][0] == {"id": "i1", "content": at_bound}  # at the bound: inline
    assert "content" not in stored["images"][1]
    assert stored["images"][1]["media_reference"]["size"] == INLINE_MAX_BYTES + 1
    assert stored["files"][0]["media_reference"]["metadata"] == {"content_encoding": "text"}
    assert stored["files"][1]["content"] == base64.b64encode(b"raw bytes").decode()  # JSON now, agno's form
    assert stored["audio"] == output["audio"] and stored["videos"] is None
    assert back["images"] == output["images"] and back["files"][0] == output["files"][0]
    assert content_bytes(back["files"][1]) == b"raw bytes"
    # The same bytes again in the run reuse the row.
    with db.begin() as conn:
        again = offloaded(conn, made["run_id"], Outcome({"images": [{"id": "i3", "content": beyond}]}, None),
                          now=2.0).output
        rows = conn.execute(select(func.count()).select_from(media).where(media.c.run_id == made["run_id"])).scalar()
    assert again["images"][0]["media_reference"]["storage_key"] == stored["images"][1]["media_reference"]["storage_key"]
    assert rows == 2
