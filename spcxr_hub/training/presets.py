"""Named model configurations, shared by pretraining, fine-tuning and reproduce (`--config NAME`)."""

CONFIG_PRESETS: dict[str, dict] = {
    "vit-s": {},  # SpcxrConfig's defaults: ViT-S/16, 224², one channel — the published backbone
    # A ViT small enough to pretrain and fine-tune in seconds on a CPU: tests, the demo, few-shot experiments.
    "tiny": dict(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, image_size=64,
        patch_size=16, classifier_pooling="mean", segmentation_feature_size=8,
    ),
}
