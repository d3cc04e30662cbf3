"""store: where the vectors live, a Milvus collection (milvus-lite file by default, a server by URI).

Taught in notebooks 01, 03 and 05. `image_store.ImageStore` opens, checks, inserts, searches and migrates a
collection; `collection` is its schema and the encoder/schema record kept beside it; `keywords` the BM25 keyword
field; `milvus_server` starts a real Milvus 2.3 server without Docker; `face_store` is the faces collection beside the
photos (notebook 07). Public names: `ImageStore`, `Hit`,
`StoreError`, `read_meta` (image_store); `EncoderMismatchError` (collection); `milvus_server` (milvus_server).
Imports `config` and `models` only.
"""
