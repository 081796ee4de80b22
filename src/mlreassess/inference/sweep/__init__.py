"""The sweep: every (model, dataset) unit, resumable, model-major.

  runner     entry points: `run` (the sweep) and `plan_only` (`infer --plan`)
  plan       which units are pending or stale, and their passes
  passes     units and passes sized by device memory (pure functions)
  estimate   `infer --plan`'s account and GPU-hours
  execute    a pass: its models loaded once, every dataset it needs streamed through them
  stream     one dataset through the models of a pass
  outputs    the run metadata of a predictions file, the summary
  writers    output paths, the predictions schema, completeness, failures.jsonl, retired copies
  distributed  torchrun ranks: claims of passes, sample sharding, gathering
  bench      forward-only vs end-to-end images/s (`bench infer`, `bench data`)
"""
