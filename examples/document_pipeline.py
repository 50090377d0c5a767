"""Document pipeline: a workflow of dependent jobs. ``split`` cuts a document into pages and
sends a flow: one ``ocr`` job per page, and an ``assemble`` job that waits until they have
all completed and joins their outputs. A page that fails for good cancels the assembly,
which records why; the other pages are not touched.

From the root of a pgqueue checkout or unpacked sdist (examples/ is not in the wheel):

    python examples/document_pipeline.py
    pgqueue worker examples.document_pipeline:pq    # how an application runs these handlers
"""

import asyncio
from typing import Any

from pgqueue import AsyncPgQueue, Flow, Job, JobFailedError

pq = AsyncPgQueue()  # $PGQUEUE_DATABASE_URL, else the embedded PostgreSQL


@pq.job("split")
async def split(data: dict[str, str]) -> dict[str, int]:
    """Cut a document into pages (at form feeds); send their OCR and the assembly."""
    pages = data["text"].split("\f")
    flow = Flow()
    ocr = [flow.add("ocr", {"page": n, "text": text}) for n, text in enumerate(pages, 1)]
    assembly = flow.add("assemble", {"doc": data["doc"]}, depends_on=ocr)
    handles = await pq.send_flow(flow)  # all or none
    return {"pages": len(pages), "assemble": handles[assembly.index] or 0}


@pq.job("ocr", retry_limit=1, retry_delay=0)
async def ocr(data: dict[str, Any]) -> str:
    """Read one page (a page with a '#' on it is unreadable)."""
    if "#" in data["text"]:
        raise ValueError(f"page {data['page']} is unreadable")
    return str(data["text"]).strip().upper()


@pq.job("assemble")
async def assemble(data: dict[str, str], job: Job) -> str:
    """Join the pages' text, in page order: the outputs of the jobs it depends on."""
    pages = await pq.parents(job)
    return f"{data['doc']}: " + " / ".join(page.output for page in pages)


async def process(doc: str, text: str) -> None:
    split_job = await pq.send("split", {"doc": doc, "text": text})
    assert split_job is not None
    sent = await split_job.result(timeout=60)
    print(f"{doc}: {sent['pages']} pages")
    try:
        print(await pq.result(sent["assemble"], timeout=60))
    except JobFailedError as exc:
        print(f"{doc}: assembly {getattr(exc.state, 'value', exc.state)}: {exc.error['message']}")
    assembly = await pq.get_job_by_id(sent["assemble"])
    assert assembly is not None and assembly.depends_on is not None
    for page in await pq.parents(assembly):
        print(f"  page job {page.id}: {page.state.value}")


async def main() -> None:
    async with pq:
        worker = asyncio.create_task(pq.work())
        await process("report", "first page\fsecond page\fthird page")
        await process("scan", "fine\fsmudged #\flegible")
        await pq.stop()
        await worker


if __name__ == "__main__":
    asyncio.run(main())
