"""measure: how well and how fast a search does, on query sets with known answers.

Taught in notebooks 02, 03 and 05. `metrics` holds recall@k, MRR, nDCG and exact top-k (pure numpy); `queries`
the caption and category query sets; `evaluate` runs them against a collection (`t2i eval`); `compare` ranks
encoders; `finetune` trains and measures the projection head; `search_modes` compares vector, keyword and hybrid
search; `ann` studies ANN indexes on faiss and a Milvus server; `people` measures faces and their grouping into
people (notebook 07). Imports everything below it, up to `engine`.
"""
