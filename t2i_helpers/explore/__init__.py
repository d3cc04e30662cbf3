"""explore: looking at a collection and at results, in a notebook.

Taught in notebooks 01, 05 and 07. `viz` shows photos, results, similarity heatmaps and faces boxed in a
photo; `widgets` is the ipywidgets search box; `questions` asks a collection for zero-shot labels, a 2-D map and
query arithmetic; `duplicates` finds exact and near duplicates and outliers through Milvus range search. Public
names: `show_images`, `show_results`, `show_faces` (viz); `search_box` (widgets); `stored_images`, `zero_shot`,
`embedding_map` (questions); `near_duplicates` (duplicates). Imports `engine` and the wings below it, and
`measure.queries`.
"""
