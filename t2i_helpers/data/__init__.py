"""data: the photos, read as the encoders need them, and the collections that ship with the course.

The bottom wing (notebook 01): `images` reads, hashes and decodes image files (EXIF orientation, HEIC, reduced
JPEG decoding, thumbnails) within the bounds of `bounds` (JPEG scans, PNG chunks, one decoding memory budget per
process), and `datasets` finds and loads the bundled Tux Paint photos, an image folder or a
captioned CSV. `imagenet_classes.tsv` is the class list the ConSE encoder reads. Public names: `read_image`,
`decode_image`, `content_id`, `Thumbnails`, `ImageError` (images); `load_bundled`, `load_source`, `scan_folder`,
`split_by_image`, `DatasetError` (datasets); `portraits`, `variants`, `group_photo`, `changed`, `phone_photo`,
`write_library`, `at_face_height` (portraits: real faces that ship in installed packages, for notebook 07, the
tests and benchmarks). It imports only `config`.
"""
