"""Input formats of ImageNet val copies, one module each: `files`, `parquet` (Hugging Face shards),
`webdataset` (tar shards); `base` holds what they share. `datasets.samples` picks the one a
manifest names."""
