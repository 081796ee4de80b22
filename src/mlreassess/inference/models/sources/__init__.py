"""Model sources: one module per library a model can come from.

    timm         bare names (the default): resnet50, resnet50.a1_in1k, hf-hub:ORG/REPO
    torchvision  torchvision:NAME
    hf           hf:ORG/REPO or hf:/ABS/DIR (transformers image classifiers)
    open_clip    open_clip:ARCH/PRETRAINED, zero-shot
    in_memory    a torch module from the caller's code (mlreassess.assess / predict)

`base` says what a source module provides and holds what they share; `transforms` reads a
torchvision transform as a data config. Adding a source: one module here, and its prefix in
`mlreassess.inference.models.registry.SOURCES`.
"""
