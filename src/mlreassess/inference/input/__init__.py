"""Pixels: manifest rows -> preprocessed uint8 batches on the device (no model here).

  preprocess     resize-only / centre-crop uint8 transforms, device-side normalisation, AMP
  pipeline       DataLoader decode workers that live for a preprocessing group, batches to the device
  slots          the shared batch slots the workers write into (pinned on CUDA)
  caches         the sweep's PatchML patch caches (each source decoded once per sweep)
  device_input   --decode gpu: JPEG bytes from the workers, decoded and resized on the device
  device_resize  PIL-matching resize and timm's centre crop of uint8 tensors on the device
  device_canvas  PatchML canvases painted on the device from the patch cache
"""
