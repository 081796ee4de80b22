"""Datasets as manifests: ImageNet V1 (ReaL), ImageNetV2, PatchML (see `manifest` for the schema)."""
