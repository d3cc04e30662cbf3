"""store: where the vectors live, a Milvus collection (milvus-lite file by default, a server by URI).

Taught in notebooks 01, 03 and 05. `image_store.ImageStore` opens, checks, inserts, searches and migrates a
collection; `connection` opens a client of a milvus-lite file or a server; `collection` is its schema and the
encoder/schema record kept beside it; `keywords` the BM25 keyword field; `milvus_server` starts a real Milvus 2.3
server without Docker; `face_store` is the faces collection beside the photos (notebook 07). Public names:
`ImageStore`, `Hit`, `StoreError` (image_store); `read_meta` (connection); `EncoderMismatchError` (collection);
`milvus_server` (milvus_server). Imports `config` and `models` only.
"""

import warnings

# milvus-lite 2.5.1 imports pkg_resources when pymilvus starts it, which warns on every first open of a file:
# noise on every notebook page and CLI run that is not ours to fix (milvus-lite pins it; setuptools warns).
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning, module="milvus_lite")
