"""models: the encoders that put photos and queries in one vector space.

Taught in notebooks 01 and 02. `encoders` holds the `Encoder` protocol and `load_encoder` (every encoder is
picked by name there); `conse` the offline default (EfficientNet-Lite + MiniLM) with its int8/fp32 ONNX towers
built by `onnx_towers` and an optional trained head (`projection.ProjectionHead`); `clip`, `clip_towers` and
`clip_archs` the CLIP family (open_clip and transformers, bf16/ONNX fast paths). A new encoder is one module
here plus one line in `encoders._BUILTIN` or `encoders._PREFIXES`. Beside the encoders: `ocr` reads the words in
photos (notebook 06), `faces` finds and embeds faces (notebook 07). Imports `config` and `data` only.
"""
