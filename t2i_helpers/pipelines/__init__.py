"""pipelines: the Towhee pipelines that index photos and answer queries.

Taught in notebooks 01, 04 and 05. `operators` registers the local Towhee operators (load, embed, insert,
search) and `run_pipeline`, the one place that unwraps Towhee's errors; `ingest` builds and runs the ingest
pipeline (incremental, resumable); `search` cleans a query and builds the search pipeline; `hybrid` adds keyword
(BM25) and hybrid search; `distributed` runs the ingest as a Ray Data job writing through `sink`; `ocr_pass` and
`face_pass` read text and faces in stored photos, `people` groups faces into persons (notebook 07). A new ingest
step is an operator in `operators` and one `.map` in `ingest.ingest_pipeline`. Imports `config`, `data`,
`models` and `store`.
"""
